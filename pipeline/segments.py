"""Time-based segments of a run's output files, with retention: a service watching cameras day
and night writes `detections-20261207T170000Z.jsonl`, then `detections-20261207T180000Z.jsonl`,
... (events and each annotated video alike) instead of one file that fills the disk.

One wall clock (UTC) for every file of a run: `detections.jsonl` mixes all streams, so it cannot
follow one stream's clock, and stream clocks differ per camera, restart after a reconnect and
start at 0 for a file; the wall clock's names say when, match across the kinds of file and the
streams, and bound what a day of recording keeps on disk. Segments end on multiples of
`seconds` since the Unix epoch (every full hour for 3600, as at midnight UTC for a day); the
first starts when the run does. A frame goes to the segment current when it is written (read
once per frame, so its JSON line and its video frame are in segments of the same name); lines
written without a frame (a track's end line at a stream's end) go to the newest segment.
While no frame comes, the sink thread reads the clock again (`passed`), and a segment whose
time is over has its files closed then (the sinks' `finish_segments`), not at the next frame.

    segments = Segments(3600, keep=48)      # --segment-time 3600 --keep-segments 48
    sinks = [JsonlSink("out/detections.jsonl", segments=segments),
             VideoSink("out/annotated.mp4", segments=segments)]
"""
from __future__ import annotations

import math
import numbers
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

from dbnet.files import naming_the_file

STAMP = "%Y%m%dT%H%M%SZ"  # ISO 8601 basic, UTC: names sort in time order
_STAMP_PATTERN = r"-(\d{8}T\d{6}Z)(?:-(\d+))?"  # -2, -3: a name an earlier run had taken


def wall_clock() -> float:
    """The segments' clock (Unix time): the default of `Segments(clock=)`."""
    return time.time()


