"""What the Triton client needs to know besides the model: where the server is (`TritonUrl`,
parsed from `triton://HOST:PORT/NAME[/VERSION]`) and how to talk to it (`TritonOptions`).
Neither imports tritonclient."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional

from ..errors import ModelError

SCHEME = "triton://"
SHM_MODES = ("auto", "system", "cuda", "none")
DEFAULT_GRPC_PORT = 8001
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_URL = re.compile(r"^triton://(?P<host>\[[^\]]+\]|[^:/\[\]]+)(?::(?P<port>\d{1,5}))?"
                  r"/(?P<name>[^/\s]+)(?:/(?P<version>\d+))?/?$")


def is_triton_url(model) -> bool:
    return isinstance(model, str) and model.lower().startswith(SCHEME)


@dataclass(frozen=True)
class TritonUrl:
    """triton://HOST[:PORT]/NAME[/VERSION] (gRPC port, 8001 by default)."""

    host: str
    port: int
    model: str
    version: str = ""  # "": the server's choice

    @classmethod
    def parse(cls, text: str) -> "TritonUrl":
        authority = text.strip()[len(SCHEME):].split("/", 1)[0]
        if is_triton_url(text.strip()) and "@" in authority:
            raise ModelError("bad Triton model URL: a user or password (USER:PASS@) is not "
                             "taken; Triton's gRPC endpoint has no login of its own")
        if "?" in text or "#" in text:
            raise ModelError(f"bad Triton model URL {re.split('[?#]', text)[0]!r}...: no ?query "
                             "or #fragment is taken, only triton://HOST[:PORT]/MODEL[/VERSION]")
        match = _URL.match(text.strip())
        if not match:
            raise ModelError(f"bad Triton model URL {text!r}: expected triton://HOST[:PORT]/MODEL"
                             "[/VERSION], e.g. triton://127.0.0.1:8001/dbnet")
        port = int(match["port"] or DEFAULT_GRPC_PORT)
        if not 0 < port < 65536:
            raise ModelError(f"bad Triton model URL {text!r}: port {port} is not 1..65535")
        return cls(match["host"], port, match["name"], match["version"] or "")

    @property
    def address(self) -> str:
        """host:port as gRPC wants it."""
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """The server runs on this machine (so it can map our shared memory)."""
        return self.host.lower() in _LOCAL_HOSTS

    def __str__(self) -> str:
        version = f"/{self.version}" if self.version else ""
        return f"{SCHEME}{self.address}/{self.model}{version}"


@dataclass(frozen=True)
class TritonOptions:
    """How the client runs requests.

    shm:       "system" (POSIX shared memory: the server must be on this machine), "cuda" (CUDA
               IPC: both sides on this machine's GPU), "none" (tensors travel in the gRPC
               messages) or "auto" (system for 127.0.0.1 / localhost, else none)
    inflight:  requests in flight at once (the pipeline submits batch k+1 while k is on the wire)
    timeout:   seconds allowed for each inference request
    connect_timeout: seconds allowed for each control call (health, metadata, registration)
    retries / delay / factor / max_delay: after a failed request, probe the server with back-off
               (delay, delay * factor, ... capped at max_delay) until it is ready again; give up
               after `retries` failed probes in a row, or after more than `retries` outages in a
               row (the server came back but requests failed again; the requests in flight
               when one outage starts count once) (None: never); the same policy waits for
               a server or model not ready yet when the client starts (engine.triton.startup)
    stop:      an Event that ends that wait at once when set (a run's stop signals set it)
    """

    shm: str = "auto"
    inflight: int = 2
    timeout: float = 60.0
    connect_timeout: float = 5.0
    retries: Optional[int] = 10
    delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0
    stop: Optional[threading.Event] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.shm not in SHM_MODES:
            raise ModelError(f"unknown Triton shared memory mode {self.shm!r}; choose one of "
                             f"{', '.join(SHM_MODES)}")
        if self.inflight < 1 or self.timeout <= 0 or self.connect_timeout <= 0:
            raise ModelError(f"Triton inflight must be >= 1 and timeouts > 0, got inflight "
                             f"{self.inflight}, timeout {self.timeout}, connect_timeout "
                             f"{self.connect_timeout}")
        if (self.retries is not None and self.retries < 0) or self.delay < 0:
            raise ModelError(f"Triton retries must be >= 0 (or None) and delay >= 0, got "
                             f"{self.retries} / {self.delay}")

    def shm_for(self, url: TritonUrl) -> str:
        """The shared memory mode for this server ("auto" resolved)."""
        if self.shm != "auto":
            return self.shm
        return "system" if url.is_local else "none"

    def delays(self) -> Iterator[float]:
        """The successive waits of one outage (like pipeline.sources.Reconnect): a delay of 0
        probes at once, then backs off from 0.1 s (0 doubled stayed 0, a tight loop)."""
        wait, attempt = self.delay, 0
        while self.retries is None or attempt < self.retries:
            yield wait
            wait, attempt = min(self.max_delay, (wait or 0.1) * self.factor), attempt + 1
