"""What every source yields (`Frame`) and the interface every source implements (`Source`)."""
from __future__ import annotations

import abc
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Tuple

import numpy as np

from engine.errors import without_credentials  # noqa: F401 - what sources and outputs use


def first_line(exc: BaseException) -> str:
    """An error's first line, for one-line messages (its type's name when it says nothing)."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=256)
def shown_source(source: str) -> str:
    """`without_credentials` of a frame's source, once per source rather than once per frame."""
    return without_credentials(source)


@dataclass(eq=False)  # compared by identity: == on the pixel arrays would raise
class Frame:
    """One decoded frame and where it came from.

    image:     HxWx3 uint8 BGR
    index:     position in its source (0-based; live sources skip the indices they dropped)
    timestamp: presentation time in seconds, or None (images)
    source:    identifier of the source (path, URL, camera id)
    stream:    position of the source in the pipeline's source list
    t_read:    time.perf_counter() when the frame was read (start of its end-to-end latency)
    device_image: the frame's copy on the GPU (CuPy) while the GPU preprocessor's upload is
               kept for reading text, else None
    connection: the live source's connection it came on (0, then 1 after the first reconnect,
               ...): what is followed across frames (text tracks) starts afresh on a new one,
               whose clock may restart and whose scene may have changed during the outage
    first_size: (height, width) of the first frame its live source read, which the run may
               never have taken (dropped while the run got ready or fell behind): a --roi or
               --ignore zone is checked against it (pipeline.region.SourcesMet); None elsewhere
    """

    image: np.ndarray
    index: int
    timestamp: Optional[float]
    source: str
    stream: int = 0
    t_read: float = field(default_factory=time.perf_counter)
    device_image: object = field(default=None, repr=False, compare=False)
    connection: int = 0
    first_size: Optional[Tuple[int, int]] = None

    @property
    def size(self):
        """(height, width)."""
        return self.image.shape[:2]


class SourceStats:
    """Thread-safe counters a source reports: frames read / delivered / dropped / sampled out
    (left out by the run's frame rate, `Pipeline(sample_fps=...)`), inputs skipped (unreadable
    images, packets of a video or live stream the decoder rejected), reconnects, the attempts
    a live source's first connection took;
    read = delivered + dropped + sampled_out."""

    def __init__(self):
        self._lock = threading.Lock()
        self.read = 0
        self.delivered = 0
        self.dropped = 0
        self.sampled_out = 0
        self.skipped = 0
        self.reconnects = 0
        # connects tried before a live source first came up (1 when it was up at the start,
        # more when it was down and retried, 0 for sources that do not connect)
        self.connect_attempts = 0
        self.events = []  # short human-readable notes (reconnect attempts, errors)

    def add(self, **counts) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def note(self, message: str, keep: int = 50) -> None:
        message = without_credentials(message)  # errors quote the URL as it was given
        with self._lock:
            self.events.append(message)
            del self.events[:-keep]

    def as_dict(self) -> dict:
        with self._lock:
            return dict(read=self.read, delivered=self.delivered, dropped=self.dropped,
                        sampled_out=self.sampled_out, skipped=self.skipped,
                        reconnects=self.reconnects, connect_attempts=self.connect_attempts,
                        events=list(self.events))


class Source(abc.ABC):
    """A sequence of frames. `open()` checks the source and fails with a SourceError; iterating
    yields Frames until the source ends; `close()` (safe from another thread) stops it early."""

    kind = "source"
    live = False  # live sources keep the newest frame when the consumer is slow, and count drops
    # a run's frame rate (`Pipeline(sample_fps=)`) applied by the source itself, which then skips
    # the frames fn(timestamp, connection) refuses before making their pictures (counted as
    # sampled_out): a source that can says so; the others are sampled as they give their frames
    takes_frame_filter = False
    frame_filter = None

    def __init__(self, name: str):
        self.name = name
        self.stats = SourceStats()
        self.stream = 0  # set by the pipeline
        # "connecting" (a live source down when the run started, retried), "reconnecting" (live
        # sources), then "ended", "failed" or "stopped" (the run)
        self.state = "up"
        self.error: Optional[str] = None  # why it failed (set with state "failed")

    def open(self) -> "Source":
        return self

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Stop producing frames; iteration ends soon after."""

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait for any thread of the source's own to end (after `close()`)."""

    @property
    def total_frames(self) -> Optional[int]:
        """Number of frames when known in advance (files, image lists), else None."""
        return None

    @property
    def fps(self) -> Optional[float]:
        return None

    def describe(self) -> dict:
        """The source in report.json: `stream` is the key of its frames' lines (detections.jsonl,
        events, MQTT); `error` says why it failed (as /api/status does), else None."""
        return dict(stream=self.stream, name=without_credentials(self.name), kind=self.kind,
                    live=self.live, total_frames=self.total_frames, fps=self.fps,
                    state=self.state, error=self.error and without_credentials(self.error),
                    **self.stats.as_dict())

    def __enter__(self) -> "Source":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
