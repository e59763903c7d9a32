"""`TrackBook`: what is known about each text track of each stream, from the per-frame
detections that carry a `track_id` column: first / last frame and time, frame count, the best
polygon, and a reading that improves over frames.

The reading is a confidence-weighted vote: every frame's reading of a track adds its
`text_score` to that text's weight, and the text with the largest weight wins (or the whole
word a cut-off reading is part of: see votes.py), so one blurred frame cannot overturn twenty
sharp ones. Its confidence is the winner's weight divided by the number of frames read: the
mean confidence of the agreeing readings times the share of frames that agree.

A reading unlike every one the track voted for is held back, with the sightings after it, for
up to `hold` frames (the tracker's `change_frames` less one): a reading like the vote, or one
frame more, counts them as the track's; a detection carrying `track_split_from` moves them to
its new track (another text shown in place of this one), so neither vote mixes two texts.

A track ends when its stream has gone `lost_frames` frames without it, when the stream comes
back on a new connection (a reconnect: its clock may restart, its scene may have changed) or at
another frame size, or at `finish()`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..detections import Detections, polygon_record, score_record, timestamp_record
from ..sources import Frame
from ..sources.base import shown_source
from .votes import winner

TRACK_ID = "track_id"
# the track id a detection's new track split from on this frame (-1: none): see TextTracker
SPLIT_FROM = "track_split_from"
# different readings a track keeps votes for: a sign in view for days (one track while it is
# seen) gathers a new misreading now and then, for ever; the lightest goes when one more comes
MAX_TEXTS = 64
# a track's readings compared with a new one: its likeliest few (a long-lived track of a
# blurred word gathers many misreadings, each a few characters' comparison)
MAX_COMPARED = 8


def text_likeness(a: str, b: str) -> float:
    """The share of two readings' characters that match, in order, case aside."""
    return SequenceMatcher(None, a.casefold(), b.casefold()).ratio()


def same_text(a: str, b: str) -> bool:
    """Whether two readings can be one text: half their characters or more match, in order,
    case aside (a misread letter, a letter cut off or added by the box: `ast` / `Fast`,
    `BL` / `BLACK`; not `Fast` / `SIMPLE`)."""
    return text_likeness(a, b) >= 0.5


@dataclass
class Sighting:
    """One frame's instance of a track."""

    index: int
    timestamp: Optional[float]
    polygon: np.ndarray
    score: float
    text: Optional[str]
    text_score: float


@dataclass
class Track:
    """One text instance followed across the frames of one stream."""

    stream: int
    source: str
    track_id: int
    first_frame: int
    first_timestamp: Optional[float]
    last_frame: int = 0
    last_timestamp: Optional[float] = None
    frames: int = 0
    readings: int = 0
    best_polygon: Optional[np.ndarray] = None
    best_score: float = -1.0
    votes: Dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: Dict[str, int] = field(default_factory=lambda: defaultdict(int))  # readings per text
    last_tick: int = 0  # the stream's delivered-frame count at the last sighting
    held: List["Sighting"] = field(default_factory=list)  # not counted yet: see `add`
    last_box: Optional[np.ndarray] = None  # x0, y0, x1, y1 of the last sighting

    def add(self, frame: Frame, polygon: np.ndarray, score: float, text: Optional[str],
            text_score: float, tick: int = 0, hold: int = 0) -> None:
        """One sighting: counted at once, or held back (`held`, up to `hold` sightings in a
        row) while its reading is unlike every one the track voted for, until a reading like
        them, or one more sighting, settles them as the track's (misreadings), or the tracker
        moves them to a new track (`take_held`: another text shown in place of this one)."""
        self.last_tick = tick
        self.last_box = np.concatenate([polygon.min(0), polygon.max(0)])
        sighting = Sighting(frame.index, frame.timestamp, polygon, score, text, text_score)
        # a sighting without a reading says nothing on which text it is: it goes with the held
        unlike = self.unlike(text) if text else bool(self.held)
        if unlike and self.votes and len(self.held) < hold:
            self.held.append(sighting)
        else:
            self.settle()
            self._count(sighting)

    def unlike(self, text: str) -> bool:
        """Whether `text` is unlike every one of the track's likeliest readings."""
        if text in self.votes:  # most readings: one it had (alike, or the same misreading)
            return False
        return not any(same_text(text, known) for known in self.likeliest())

    def likeliest(self) -> List[str]:
        """The track's `MAX_COMPARED` heaviest readings, what a new reading is compared with."""
        return sorted(self.votes, key=self.votes.get, reverse=True)[:MAX_COMPARED]

    def read_before(self, text: str) -> bool:
        """Whether `text` is like one of the track's likeliest readings or one it holds."""
        return not self.unlike(text) or any(same_text(text, s.text) for s in self.held if s.text)

    def settle(self) -> None:
        """The held sightings counted as the track's (misreadings, or its last frames)."""
        held, self.held = self.held, []
        for sighting in held:
            self._count(sighting)

    def take_held(self, other: "Track") -> None:
        """`other`'s held sightings become this new track's first ones."""
        held, other.held = other.held, []
        if held:
            self.first_frame, self.first_timestamp = held[0].index, held[0].timestamp
        for sighting in held:
            self._count(sighting)

    def _count(self, s: "Sighting") -> None:
        self.last_frame, self.last_timestamp = s.index, s.timestamp
        self.frames += 1
        # a NaN confidence (an FP16 recognizer that overflowed) says nothing: it counts as 0
        score, text_score = (v if math.isfinite(v) else 0.0 for v in (s.score, s.text_score))
        quality = text_score if s.text is not None else score
        if quality > self.best_score:  # the polygon of the clearest sighting
            self.best_score, self.best_polygon = quality, s.polygon
        if s.text:
            self.readings += 1
            self.votes[s.text] += float(text_score)
            self.counts[s.text] += 1
            if len(self.votes) > MAX_TEXTS:  # the lightest cannot be the winner
                lightest = min(self.votes, key=self.votes.get)
                del self.votes[lightest], self.counts[lightest]

    @property
    def reading(self) -> Tuple[Optional[str], Optional[float]]:
        """(text, confidence) of the vote so far (see votes.py); (None, None) before any
        reading (null and null in every output: no text has no confidence either)."""
        text, weight = winner(self.votes, self.counts)
        return (None, None) if text is None else (text, weight / max(self.readings, 1))

    def to_dict(self, decimals: int = 2) -> dict:
        """The track's event line, its numbers written as the result lines write theirs."""
        text, confidence = self.reading
        return {"stream": self.stream, "source": self.source, "track_id": self.track_id,
                "text": text, "confidence": None if text is None else score_record(confidence),
                "first_timestamp": timestamp_record(self.first_timestamp),
                "last_timestamp": timestamp_record(self.last_timestamp),
                "first_frame": self.first_frame, "last_frame": self.last_frame,
                "frames": self.frames, "readings": self.readings,
                "polygon": polygon_record(self.best_polygon, decimals)}