def _whole(value) -> bool:
    """A whole number >= 1 (3600, 3600.0; not True, "3600", NaN or infinity)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and float(value).is_integer() and value >= 1)


class Segments:
    """seconds: a segment's length on the wall clock (a whole number >= 1, the names being to
    the second); keep: how many segments of each file (detections, events, each stream's video)
    stay in its folder, the one being written among them (None: all), counting those of earlier
    runs under the same names (a restarted service goes on with its series); clock: a function
    giving Unix time in seconds (for tests); spare: a file, or files, never deleted (the run's
    sources: an earlier segment read again). The clock never goes back: after a clock set
    back, the current segment goes on until the clock reaches its end again."""

    def __init__(self, seconds: int, keep: Optional[int] = None,
                 clock: Optional[Callable[[], float]] = None, spare: Iterable = ()):
        if not _whole(seconds):
            raise ValueError(f"Segments(seconds=) must be a whole number of seconds >= 1, "
                             f"got {seconds!r}")
        if keep is not None and not _whole(keep):
            raise ValueError(f"Segments(keep=) must be a number of segments >= 1 or None, "
                             f"got {keep!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"Segments(clock=) takes a function giving Unix time, got {clock!r}")
        self.seconds, self.keep = int(seconds), None if keep is None else int(keep)
        if isinstance(spare, (str, bytes, os.PathLike)):  # one file, not its name's letters
            spare = [spare]
        self.spare = {os.path.realpath(p) for p in spare}
        self.clock = clock if clock is not None else wall_clock
        self._latest = float(self.clock())  # the first segment starts with the run
        self._advancing = threading.Lock()
        # thread -> the last frame it placed and its segment's start: a frame's sinks ask in
        # turn, and the sink thread of another Pipeline sharing this Segments may ask between
        self._placed: Dict[int, Tuple[object, float]] = {}
        # base name -> the segments this run opened (with keep: those not deleted yet)
        self.files: Dict[Path, List[Path]] = {}
        self.removed = 0  # segments deleted to keep `keep`, this run's and earlier runs'
        self._openings = 0  # files opened (and older ones deleted): `turned()` changes with it

    def current(self) -> float:
        """The start of the newest segment (Unix time)."""
        return self._latest

    def turned(self) -> Tuple[float, int]:
        """Changes when a segment begins and when a file is opened (the oldest deleted): a
        stream back from an outage opens its files in the segment the clock moved to while it
        was down, not a new one (report.json is rewritten when this changes)."""
        return self._latest, self._openings

    def passed(self) -> float:
        """The start of the newest segment, the clock read again while no frame comes (a
        camera down for hours): a segment whose time is over is then finished without a frame
        of the next. Before the run's first frame the clock is not read (nothing written yet)."""
        if self._placed:
            self._advance()
        return self._latest

    def _advance(self) -> None:
        now = float(self.clock())
        with self._advancing:  # the sink threads of Pipelines sharing it: never moved back
            self._latest = max(self._latest, now - now % self.seconds)

    def opening(self) -> float:
        """The start of the segment a file opened now begins: the newest one, the clock read
        again once frames were placed (a Segments used again for another run: its first file
        is named by the new run's time, not after the last run's last segment)."""
        return self.passed()

    def start_for(self, frame=None) -> float:
        """The start of the segment `frame` is written to: the clock is read once per frame,
        whichever of its sinks asks first (None: the newest segment)."""
        if frame is None:
            return self._latest
        here = threading.get_ident()
        placed = self._placed.get(here)
        if placed is not None and placed[0] is frame:
            return placed[1]
        self._advance()
        if placed is None:  # a new sink thread: those of ended runs let their frames go
            alive = {thread.ident for thread in threading.enumerate()}
            for ident in [i for i in list(self._placed) if i not in alive]:
                self._placed.pop(ident, None)
        self._placed[here] = (frame, self._latest)
        return self._latest

    def path(self, base: Union[str, os.PathLike], start: float, copy: int = 1) -> Path:
        """out/detections.jsonl -> out/detections-20261207T171500Z.jsonl (copy 2: ...Z-2.jsonl)"""
        base = Path(base)
        stamp = time.strftime(STAMP, time.gmtime(int(start))) + (f"-{copy}" if copy > 1 else "")
        return base.with_name(f"{base.stem}-{stamp}{base.suffix}")

    def opened(self, base: Union[str, os.PathLike], start: float) -> Path:
        """The file of `base`'s segment from `start`, counted as this run's; the oldest
        segments of `base` beyond `keep` are deleted (never this one). A run's names only go
        forward, so a file there already is an earlier run's, never written over: a clock set
        back at a boot without network time (a box without a clock battery) comes to the names
        of the segments written before; this one then gets -2 (-3, ...) after its time."""
        base = Path(base)
        path, copy = self.path(base, start), 1
        while path.exists():
            copy += 1
            path = self.path(base, start, copy)
        self.files.setdefault(base, []).append(path)
        if self.keep is not None:
            self._prune(base, path)
        self._openings += 1
        return path

    def _prune(self, base: Path, writing: Path) -> None:
        finished = self._oldest_first(base, writing)
        # an empty segment (a run's first file, opened before any line: one that ended without
        # a frame, as each start of a crash loop while a camera is down) holds nothing: it is
        # deleted, not counted, else those runs' empty files pushed every real segment out
        empty = [name for name in finished if _size(base.parent / name) == 0]
        finished = [name for name in finished if name not in empty]
        gone = {name for name in empty + finished[:max(0, len(finished) - (self.keep - 1))]
                if self._delete(base.parent / name)}
        # this run's list names only segments still there: a run of weeks opens thousands
        self.files[base] = [p for p in self.files[base] if p.name not in gone]

    def _delete(self, path: Path) -> bool:
        """Whether `path` is gone now (deleted, or gone already); a spare file stays."""
        if os.path.realpath(path) in self.spare:
            return False
        try:
            path.unlink()
        except FileNotFoundError:  # gone already (a user's cleanup)
            return True
        self.removed += 1
        return True

    def _oldest_first(self, base: Path, writing: Path) -> List[str]:
        """The finished segments of `base` in its folder, oldest first: an earlier run's by
        their time and copy number (`...Z` before `...Z-2` before `...Z-10`), then this run's
        in the order it opened them (after a clock set back at a boot, this run's names are
        older than the last run's, and they were deleted first)."""
        pattern = re.compile(re.escape(base.stem) + _STAMP_PATTERN + re.escape(base.suffix) + "$")
        names = {name: match for name in (os.listdir(base.parent) if base.parent.is_dir() else ())
                 if (match := pattern.match(name)) and name != writing.name}
        ours = [p.name for p in self.files.get(base, []) if p.name in names]
        earlier = sorted(set(names) - set(ours),
                         key=lambda n: (names[n].group(1), int(names[n].group(2) or 1)))
        return earlier + ours

    def written(self, base: Union[str, os.PathLike]) -> List[str]:
        """`base`'s segments this run opened that are still on disk, oldest first."""
        return [str(p) for p in self.files.get(Path(base), []) if p.is_file()]


def checked_segments(segments, owner: str) -> Optional[Segments]:
    """A sink's `segments=` argument: a Segments or None, refused when the sink is made (a
    number, the seconds meant, failed at the first frame, in the pipeline's sink thread)."""
    if segments is not None and not isinstance(segments, Segments):
        raise TypeError(f"{owner}(segments=) takes a pipeline.segments.Segments or None, got "
                        f"{segments!r} (one file per hour: segments=Segments(3600))")
    return segments


def _size(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


class SegmentedLines:
    """A text file written line by line (JSON lines, flushed by its sink), as one file per
    segment: `at(frame)` before a frame's lines picks its segment, whose file is opened when a
    line is written to it (a segment without lines, e.g. no text event, leaves no file but the
    first, which retention deletes if it stayed empty). A line is never split: the file changes
    between lines. `finish_over` closes the file of a segment whose time is over before the
    next line comes; lines written then without a frame go to the newest segment."""

    def __init__(self, base: Union[str, os.PathLike], segments: Segments):
        self.base, self.segments = Path(base), segments
        self._start = self._due = segments.opening()
        self.path = segments.opened(self.base, self._start)
        self._fh = self._open()
        self._ended = False  # close(): the sink is done, no segment is opened again

    def _open(self):
        with naming_the_file(self.path):
            return open(self.path, "w", encoding="utf-8")

    def at(self, frame) -> None:
        self._due = self.segments.start_for(frame)

    def write(self, text: str) -> None:
        if self._due != self._start and not self._ended:
            self._turn()
        with naming_the_file(self.path):
            self._fh.write(text)

    def _turn(self) -> None:
        """The finished segment is closed (flushed), the next one opened."""
        with naming_the_file(self.path):
            self._fh.close()
        self._start = self._due
        self.path = self.segments.opened(self.base, self._start)
        self._fh = self._open()

    def finish_over(self, newest: float) -> None:
        """The segments' newest start is `newest`: an older segment's file is closed now
        (flushed, finished for a reader), the next one opened when a line comes."""
        if newest > self._start and not self._ended:
            with naming_the_file(self.path):
                self._fh.close()
            self._due = max(self._due, newest)

    def flush(self) -> None:
        if not self._fh.closed:  # its segment's time over: closed, flushed
            with naming_the_file(self.path):
                self._fh.flush()

    @property
    def closed(self) -> bool:
        """Closed for good (`close()`), not between two segments."""
        return self._ended

    def close(self) -> None:
        self._ended = True
        with naming_the_file(self.path):
            self._fh.close()
