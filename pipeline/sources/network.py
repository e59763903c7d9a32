"""Network streams (RTSP, HTTP / HTTPS MPEG-TS, HLS, RTMP, UDP, SRT) through PyAV.

Live by default: the newest frame wins when the consumer is slow, and a dropped connection is
retried with back-off (see `Reconnect`). A plain file over HTTP (``.mp4``, ``.mkv``..., or any
address whose container has a frame index or a length) is not live: every frame is delivered,
its timestamps count from its start, and its end is the end of the source.
"""
from __future__ import annotations

import numbers
from typing import Optional
from urllib.parse import urlparse

from engine.errors import SourceError
from engine.lazy import require

from .base import first_line, without_credentials
from .hwdecode import Decoding, ReportsDecoding, hwaccel_for
from .live import LiveSource, Reconnect
from .outages import say
from .passwords import PASSWORD_VARIABLE, address, names_user_only
from .video import (error_reason, first_video_stream, open_container, shown_cause, timed_out,
                    upright_bgr)

SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
# how RTP reaches FFmpeg from an RTSP server (its rtsp_transport): interleaved in the RTSP
# connection (no UDP packet loss artefacts, through NAT), RTP over UDP, over multicast UDP, or
# RTSP tunnelled over HTTP; some cameras and NVRs serve only one of them
RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http")
RTSP_SCHEMES = ("rtsp", "rtsps")
READ_TIMEOUT_S = 5.0  # a read that waits longer for data is a lost connection
RTMP_PROBE_US = 1_000_000  # how much of an rtmp:// stream FFmpeg reads to learn its tracks
_FILE_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".3gp", ".mpg", ".mpeg",
                  ".wmv", ".ogv")


def is_url(text: str) -> bool:
    return urlparse(text).scheme.lower() in SCHEMES


def is_rtsp_url(text: str) -> bool:
    return urlparse(text).scheme.lower() in RTSP_SCHEMES


def looks_live(url: str) -> bool:
    path = urlparse(url).path.lower()
    return not (urlparse(url).scheme in ("http", "https") and path.endswith(_FILE_SUFFIXES))


