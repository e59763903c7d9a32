"""What the web view shows: the newest result of every stream, kept by reference in a one-slot
mailbox per stream, and JPEG-encoded on demand by the viewers' threads.

The pipeline's sink thread only swaps a reference (`LiveFrames.write`), so a slow or stuck viewer
never slows the run and memory stays at one frame per stream. A picture is annotated and encoded
only when a viewer asks for it, at most `max_fps` times a second per stream, and every viewer of
a stream shares that one encoding.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import cv2

from ..detections import Detections
from ..draw import annotate
from ..sources import Frame


@dataclass
class _Latest:
    frame: Frame
    detections: Detections
    seq: int
    wall_time: float


@dataclass
class _Encoded:
    seq: int = -1
    jpeg: bytes = b""
    at: float = 0.0


class LiveFrames:
    """The newest frame of every stream and its JPEG, encoded lazily at a capped rate.

    max_fps:  most encodings per second and stream (viewers get at most this rate)
    quality:  JPEG quality 1..100
    max_side: frames are scaled down to this long side before encoding (0: full size)
    """

    def __init__(self, max_fps: float = 10.0, quality: int = 75, max_side: int = 960,
                 annotators: Optional[Sequence] = None):
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.quality = int(quality)
        self.max_side = max_side
        self.annotators = annotators
        self._cond = threading.Condition()
        self._latest: Dict[int, _Latest] = {}
        self._encoded: Dict[int, _Encoded] = {}
        self._encode_locks: Dict[int, threading.Lock] = {}
        self.frames: Dict[int, int] = {}  # frames seen per stream
        self.encodes = 0
        self._closed = False

    # -- the pipeline side -----------------------------------------------------------------
    def write(self, frame: Frame, detections: Detections) -> None:
        """O(1): keep a reference to the newest result and wake the viewers."""
        with self._cond:
            count = self.frames.get(frame.stream, 0) + 1
            self.frames[frame.stream] = count
            self._latest[frame.stream] = _Latest(frame, detections, count, time.time())
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the viewer side -------------------------------------------------------------------
    def latest(self, stream: int) -> Optional[_Latest]:
        with self._cond:
            return self._latest.get(stream)

    def streams(self) -> List[int]:
        with self._cond:
            return sorted(self._latest)

    def wait_newer(self, stream: int, seq: int, timeout: float) -> bool:
        """Wait until `stream` has a frame newer than `seq`; False on timeout or when closed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or self._seq(stream) > seq, timeout) and not self._closed

    def _seq(self, stream: int) -> int:
        latest = self._latest.get(stream)
        return latest.seq if latest else 0

    @property
    def closed(self) -> bool:
        return self._closed

    def jpeg(self, stream: int) -> _Encoded:
        """The newest picture of `stream` as JPEG; re-encoded only when a newer frame exists and
        the last encoding is older than the rate cap (viewers share it)."""
        lock = self._encode_locks.setdefault(stream, threading.Lock())
        with lock:
            cached = self._encoded.get(stream, _Encoded())
            latest = self.latest(stream)
            fresh = time.perf_counter() - cached.at < self.min_interval
            if latest is None or latest.seq == cached.seq or (fresh and cached.jpeg):
                return cached
            encoded = _Encoded(latest.seq, self._encode(latest), time.perf_counter())
            self._encoded[stream] = encoded
            self.encodes += 1
            return encoded

    def _encode(self, latest: _Latest) -> bytes:
        image = annotate(latest.frame.image, latest.detections, self.annotators)
        h, w = image.shape[:2]
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()
