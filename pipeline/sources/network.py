"""Network streams (RTSP, HTTP / HTTPS MPEG-TS, HLS, RTMP, UDP, SRT) through PyAV.

Live by default: the newest frame wins when the consumer is slow, and a dropped connection is
retried with back-off (see `Reconnect`). A plain file over HTTP (``.mp4``, ``.mkv``...) is not
live: every frame is delivered and its end is the end of the source.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlparse

from engine.errors import SourceError

from .base import without_credentials
from .live import LiveSource, Reconnect
from .video import first_video_stream, open_container, upright_bgr

SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
_FILE_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
def is_url(text: str) -> bool:
    return urlparse(text).scheme.lower() in SCHEMES


def looks_live(url: str) -> bool:
    path = urlparse(url).path.lower()
    return not (urlparse(url).scheme in ("http", "https") and path.endswith(_FILE_SUFFIXES))


class NetworkSource(LiveSource):
    """One network stream; `timeout` (seconds) bounds each read, and connecting takes up to
    `OPEN_TIMEOUT` or `timeout`, whichever is longer."""

    kind = "network"
    # FFmpeg reads about 5 s of a stream (its analyzeduration) to learn its format before the
    # open returns: at a few frames per second that is longer than a read's timeout, and a
    # too-short open timeout leaves FFmpeg's interrupt set, failing the first read after it
    OPEN_TIMEOUT = 30.0

    def __init__(self, url: str, reconnect: Optional[Reconnect] = Reconnect(), timeout: float = 5.0,
                 live: Optional[bool] = None, options: Optional[dict] = None):
        self.live = looks_live(url) if live is None else live
        super().__init__(url, reconnect if self.live else None)
        self.url = url
        self.timeout = timeout
        self.options = dict(options or {})
        if url.startswith("rtsp"):
            self.options.setdefault("rtsp_transport", "tcp")  # no UDP packet loss artefacts
        self._container = None
        self._frames = None
        self._fps: Optional[float] = None
        self._total: Optional[int] = None
        self._decoded = 0

    @property
    def fps(self) -> Optional[float]:
        return self._fps

    def _connect(self) -> None:
        container = open_container(self.url, self.options,
                                   timeout=(max(self.timeout, self.OPEN_TIMEOUT), self.timeout))
        stream = first_video_stream(container, self.url)
        self._fps = float(stream.average_rate) if stream.average_rate else self._fps
        self._container = container
        self._frames = container.decode(stream)
        self._total = stream.frames or None  # a file's index (0 for a live stream)
        self._decoded = 0

    def _read(self):
        vframe = next(self._frames, None)
        if vframe is None:
            # a file whose download stopped cleanly but early: fewer frames than its index
            # (a frame or two short is an edit list, as for local files)
            if not self.live and self._total and self._decoded < self._total - 2:
                raise SourceError(f"{self._decoded} of {self._total} frames decoded (the file "
                                  "is truncated)")
            return None
        self._decoded += 1
        return upright_bgr(vframe), vframe.time

    def _disconnect(self) -> None:
        container, self._container, self._frames = self._container, None, None
        if container is not None:
            container.close()
