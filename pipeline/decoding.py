"""The decode stage of a run: a source's frames as the stage's inbox (`source_frames`, sampled
down to a frame rate by `FrameSampler` when asked) and its step, which stamps each frame with its
source's position in the run (`stamp`)."""
from __future__ import annotations

import itertools
import math
import threading
from typing import Callable, Iterator, List, Optional

from .sources import Frame, Source
from .sources.base import first_line
from .sources.outages import say
from .stages import Aborted


class FrameSampler:
    """At most `fps` frames per second of a source's own time: a frame is kept when its
    timestamp reaches the next slot of a 1/fps grid, so 30 FPS sampled at 7 keeps 7 a second
    (not every 5th frame) and a file gives the same frames on every run. The grid starts again
    when the clock goes back (a stream reconnected) or the connection changes."""

    EPSILON = 1e-6  # container timestamps are rounded (0.0333333)

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.due: Optional[float] = None
        self.connection = None

    def keep(self, timestamp: Optional[float], connection: int = 0) -> bool:
        if timestamp is None:  # an image: each is a frame of its own
            return True
        if self.due is None or connection != self.connection or timestamp < self.due - 2 * self.period:
            self.due, self.connection = timestamp, connection
        if timestamp + self.EPSILON < self.due:
            return False
        slots = math.floor((timestamp + self.EPSILON - self.due) / self.period) + 1
        self.due += self.period * max(1, slots)
        return True


def _sampled(frames: Iterator[Frame], source: Source, fps: float) -> Iterator[Frame]:
    """The frames `FrameSampler` keeps; each one left out is counted as the source's
    `sampled_out` instead of `delivered` (it never reaches the pipeline, and is not lost)."""
    sampler = FrameSampler(fps)
    for frame in frames:
        clock = frame.timestamp
        if clock is None and source.live:  # a live source without timestamps: its arrival
            clock = frame.t_read
        if sampler.keep(clock, frame.connection):
            yield frame
        else:
            source.stats.add(delivered=-1, sampled_out=1)


class SourceFailures(list):
    """The errors of the run's sources that failed; the run's end raises `ending()`. One that
    fails while other sources run on (a stream whose reconnects ran out) is said at once, as a
    warning: the run's end, where its error is said, may be days away."""

    RUNNING = ("up", "connecting", "reconnecting")

    def __init__(self, sources: List[Source]):
        super().__init__()
        self._sources = sources
        self._said: List[BaseException] = []

    def append(self, error: BaseException) -> None:
        super().append(error)
        if any(source.state in self.RUNNING for source in self._sources):
            say(f"{first_line(error)}; the other sources go on")
            self._said.append(error)

    def ending(self) -> BaseException:
        """The error the run ends with: the first not said yet (that of the source whose end
        ended the run; raising the first of all said an earlier one's again, and this one's
        never), any other not said yet said now."""
        unsaid = [error for error in self if not any(error is e for e in self._said)]
        for error in unsaid[1:]:
            say(first_line(error))
        return (unsaid or self)[0]


def source_frames(source: Source, max_frames: Optional[int], draining: threading.Event,
                  failures: List[BaseException], sample_fps: Optional[float] = None) -> Iterator[Frame]:
    """Up to `max_frames` frames of one source (at most `sample_fps` a second of its time). A
    source that fails (a truncated file, a lost stream) ends like one that finished: the frames
    it gave still reach the sinks, the other sources go on, and its error is added to
    `failures`, which the run raises at its end."""
    if source.takes_frame_filter:  # it skips them before their pictures are made (this run's:
        # a Source object of one's own run again without a rate keeps none of an earlier one's)
        source.frame_filter = None if sample_fps is None else FrameSampler(sample_fps).keep
    frames = iter(source)
    if sample_fps is not None and not source.takes_frame_filter:
        frames = _sampled(frames, source, sample_fps)
    try:
        yield from (frames if max_frames is None else itertools.islice(frames, max_frames))
        source.state = "ended"
    except Aborted:
        raise
    except Exception as exc:  # noqa: BLE001 - raised by the consumer once the run drained
        source.error = first_line(exc)
        source.state = "failed"
        failures.append(exc)
        source.stats.note(f"error: {exc}")
    finally:
        if source.state in ("up", "connecting", "reconnecting") or (
                source.state == "ended" and draining.is_set()):
            source.state = "stopped"  # the run stopped before the source ended
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def stamp(stream: int) -> Callable[[Frame], Frame]:
    """The decode stage's step: a frame learns its source's position in the run (one place)."""
    def stamped(frame: Frame) -> Frame:
        frame.stream = stream
        return frame
    return stamped
