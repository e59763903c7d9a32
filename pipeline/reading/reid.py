"""Re-identifying a text by its reading: ByteTrack matches boxes only, so a caption that zooms
or moves fast, or a word whose box jumps (the detector splitting or merging it for a frame),
loses its track and starts a new one while the old one is still kept as lost: one text, two
ids, two start / end event pairs. A new track whose first reading is like one of a track of
its stream lost a few frames before, and whose box is near that track's last one, continues it
instead (`continued_track`).
"""
from __future__ import annotations

from typing import Container, Iterable, Optional

import numpy as np

from .tracks import Track, text_likeness

# frames a lost track may go unseen before the new one's first sighting and still be continued
# (on the street captions video the new tracks came 0 and 2 frames after)
REID_FRAMES = 5
# near: the two boxes overlap once the lost one is grown this much about its centre (a
# caption zooming in or out keeps its centre; one moving fast moves by about its size)
NEAR_SCALE = 2.0
# one reading continues a track when its characters match one of the track's readings this
# much at least, in order, case aside: more than `same_text`'s half, which short words of
# other texts reach (`Open` / `Love` at a cut, `EASY` / `Fast`, `m` / `MP4`); `ast` / `Fast`
# match 0.86
LIKENESS = 2 / 3


def near(last: np.ndarray, box: np.ndarray, scale: float = NEAR_SCALE) -> bool:
    """Whether `box` (x0, y0, x1, y1) overlaps `last` grown `scale` times about its centre."""
    half = (last[2:] - last[:2]) * scale / 2 + (box[2:] - box[:2]) / 2
    apart = np.abs((last[:2] + last[2:]) / 2 - (box[:2] + box[2:]) / 2)
    return bool(np.all(apart < half))


def continued_track(tracks: Iterable[Track], box: np.ndarray, text: str, first_tick: int,
                    within: int, taken: Container[int]) -> Optional[Track]:
    """The track a new one continues: among `tracks`, one last seen before the new one's first
    sighting (`first_tick`: never two tracks seen in one frame) with at most `within` frames
    between, that no detection of this frame carries (`taken`), its last box near `box`, and
    reading like `text` (`LIKENESS`); the likeliest by reading, then the latest seen. None if
    none."""
    if not text or within < 0:
        return None
    fits = [(likeness(t, text), t.last_tick, t) for t in tracks
            if first_tick - within - 1 <= t.last_tick < first_tick and t.track_id not in taken
            and t.last_box is not None and near(t.last_box, box)]
    fits = [fit for fit in fits if fit[0] >= LIKENESS]
    return max(fits, key=lambda fit: fit[:2])[2] if fits else None


def likeness(track: Track, text: str) -> float:
    """How much `text` reads like one of `track`'s likeliest readings: the share of their
    characters that match, in order, case aside (1 for one it read)."""
    if text in track.votes:
        return 1.0
    return max((text_likeness(text, known) for known in track.likeliest()), default=0.0)
