"""Video files through PyAV, decoded with FFmpeg's own threads; never drops a frame. Frames come
upright (the display rotation tag of phone videos is applied). A damaged packet is skipped and
counted, so the frames after it are still read; a file that stops short of the length its index
or its container states is an error once its frames are read."""
from __future__ import annotations

import errno
import os
import threading
import time
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

from engine.errors import SourceError
from engine.lazy import require

from .base import Frame, Source, without_credentials
from .failures import ffmpeg_failure_passes, passing, rtmp_play_refused, unresolved_host
from .hwdecode import Decoding, ReportsDecoding, hwaccel_for


def open_container(url: str, options: Optional[dict] = None, timeout=None,
                   name: Optional[str] = None, hwaccel=None):
    """av.open with every FFmpeg / OS failure turned into one SourceError line, which calls
    the URL `name` (default: `url`; a stream's name leaves out the passwords put into `url`).
    `hwaccel`: a PyAV HWAccel decoding the video on the GPU (hwdecode.hwaccel_for), or None.
    The error says whether the failure may pass by itself (`failures`: a stream down at the
    start is waited for)."""
    av = require("av")
    started = time.monotonic()
    try:
        accel = {} if hwaccel is None else {"hwaccel": hwaccel}  # PyAV before 14 has no such keyword
        return av.open(url, mode="r", options=options or {}, timeout=timeout, **accel)
    except (av.FFmpegError, OSError, ValueError) as exc:
        open_s = timeout[0] if isinstance(timeout, tuple) else timeout
        unresolved = unresolved_host(url) if getattr(exc, "errno", None) == errno.EIO else None
        reason = (timed_out(exc, open_s, time.monotonic() - started) or unresolved
                  or rtmp_play_refused(exc, url) or error_reason(exc).replace(url, name or url))
        error = SourceError(f"cannot open {name or url}: {reason}")
        passes = unresolved is None and ffmpeg_failure_passes(exc, url)
        raise passing(error, passes) from shown_cause(exc, url, name)


def shown_cause(exc: Exception, url: str, name: Optional[str] = None):
    """`exc` as the cause of a SourceError about `url`, unless it quotes a password that the
    error's message leaves out (FFmpeg's errors name the URL: a logged traceback shows them)."""
    return exc if without_credentials(url) == url == (name or url) else None


def first_video_stream(container, url: str):
    """The first video stream that is a video (an audio file's cover art is a one-picture
    "video" stream marked as an attached picture)."""
    av = require("av")
    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    videos = [s for s in container.streams.video
              if attached is None or not (getattr(s, "disposition", 0) & attached)]
    if not videos:
        container.close()
        raise SourceError(f"{url} has no video stream")
    stream = videos[0]
    stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg, outside the GIL
    return stream


_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180,
           270: cv2.ROTATE_90_CLOCKWISE}


def upright_bgr(vframe) -> np.ndarray:
    """The frame as BGR uint8, turned as its display rotation tag says (phones store portrait
    video as landscape frames plus the tag; PyAV reports it counter-clockwise, in degrees)."""
    image = vframe.to_ndarray(format="bgr24")
    turn = _ROTATE.get(round(vframe.rotation / 90) * 90 % 360)
    return image if turn is None else cv2.rotate(image, turn)


def _end_time(container, stream) -> Optional[float]:
    """Where the stream's index says it ends, in seconds, or None; for a Matroska / WebM file
    of video alone (no per-stream length there), the length its header states (with other
    streams that is the longest one's, often the audio's; other containers only estimate it)."""
    if stream.duration and stream.time_base is not None:
        return float((stream.duration + (stream.start_time or 0)) * stream.time_base)
    if (not container.duration or "matroska" not in container.format.name
            or len(container.streams) > 1):
        return None
    start = stream.start_time * stream.time_base if stream.start_time and stream.time_base else 0
    return float(start) + container.duration / 1e6  # microseconds (AV_TIME_BASE)


def timed_out(exc: Exception, seconds: Optional[float],
              waited_s: Optional[float] = None) -> Optional[str]:
    """What a PyAV timeout means, or None for another error: PyAV stops FFmpeg's wait through
    its interrupt callback, which FFmpeg reports as "Immediate exit requested" -- or, opening an
    RTMP stream the server holds unpublished, as "Input/output error" once the call has waited
    (`waited_s`) its `seconds`."""
    av = require("av")
    if seconds is None:
        return None
    waited_out = waited_s is not None and waited_s >= seconds and \
        getattr(exc, "errno", None) == errno.EIO
    if not (isinstance(exc, av.ExitError) or waited_out):
        return None
    return f"nothing received for {seconds:g} s (timed out)"