def epoch(frame: Frame) -> tuple:
    """What a stream's tracks live within: one connection at one frame size."""
    return frame.size, frame.connection


class TrackBook:
    """Per stream, the live tracks; `update` returns the tracks that ended, and leaves in
    `started` those that the frame began (first seen with their track id), in the frame's
    order."""

    def __init__(self, lost_frames: int = 31, hold: int = 2):
        self.lost_frames = lost_frames
        self.hold = hold  # sightings a track holds back: see Track.add (TextTracker's, less 1)
        self._live: Dict[int, Dict[int, Track]] = defaultdict(dict)
        self._epochs: Dict[int, tuple] = {}  # stream -> (frame size, connection)
        # frames delivered per stream: "unseen for N frames" counts what the tracker saw, not
        # frame indices, which a live source that drops frames skips
        self._ticks: Dict[int, int] = defaultdict(int)
        self.started: List[Track] = []

    def update(self, frame: Frame, detections: Detections) -> List[Track]:
        ended, self.started = [], []
        if self._epochs.get(frame.stream, epoch(frame)) != epoch(frame):
            ended += self.end_stream(frame.stream)
        self._epochs[frame.stream] = epoch(frame)
        self._ticks[frame.stream] += 1
        tick = self._ticks[frame.stream]
        live = self._live[frame.stream]
        ids = detections.data.get(TRACK_ID)
        if ids is not None:
            texts, text_scores = detections.texts, detections.text_scores
            split_from = detections.data.get(SPLIT_FROM)
            for k, track_id in enumerate(ids.tolist()):
                if track_id < 0:
                    continue
                track = live.get(track_id)
                if track is None:
                    track = live[track_id] = Track(frame.stream, shown_source(frame.source),
                                                   track_id, frame.index, frame.timestamp)
                    self.started.append(track)
                    parent = None if split_from is None else live.get(int(split_from[k]))
                    if parent is not None:
                        track.take_held(parent)
                track.add(frame, detections.polygons[k], float(detections.scores[k]),
                          texts[k] if texts else None,
                          float(text_scores[k]) if len(text_scores) else 0.0, tick, self.hold)
        gone = [t for t, track in live.items() if tick - track.last_tick >= self.lost_frames]
        ended += [live.pop(t) for t in gone]
        for track in ended:
            track.settle()
        return ended

    def frames_seen(self, stream: int) -> int:
        """Frames of `stream` the book was given (its clock for "unseen for N frames")."""
        return self._ticks.get(stream, 0)

    def reading(self, stream: int, track_id: int) -> Tuple[Optional[str], Optional[float]]:
        track = self.track(stream, track_id)
        return (None, None) if track is None else track.reading

    def track(self, stream: int, track_id: int) -> Optional[Track]:
        """The stream's live track `track_id`, or None."""
        return self._live.get(stream, {}).get(track_id)

    def live(self, stream: int) -> List[Track]:
        """The stream's live tracks, oldest first."""
        return list(self._live.get(stream, {}).values())

    def end_stream(self, stream: int) -> List[Track]:
        """The stream's live tracks, ended (it reconnected, changed size, or ended)."""
        live = sorted(self._live.pop(stream, {}).values(), key=lambda t: t.track_id)
        for track in live:
            track.settle()
        return live

    def finish(self) -> List[Track]:
        """Every live track, ended (the run is over)."""
        ended = []
        for stream in sorted(self._live):
            ended += self.end_stream(stream)
        return ended
