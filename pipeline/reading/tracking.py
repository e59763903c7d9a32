"""`TextTracker`: follows text instances across the frames of each stream with supervision's
ByteTrack on the polygons' axis-aligned boxes, and adds per-instance columns:

    track_id          int, -1 for an instance no track took (yet)
    track_text        the track's voted reading so far (when the frame was read; see tracks.py),
                      None (JSON null) while the track has none, or for an instance no track took
    track_text_score  its confidence, NaN (JSON null) where track_text is None
    track_split_from  (when the frame was read) the id of the track this instance's new track
                      split from on this frame (see below), -1 otherwise

ByteTrack is supervision's (0.30.x): its successor, the `trackers` package, requires
opencv-python, which cannot be installed next to the opencv-python-headless dbrt uses. A stream
that reconnects or whose frame size changes starts with a fresh tracker (its old tracks end).

ByteTrack matches boxes only: a track it has lost keeps its place for `lost_frames` frames and
takes whatever shows up there, e.g. the next caption of a video, or another sign after a cut.
With reading on, a track picked up again after frames unseen whose reading is unlike every one
it had (`same_text`) is a new text at the same place: it gets a new id, and the old one ends
with its own frames and vote. A track seen all along whose readings turn unlike every one it
voted for, and alike, for `change_frames` frames in a row (3: the next caption shown in place of
the last on the very next frame) splits: those frames go to a new id, which the detections of
the frame that decides it carry with the old id in `track_split_from`, and the old track ends
with the frames before (its books held those frames back from its vote and counts: see
`Track.add`; the result lines of the frames before the split gave them the old id). Fewer
frames (a misreading), readings unlike each other (a blurred word), a part of the word, a text
the track read before, or a track read fewer than `change_frames` times keep the id.

The other way round, ByteTrack starts a new track where a text's box changes more than it
follows (a caption zooming or moving fast, a word whose box jumps as the detector splits or
merges it) while it keeps the old one as lost: with reading on, a new track whose first reading
is like one of a track of its stream lost at most `reid_frames` frames before, never seen in
one frame with it, near its last box, continues its id (see reid.py).
"""
from __future__ import annotations

import numbers
import warnings
from typing import Dict, Optional, Tuple

import numpy as np

from engine.lazy import require

from ..detections import Detections
from ..sources import Frame
from .reid import REID_FRAMES, continued_track
from .tracks import SPLIT_FROM, TRACK_ID, TrackBook, epoch, same_text


