"""`--serve`: a live web view, Prometheus /metrics, /healthz and /api/status of a running
Pipeline, served from the same process.

    sink = ServeSink(pipe, port=8080)      # binds now (a busy port fails here)
    pipe.sinks.append(sink)                # the pipeline closes it at the end of the run

The sink only keeps a reference to each stream's newest result (see view.py); everything else
happens in the server's threads, on demand.
"""
from __future__ import annotations

import ipaddress
from typing import Optional, Sequence

from ..detections import Detections
from ..sinks import Sink
from ..sources import Frame
from .http import HttpServer, ServeApp
from .prometheus import registry_for
from .status import RunStatus
from .view import LiveFrames

__all__ = ["ServeSink", "LiveFrames", "RunStatus"]


class ServeSink(Sink):
    """The web view of `pipeline` on http://host:port/.

    token:           required from every request when set (Bearer header, ?token= or the
                     session cookie a valid ?token= sets)
    max_fps:         most JPEG encodings per second and stream (only while someone watches)
    max_connections: open connections at most (viewers, scrapes); more are closed at once, and
                     viewers beyond max_connections - 4 get 503 so that probes always get in
    """

    def __init__(self, pipeline, host: str = "127.0.0.1", port: int = 8080,
                 token: Optional[str] = None, max_fps: float = 10.0, max_connections: int = 32,
                 annotators: Optional[Sequence] = None):
        self.view = LiveFrames(max_fps=max_fps, annotators=annotators)
        self.status = RunStatus(pipeline, self.view)
        # a few connections stay free of viewers for /healthz, /metrics and the page
        app = ServeApp(self.status, registry_for(self.status), token,
                       max_streams=max(1, max_connections - 4), local_only=_loopback(host))
        self.server = HttpServer(app, host, port, max_connections)
        self.server.start()

    @property
    def url(self) -> str:
        return self.server.url

    def add_output(self, name: str, output) -> None:
        """Show `output.counters()` (a dict) in /api/status and /metrics as dbrt_<name>_*."""
        self.status.extras[name] = output

    def write(self, frame: Frame, detections: Detections) -> None:
        self.view.write(frame, detections)

    def close(self) -> None:
        self.view.close()
        self.server.close()


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
