"""`TextEventSink`: a JSON line when a text track starts and one when it ends, the lines an
edge analytics system stores and reacts to (far fewer than one line per frame):

    {"event": "end", "stream": 0, "source": "demo.mp4", "track_id": 3, "text": "VALLEY",
     "confidence": 0.99, "first_timestamp": 0.0, "last_timestamp": 2.4, "first_frame": 0,
     "last_frame": 60, "frames": 61, "readings": 61, "polygon": [[94.0, 74.0], ...]}

A track's `"event": "start"` line comes on the frame where it is first reported with a track id
(ByteTrack confirms a track on its second sighting), before any other line of it: the same
fields, the vote and counts of that frame (its reading may change in later lines), so that a
consumer hears of a text as it appears, not seconds later. No track ends without one: the book
makes tracks only in `write`, which writes their start lines at once, and a track is never
ended by the frame that began it (it was just seen; a new connection or frame size ends the
tracks before it, before the frame's own are made).

With `every=N` a live track also gets an `"event": "update"` line every N seconds of stream time
(the frames' timestamps, not the wall clock) from its first sighting, when it was seen since its
last line (a track fading out, unseen until it ends, says nothing new): the same fields, the
vote and counts so far. A frame's start lines come before its update lines, then its end lines.
A consumer keeps the newest line per (stream, track_id); the `"start"` line is the first one a
track gets, the `"end"` line the last. Frames without a timestamp (images) bring no updates.

Each line also goes to the `listeners` (callables taking the line's dict), e.g. the MQTT sink's
`publish_text_event`. The tracks still live when a run is over end in `ending()`, which a
Pipeline calls on every sink before it closes any, so their lines reach the listeners' sinks
open in any order of `sinks` (used alone, `close()` ends them).

It reads the `track_id` column the tracking stage adds (and the texts, when the run reads, and
`track_split_from`: a track split from another, a new text shown in its place, starts with the
frames the other held back, so its start line's `first_frame` is that of the first of them and
the other's end line covers its own text's frames only; see tracking.py); a track ends when
the tracker lets it go (frames of its stream without it: the pipeline's `TextTracker.horizon`),
when its live stream loses its connection (`stream_lost`, as the outage begins; it comes back
with new track ids) or its frame size changes, or when the sink closes (the run is over).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

from dbnet.files import naming_the_file

from ..detections import Detections
from ..segments import SegmentedLines, Segments, checked_segments
from ..sinks import Sink
from ..sources import Frame
from .tracks import Track, TrackBook

START, UPDATE, END = "start", "update", "end"


class TextEventSink(Sink):
    """path: the JSON-lines file; lost_frames: frames unseen before a track ends (None: when
    the pipeline's tracker lets it go, `follow`; a default TextTracker's without a pipeline);
    every: seconds of stream time between a live track's update lines (None: start and end
    lines only); listeners: called with each line's dict once it is written; segments: a
    `Segments` (one file per segment of time, events-20261207T171500Z.jsonl: a track's lines go
    to the segment current when each is written, so one spanning a boundary has lines in both)."""

    def __init__(self, path: Union[str, os.PathLike], lost_frames: Optional[int] = None,
                 decimals: int = 2, every: Optional[float] = None,
                 listeners: Sequence[Callable[[dict], None]] = (),
                 segments: Optional[Segments] = None):
        listeners = _checked_arguments(lost_frames, every, listeners)
        segments = checked_segments(segments, "TextEventSink")  # before any folder is made
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.decimals, self.every = decimals, every
        self.listeners = list(listeners)
        self.lost_frames = lost_frames
        self.book = TrackBook() if lost_frames is None else TrackBook(lost_frames)
        # (stream, track id) -> (start, n): its next update is at start + n * every
        self._due: Dict[Tuple[int, int], Tuple[float, int]] = {}
        self._clock: Dict[int, float] = {}  # stream -> its latest timestamp
        # (stream, track id) -> its sightings when its last update was written: a track unseen
        # since (fading out, its last frames before it ends) has nothing new to say
        self._told: Dict[Tuple[int, int], int] = {}
        self.segments = segments
        self._fh = (open(self.path, "w", encoding="utf-8") if segments is None
                    else SegmentedLines(self.path, segments))
        self.lines = self.updates = 0

    def follow(self, tracker) -> None:
        """End tracks when `tracker` (the pipeline's TextTracker) does: a track ended sooner
        could be picked up again after its end line. The pipeline calls it as a run starts."""
        self.book.hold = tracker.book.hold  # its readings held back as the tracker's are
        if self.lost_frames is None:
            self.book.lost_frames = tracker.horizon
        elif self.lost_frames < tracker.horizon:
            raise ValueError(f"TextEventSink(lost_frames={self.lost_frames}) would end tracks "
                             f"the pipeline's tracker keeps for {tracker.horizon} unseen frames: "
                             "leave lost_frames out")

    def write(self, frame: Frame, detections: Detections) -> None:
        if self.segments is not None:
            self._fh.at(frame)
        ended = self.book.update(frame, detections)
        self._forget(ended)
        self._write(self.book.started, START)  # before anything can end them
        self._write(self._updates_due(frame), UPDATE)
        self._write(ended, END)

    def _forget(self, ended: Iterable[Track]) -> None:
        for track in ended:
            self._due.pop((track.stream, track.track_id), None)
            self._told.pop((track.stream, track.track_id), None)

    def _updates_due(self, frame: Frame) -> list:
        """The stream's live tracks whose next update time the frame's timestamp has reached."""
        if self.every is None or frame.timestamp is None:
            return []
        now, due = float(frame.timestamp), []
        if now < self._clock.get(frame.stream, now):  # the stream's clock restarted (a camera
            for track in self.book.live(frame.stream):  # reconnected): schedules restart too
                self._due[(track.stream, track.track_id)] = (now, 1)
        self._clock[frame.stream] = now
        for track in self.book.live(frame.stream):
            key = (track.stream, track.track_id)
            start = track.first_timestamp if track.first_timestamp is not None else now
            anchor, step = self._due.setdefault(key, (start, 1))
            # the microsecond: timestamps are kept to it, and 3 x 0.4 is 1.2000000000000002
            if now + 1e-6 >= anchor + step * self.every:
                if track.frames > self._told.get(key, 0):
                    due.append(track)
                    self._told[key] = track.frames
                # the next point of the track's N-second grid after now: a gap in the stream
                # skips the points it missed rather than writing them all at once
                self._due[key] = (anchor, math.floor((now + 1e-6 - anchor) / self.every) + 1)
        return due

    def _write(self, tracks: Iterable[Track], kind: str) -> None:
        wrote = 0
        for track in tracks:
            line = {"event": kind, **track.to_dict(self.decimals)}
            with naming_the_file(self.path):  # a full disk's error names no file
                self._fh.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            wrote += 1
            for listener in self.listeners:
                listener(line)
        if wrote:
            self.lines += wrote
            self.updates += wrote if kind == UPDATE else 0
            with naming_the_file(self.path):
                self._fh.flush()

    def end_stream(self, stream: int) -> None:
        ended = self.book.end_stream(stream)
        self._forget(ended)
        self._write(ended, END)

    def finish_segments(self, idle: bool = False) -> None:
        if self.segments is not None:
            self._fh.finish_over(self.segments.passed() if idle else self.segments.current())

    def stream_lost(self, stream: int) -> None:
        """The stream's tracks end as its outage begins (it comes back with new ones)."""
        self.end_stream(stream)

    def ending(self) -> None:
        """The run is over: every live track's end line (see the module's docstring)."""
        if not self._fh.closed:
            self._write(self.book.finish(), END)

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._write(self.book.finish(), END)
            finally:
                with naming_the_file(self.path):
                    self._fh.close()


def _checked_arguments(lost_frames, every, listeners) -> list:
    """every=, lost_frames= and listeners= checked when the sink is made (text, a float frame
    count or a listener that is not a function failed at the run's start or first line, in the
    pipeline's threads); the listeners as a list."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, numbers.Real)
                              or not every > 0):
        raise ValueError(f"TextEventSink every= must be a number of seconds > 0, got {every!r}")
    whole = isinstance(lost_frames, numbers.Integral) and not isinstance(lost_frames, bool)
    if lost_frames is not None and not (whole and lost_frames >= 1):
        raise ValueError(f"TextEventSink lost_frames= must be a number of frames >= 1 (or None), "
                         f"got {lost_frames!r}")
    listed = list(listeners) if isinstance(listeners, Iterable) and not callable(listeners) else None
    if listed is None or not all(callable(listener) for listener in listed):
        raise TypeError(f"TextEventSink listeners= takes a list of functions of a line's dict, "
                        f"got {listeners!r}")
    return listed