class TextTracker:
    """One ByteTrack per stream; call it with each frame's detections, in order per stream.

    lost_frames: frames a track may go unseen and still be picked up again
    activation:  ByteTrack's track_activation_threshold: a detection scoring at least this much
                 continues a track, one scoring 0.1 more starts one (lower ones, above 0.1,
                 only continue a track seen in the frame before that they overlap by IoU 0.5)
    match:       ByteTrack's minimum_matching_threshold: a track and a detection match where
                 1 - IoU x the detection's score is at most this; DBNet's box scores (about 0.4
                 to 0.7) make 0.8 an IoU of about 0.3 to 0.5 (0.6 asks for 0.6 to 1: on the
                 lightbox video 65 tracks for its 4 texts, against 8 at 0.8)
    change_frames: readings in a row unlike a track's vote, and alike, that make another text
                 shown in its place (a new track from the first of them)
    reid_frames: frames a lost track may go unseen before a new track's first sighting and
                 still be continued by it (reading alike, near its last box; -1: never)
    """

    def __init__(self, lost_frames: int = 30, activation: float = 0.25, match: float = 0.8,
                 change_frames: int = 3, reid_frames: int = REID_FRAMES):
        for name, value, least in (("lost_frames", lost_frames, 2),
                                   ("change_frames", change_frames, 2),
                                   ("reid_frames", reid_frames, -1)):
            if not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"TextTracker {name} must be an integer >= {least}, got {value}")
        lost_frames, self.change_frames = int(lost_frames), int(change_frames)
        self.reid_frames = int(reid_frames)
        self.sv = require("supervision")
        self.lost_frames, self.activation, self.match = lost_frames, activation, match
        # unseen this many frames, a track has ended for good: its end event and vote close
        self.horizon = lost_frames + 1
        self._trackers: Dict[int, object] = {}
        self._epochs: Dict[int, tuple] = {}  # stream -> (frame size, connection)
        # a consumer keys events by stream and track id, so an id is never given out again:
        # per stream, ByteTrack's id -> the one given out (from one counter, across restarts,
        # whose ByteTrack counts from 1 again), and the ids given out that have ended (-> the
        # frame they ended at, ByteTrack's id): supervision's ByteTrack can pick a track up
        # a frame or two after letting it go, and that one gets a new id
        self._given: Dict[int, Dict[int, int]] = {}
        self._last_id: Dict[int, int] = {}
        self._ended: Dict[int, Dict[int, Tuple[int, int]]] = {}
        # per stream, ByteTrack's ids whose track another continued (-> the frame it did): one
        # ByteTrack picks up again is new to the tracker (see `_id_for`)
        self._retired: Dict[int, Dict[int, int]] = {}
        self.book = TrackBook(self.horizon, hold=self.change_frames - 1)
        self.restarts = 0  # streams that reconnected or changed frame size mid-run

    def lead(self, sinks) -> None:
        """The text-event sinks among `sinks` end a track when this tracker lets it go."""
        from ..sinks import sinks_within
        from .events import TextEventSink

        for sink in sinks_within(sinks):  # one a FilteredSink wraps too
            if isinstance(sink, TextEventSink):
                sink.follow(self)

    def _tracker_for(self, frame: Frame):
        known = self._epochs.get(frame.stream)
        if known is not None and known != epoch(frame):
            self._trackers.pop(frame.stream, None)
            self._given[frame.stream], self._ended[frame.stream] = {}, {}
            self._retired[frame.stream] = {}
            self.book.end_stream(frame.stream)  # no new track continues one of before
            self.restarts += 1
        self._epochs[frame.stream] = epoch(frame)
        tracker = self._trackers.get(frame.stream)
        if tracker is None:
            with warnings.catch_warnings():  # deprecated in supervision in favour of `trackers`
                warnings.simplefilter("ignore", FutureWarning)
                # supervision 0.30 keeps a removed track in its pool one frame more: with a
                # buffer of N it picks a track up after N + 1 unseen frames
                tracker = self.sv.ByteTrack(track_activation_threshold=self.activation,
                                            lost_track_buffer=self.lost_frames - 1,
                                            minimum_matching_threshold=self.match, frame_rate=30)
            self._trackers[frame.stream] = tracker
        return tracker

    def __call__(self, frame: Frame, detections: Detections) -> Detections:
        tracker = self._tracker_for(frame)
        ids = np.full(len(detections), -1, np.int64)
        boxes = self.sv.Detections(xyxy=detections.boxes_xyxy.astype(np.float32).reshape(-1, 4),
                                   confidence=detections.scores.copy(),
                                   data={"index": np.arange(len(detections))})
        tracked = tracker.update_with_detections(boxes)
        stream = frame.stream
        texts = detections.texts
        picked = (list(zip(tracked.data["index"].tolist(), tracked.tracker_id.tolist()))
                  if len(tracked) else [])
        split_from = np.full(len(detections), -1, np.int64)
        # the ids this frame's detections carry on from ByteTrack: no new track continues them
        taken = {self._given.get(stream, {}).get(int(b)) for _, b in picked}
        xyxy, now = boxes.xyxy, self.book.frames_seen(stream) + 1  # the tick this frame gets
        for k, bytetrack_id in picked:
            ids[k] = self._id_for(stream, int(bytetrack_id), xyxy[k],
                                  texts[k] if texts else "", now, taken)
            if texts and self._another_text(stream, int(ids[k]), texts[k]):
                ids[k] = self._new_id(stream, int(bytetrack_id))
            elif texts and self._text_changed(stream, int(ids[k]), texts[k]):
                split_from[k], ids[k] = ids[k], self._new_id(stream, int(bytetrack_id))
            taken.add(int(ids[k]))
        data = dict(detections.data)
        data[TRACK_ID] = ids
        if texts:
            data[SPLIT_FROM] = split_from
        out = Detections(detections.polygons, detections.scores, data)
        self._note_ended(stream, self.book.update(frame, out), self.book.frames_seen(stream))
        if out.texts:
            votes = [self.book.reading(frame.stream, int(t)) for t in ids]
            data["track_text"] = np.asarray([text for text, _ in votes], dtype=object)
            data["track_text_score"] = np.asarray([np.nan if c is None else c for _, c in votes],
                                                  np.float32)
            out = Detections(detections.polygons, detections.scores, data)
        return out


    def _id_for(self, stream: int, bytetrack_id: int, box: np.ndarray, text: str, now: int,
                taken: set) -> int:
        """The id given out for ByteTrack's `bytetrack_id`: for a track never seen, or seen and
        ended, that of a live track whose text it continues (see reid.py), else a new one."""
        given, ended = self._given.setdefault(stream, {}), self._ended.setdefault(stream, {})
        track_id = given.get(bytetrack_id)
        if track_id is not None and track_id not in ended:
            return track_id
        # ByteTrack reports a new track on its 2nd sighting: it was first seen a frame before;
        # one it let go of (ended, or retired when another continued its text) only now
        retired = self._retired.setdefault(stream, {}).pop(bytetrack_id, None) is not None
        first = now if track_id is not None or retired else now - 1
        track = continued_track(self.book.live(stream), box, text, first, self.reid_frames,
                                taken)
        if track is None:
            return self._new_id(stream, bytetrack_id)
        for other in [b for b, t in given.items() if t == track.track_id]:
            del given[other]  # picked up again, it is a new track (or continues one)
            self._retired[stream][other] = now
        given[bytetrack_id] = track.track_id
        return track.track_id

    def _new_id(self, stream: int, bytetrack_id: int) -> int:
        """A new id for ByteTrack's `bytetrack_id` from now on (the one it had, if any, ends
        once unseen for `horizon` frames)."""
        track_id = self._given[stream][bytetrack_id] = self._last_id[stream] = \
            self._last_id.get(stream, 0) + 1
        return track_id

    def _another_text(self, stream: int, track_id: int, text: str) -> bool:
        """Whether ByteTrack picked track `track_id` up again, after frames unseen, on a text
        unlike all it has read: a one-frame misreading of a track seen all along (`#` read as
        `井`) keeps its id; a text it read before (the same misreading again) too."""
        track = self.book.track(stream, track_id)
        if not text or track is None or not track.votes:
            return False
        if track.last_tick == self.book.frames_seen(stream):  # seen in the frame before this
            return False
        return not track.read_before(text)

    def _text_changed(self, stream: int, track_id: int, text: str) -> bool:
        """Whether track `track_id`, seen all along, now reads another text: its last
        `change_frames` readings (this one too) unlike all it voted for, and alike, after
        at least as many settled readings (a new caption shown in place of the last one)."""
        track = self.book.track(stream, track_id)
        if not text or track is None or track.readings < self.change_frames:
            return False
        held = [s.text for s in track.held if s.text]
        return (len(track.held) + 1 >= self.change_frames and track.unlike(text)
                and all(same_text(text, other) for other in held))

    def _note_ended(self, stream: int, tracks, tick: int) -> None:
        """Remember the ids that ended, and forget those ByteTrack can no longer pick up."""
        given, ended = self._given.setdefault(stream, {}), self._ended.setdefault(stream, {})
        bytetrack_ids = {v: k for k, v in given.items()} if tracks else {}
        for track in tracks:
            ended[track.track_id] = (tick, bytetrack_ids.get(track.track_id))
        while ended:  # oldest first (each id ends once): stop at the first still remembered
            track_id, (when, bytetrack_id) = next(iter(ended.items()))
            if tick - when <= 2 * self.horizon:  # ByteTrack may still pick it up
                break
            del ended[track_id]
            if given.get(bytetrack_id) == track_id:
                del given[bytetrack_id]
        retired = self._retired.setdefault(stream, {})
        for bytetrack_id in [b for b, when in retired.items() if tick - when > 2 * self.horizon]:
            del retired[bytetrack_id]


def tracker_for(track) -> Optional[TextTracker]:
    """The TextTracker a pipeline's `track=` asks for: True for a default one, or the given
    one; None for no tracking."""
    if isinstance(track, TextTracker):
        return track
    if not isinstance(track, (bool, np.bool_, numbers.Integral, type(None))):
        raise TypeError(f"track= takes True, False or a TextTracker, got {track!r}")
    return TextTracker() if track else None