class NetworkSource(ReportsDecoding, LiveSource):
    """One network stream; `timeout` (seconds) bounds each read, and connecting takes up to
    `OPEN_TIMEOUT` or `timeout`, whichever is longer. `rtsp_transport`: how an rtsp:// stream's
    video comes (RTSP_TRANSPORTS; an rtsp_transport in `options` wins). `password`: for a URL
    that names its user without one; `{DBRT_NAME}` in the URL stands for that environment
    variable (see `passwords`). The URL as given, without them, is the source's name. `hwaccel`: "cuda"
    decodes on an NVIDIA GPU (NVDEC; see hwdecode; "cuda:N" on GPU N), None in software."""

    kind = "network"
    # FFmpeg reads about 5 s of a stream (its analyzeduration) to learn its format before the
    # open returns: at a few frames per second that is longer than a read's timeout, and a
    # too-short open timeout leaves FFmpeg's interrupt set, failing the first read after it
    OPEN_TIMEOUT = 30.0

    def __init__(self, url: str, reconnect: Optional[Reconnect] = Reconnect(),
                 timeout: float = READ_TIMEOUT_S, live: Optional[bool] = None,
                 options: Optional[dict] = None, password: Optional[str] = None,
                 hwaccel: Optional[str] = None, rtsp_transport: str = "tcp"):
        _check_settings(timeout, rtsp_transport)
        self._address = address(url, password)  # what FFmpeg opens, passwords filled in
        self.live = looks_live(url) if live is None else live
        self._live_by_name = live is None and self.live  # the first connect may find a file
        super().__init__(url, reconnect if self.live else None)
        self.url = url
        self.timeout = timeout
        self.options = dict(options or {})
        if is_rtsp_url(url):
            self.options.setdefault("rtsp_transport", rtsp_transport)
        if urlparse(url).scheme.lower().startswith("rtmp"):
            # FLV carries the video's decoder settings in its first packet; FFmpeg's default 5 s
            # of probing only waited for an audio track the server did not rule out (nginx-rtmp:
            # a first frame 6 s after each connect, reconnects included)
            self.options.setdefault("analyzeduration", str(RTMP_PROBE_US))
        self._container = None
        self._frames = None
        self._fps: Optional[float] = None
        self._total: Optional[int] = None
        self._decoded = 0
        self._start_s = 0.0  # a file's first timestamp, so that its frames count from 0
        self.decoding = Decoding(hwaccel)
        self._stream = None
        self._last_time: Optional[float] = None  # the last frame's timestamp on this connection
        self._interval: Optional[float] = None  # between its last two frames
        self._said_slow = False

    @property
    def fps(self) -> Optional[float]:
        return self._fps

    def _connect(self) -> None:
        try:
            container = open_container(self._address, self.options, name=self.url,
                                       timeout=(max(self.timeout, self.OPEN_TIMEOUT), self.timeout),
                                       hwaccel=hwaccel_for(self.decoding.hwaccel, self.url))
        except SourceError as exc:
            # the name shown has no user: a login refused for want of a password would not say
            if "401" in str(exc) and names_user_only(self._address):
                raise SourceError(f"{exc}; the URL names its user without a password and none "
                                  f"was given ({PASSWORD_VARIABLE} is not set)") from None
            raise _transport_refused(exc, self.options.get("rtsp_transport"))
        stream = first_video_stream(container, self.url)
        self._note(self.decoding.opened(stream))
        self._fps = float(stream.average_rate) if stream.average_rate else self._fps
        self._container, self._stream = container, stream
        self._frames = self._decoded_frames(container, stream)
        self._total = stream.frames or None  # a file's index (0 for a live stream)
        self._decoded, self._last_time = 0, None
        if self._live_by_name and _finite(container, stream, self.url):
            self._as_file()  # e.g. a download link with no file suffix
        self._live_by_name = False
        if self.live and self.state == "reconnecting" and _ended_playlist(container):
            self._disconnect()  # its end again: each reconnect replayed its last segments
            raise SourceError("the HLS playlist has ended (#EXT-X-ENDLIST): no new segments")
        if not self.live and stream.start_time and stream.time_base is not None:
            self._start_s = float(stream.start_time * stream.time_base)

    def _decoded_frames(self, container, stream):
        """The stream's frames, packet by packet: a packet the decoder rejects (a corrupt one,
        common on a camera's stream) is skipped and counted, not a lost connection
        (container.decode ends at the first, which cost a reconnect and its frames). A file's
        stays an error, as its frames after it would be missing."""
        av = require("av")
        for packet in container.demux(stream):
            try:
                vframes = packet.decode()
            except av.InvalidDataError as exc:
                if not self.live:
                    raise
                if not self.stats.skipped:
                    self.stats.note(f"damaged packet skipped: {error_reason(exc)}")
                self.stats.add(skipped=1)
                continue
            yield from vframes

    def _read(self):
        try:
            vframe = next(self._frames, None)
        except Exception as exc:
            waited = timed_out(exc, self.timeout)
            if waited:
                self._say_frames_come_slower()
                raise SourceError(waited) from None
            if self.live or self._decoded or urlparse(self.url).scheme not in ("http", "https"):
                if self._address == self.url:
                    raise
                # FFmpeg's error quotes the address it opened, passwords filled in
                raise SourceError(first_line(exc).replace(self._address, self.url)) from None
            raise SourceError(f"{error_reason(exc)}: reading this file needs HTTP byte ranges, "
                              "which the server may not support (an MP4 whose index is at its "
                              "end: serve it with ranges, or write it with -movflags "
                              "faststart)") from shown_cause(exc, self._address, self.url)
        if vframe is None:
            # a file whose download stopped cleanly but early: fewer frames than its index
            # (a frame or two short is an edit list, as for local files)
            if not self.live and self._total and self._decoded < self._total - 2:
                raise SourceError(f"{self._decoded} of {self._total} frames decoded (the file "
                                  "is truncated)")
            return None
        self._decoded += 1
        self._note(self.decoding.decoded(self._stream))
        seconds = vframe.time
        if seconds is not None:
            if self._last_time is not None and seconds > self._last_time:
                self._interval = seconds - self._last_time
            self._last_time = seconds
        return upright_bgr(vframe), None if seconds is None else seconds - self._start_s

    def _say_frames_come_slower(self) -> None:
        """Once, when a read times out: a stream whose frames come less often than a read waits
        (`timeout`) times out after each frame and reconnects for ever, without a word."""
        if self._interval is not None and self._interval > self.timeout and not self._said_slow:
            self._said_slow = True
            say(f"{self.url} sends a frame every {self._interval:.1f} s, longer than a read "
                f"waits ({self.timeout:g} s): each wait for its next frame times out and "
                "reconnects; give a longer --source-timeout (source_timeout)")

    def _disconnect(self) -> None:
        container, self._container, self._frames = self._container, None, None
        if container is not None:
            container.close()


def _transport_refused(exc: SourceError, transport: Optional[str]) -> SourceError:
    """An RTSP server's 461 Unsupported Transport, which FFmpeg words "Protocol not supported",
    says which transport it refused and what to try; any other error is `exc`."""
    if transport is None or not str(exc).endswith("Protocol not supported"):
        return exc
    others = ", ".join(t for t in RTSP_TRANSPORTS if t != transport)
    refused = SourceError(f"{exc} (the server does not send this stream over {transport}: "
                          f"ask for another transport with --rtsp-transport / rtsp_transport: "
                          f"{others})")
    refused.__suppress_context__ = True
    return refused


def _check_settings(timeout, rtsp_transport) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or \
            not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if rtsp_transport not in RTSP_TRANSPORTS:
        raise ValueError(f"rtsp_transport must be one of {', '.join(RTSP_TRANSPORTS)}, got "
                         f"{rtsp_transport!r}")


def _ended_playlist(container) -> bool:
    """An HLS playlist that states its length: its publisher has ended it."""
    return "hls" in container.format.name and bool(container.duration and container.duration > 0)


def _finite(container, stream, url: str) -> bool:
    """Whether an HTTP(S) address serves a file: its container indexes its frames (MP4) or
    states its length (a Matroska header, an HLS playlist with an end), or the server says how
    many bytes it sends (Content-Length: an MPEG-TS recording); a live stream does none of
    these. (An HLS playlist's own length says nothing about its video.)"""
    if urlparse(url).scheme not in ("http", "https"):
        return False
    if bool(stream.frames) or bool(container.duration and container.duration > 0):
        return True
    return "hls" not in container.format.name and (getattr(container, "size", 0) or 0) > 0