def error_reason(exc: Exception) -> str:
    """The first line of an FFmpeg / OS error, for one-line messages."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class VideoFileSource(ReportsDecoding, Source):
    """Every frame of a local video file, in order, as BGR uint8. `hwaccel`: "cuda" decodes
    on an NVIDIA GPU (NVDEC; see hwdecode), None in software."""

    kind = "video"
    takes_frame_filter = True

    def __init__(self, path: os.PathLike, threads: int = 0, hwaccel: Optional[str] = None):
        super().__init__(str(path))
        self.path = str(path)
        self.threads = threads
        self.decoding = Decoding(hwaccel)
        self._container = None
        self._stream = None
        self._total: Optional[int] = None
        self._fps: Optional[float] = None
        self._end_s: Optional[float] = None
        self._closed = threading.Event()
        self._lock = threading.Lock()  # close() and the start of decoding
        self._decoding = False
        self._damaged = 0  # packets FFmpeg rejected

    def open(self) -> "VideoFileSource":
        if not os.path.exists(self.path):
            raise SourceError(f"no such file: {self.path}")
        if os.path.isdir(self.path):
            raise SourceError(f"{self.path} is a directory, not a video")
        if self._container is None:
            hwaccel = hwaccel_for(self.decoding.hwaccel, self.path)
            self._container = open_container(self.path, hwaccel=hwaccel)
            self._stream = first_video_stream(self._container, self.path)
            self._note(self.decoding.opened(self._stream))
            if self.threads:
                self._stream.codec_context.thread_count = self.threads
            self._total = self._stream.frames or None
            self._fps = float(self._stream.average_rate) if self._stream.average_rate else None
            self._end_s = _end_time(self._container, self._stream)
        return self

    @property
    def total_frames(self) -> Optional[int]:
        return self._total

    @property
    def coded_size(self) -> Optional[Tuple[int, int]]:
        """(width, height) as coded, known once opened: the frames' own size, or turned a
        quarter by the rotation tag, which is read as they are decoded."""
        context = self._stream.codec_context if self._stream is not None else None
        return (context.width, context.height) if context and context.width and context.height else None

    @property
    def fps(self) -> Optional[float]:
        return self._fps

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        with self._lock:
            if self._closed.is_set():
                self._release()
                return
            self._decoding = True
        av = require("av")
        index, last_time = 0, None
        try:
            for vframe in self._frames(av):
                if self._closed.is_set():
                    break
                self._note(self.decoding.decoded(self._stream))
                timestamp = self._seconds(vframe, index)
                if self.frame_filter is not None and not self.frame_filter(timestamp, 0):
                    # left out before its BGR picture is made: a quarter of a frame's decoding
                    self.stats.add(read=1, sampled_out=1)
                else:
                    self.stats.add(read=1, delivered=1)
                    yield Frame(upright_bgr(vframe), index, timestamp, self.name)
                index, last_time = index + 1, vframe.time
        except av.FFmpegError as exc:
            raise SourceError(f"{self.path} ended early: decoding failed after {self._of(index)} "
                              f"frames ({error_reason(exc)})") from exc
        finally:
            self._release()
        if not self._closed.is_set() and self._ended_early(index, last_time):
            raise SourceError(f"{self.path} ended early: {self._of(index)} frames decoded (the "
                              "file is truncated or damaged)")
        if self._damaged:
            raise SourceError(f"{self.path} is damaged: {self._damaged} packet(s) could not be "
                              f"decoded and were skipped; {self._of(index)} frames decoded")

    def _frames(self, av):
        """The stream's frames, packet by packet: a packet FFmpeg rejects is skipped and
        counted, not the end of the file (container.decode stops at the first)."""
        for packet in self._container.demux(self._stream):
            try:
                vframes = packet.decode()
            except av.InvalidDataError:
                self._damaged += 1
                self.stats.add(skipped=1)
                continue
            yield from vframes

    def _seconds(self, vframe, index: int) -> Optional[float]:
        """Seconds into the source: the frame's time less the stream's start (broadcast and
        camera recordings often start far from 0); from the frame rate when the container has
        no timestamps (a raw H.264 stream)."""
        if vframe.time is None:
            return index / self._fps if self._fps else None
        start = self._stream.start_time
        if start and self._stream.time_base is not None:
            return float(vframe.time - start * self._stream.time_base)
        return vframe.time

    def _of(self, count: int) -> str:
        return f"{count} of {self._total}" if self._total else str(count)

    def _ended_early(self, decoded: int, last_time: Optional[float]) -> bool:
        """Fewer frames than the index promises, or (no index) the last one well before the
        container's stated end. (FFmpeg's threaded decoder ends quietly where the data stops;
        the time check keeps a file whose edit list trims a few frames from being called
        truncated.)"""
        if self._total and decoded >= self._total:
            return False
        if last_time is None or self._end_s is None or not self._fps:
            return bool(self._total)
        return last_time < self._end_s - 2 / self._fps

    def close(self) -> None:
        """Stop decoding (from any thread); a file not being decoded is released at once."""
        with self._lock:
            self._closed.set()
            if not self._decoding:
                self._release()

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
