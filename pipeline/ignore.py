"""`IgnoreZones`: parts of the frame whose text is not wanted (`dbrt run --ignore X,Y,W,H`,
repeatable; `Detector(ignore=[...])`): what a camera burns into every frame (its clock, its name,
a channel logo, a scoreboard), found again on every frame.

Each zone is written as `--roi` is (pipeline.region: whole numbers are frame pixels, values
with a decimal point fractions of the frame) and always lies in frame coordinates, whatever the
region of interest. The network still sees the zones (text across a zone's edge is detected
whole); a detection mostly inside them is dropped after post-processing, before it is read,
tracked or written, and counted.
"""
from __future__ import annotations

import numbers
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from engine.errors import ShapeError

from .detections import Detections
from .polygons import area_inside_boxes, polygon_area
from .region import Region, RegionError, SourcesMet

FLAG = "--ignore"

# A detection is ignored when at least half of its area lies inside the zones (their union), the
# rule of the evaluation's "do not care" regions (pipeline.evaluate). Not "wholly inside": DB's
# unclipped box reaches past text by about half its height, so a zone drawn tightly around a
# clock would keep the clock's box; not "touching": a street sign whose box clips a zone's corner
# stays.
MOSTLY_INSIDE = 0.5


class IgnoreZones:
    """The ignore zones of a Detector (none: false, and nothing is dropped)."""

    def __init__(self, zones: Sequence = ()):
        self.regions: Tuple[Region, ...] = tuple(_zone(z) for z in zones)
        # frame (h, w) -> (k, 4) x0 y0 x1 y1 of the zones in it, and the zones it misses
        self._boxes: Dict[Tuple[int, int], Tuple[np.ndarray, Tuple[Region, ...]]] = {}
        self._sources = SourcesMet("nothing of them lies there to ignore; it is left out of "
                                   "those frames")

    @classmethod
    def of(cls, value) -> "IgnoreZones":
        """What `ignore=` takes: None, zones as `roi=` takes one each ((x, y, w, h), 'X,Y,W,H',
        a Region), a list of them, or IgnoreZones."""
        if isinstance(value, IgnoreZones):
            return value
        if value is None:
            return cls()
        if isinstance(value, (str, bytes, Mapping, Region)) or _four_numbers(value):
            return cls([value])  # one zone (bytes, a dict: refused as one, not letter by letter)
        try:
            return cls(list(value))
        except TypeError:
            return cls([value])  # not a list: Region.of names what it takes

    def __bool__(self) -> bool:
        return bool(self.regions)

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def __str__(self) -> str:
        return " ".join(f"{FLAG} {z}" for z in self.regions)

    def describe(self) -> List[dict]:
        """What report.json records (model.ignore): each zone as given and its unit."""
        return [zone.describe() for zone in self.regions]

    def boxes(self, frame_h: int, frame_w: int, source=None, stream=None) -> np.ndarray:
        """(k, 4) float64 x0, y0, x1, y1 of the zones in a frame of this size, clipped to it;
        `source`: whose frame it is, `stream`: which of the run's sources (RegionWatch). A zone
        that leaves nothing of a source's first frames is a RegionError naming --ignore and the
        source (a mistake); once a source's frames had every zone, a size that a zone misses (a
        camera back at a lower resolution after a reconnect, a smaller image) leaves that zone
        out of those frames, with one warning per source and size: nothing of them lies there to
        ignore, and a 24/7 run ended by it lost every stream (`SourcesMet`)."""
        key = (frame_h, frame_w)
        sized = self._boxes.get(key)
        if sized is None:
            if len(self._boxes) >= 64:  # a folder of images of many sizes: keep it small
                self._boxes.clear()
            sized = self._in_frame(frame_h, frame_w)
            self._boxes[key] = sized  # not read back: another thread may clear the cache now
        boxes, missing = sized
        self._sources.check(missing, frame_h, frame_w, source, stream)
        return boxes

    def _in_frame(self, frame_h: int, frame_w: int) -> Tuple[np.ndarray, Tuple[Region, ...]]:
        rects, missing = [], []
        for zone in self.regions:
            try:
                rects.append(zone.in_frame(frame_h, frame_w))
            except RegionError:
                missing.append(zone)
        boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in rects], np.float64).reshape(-1, 4)
        return boxes, tuple(missing)

    def check_coded_size(self, width: int, height: int) -> None:
        """Before a video's first frame: a zone that misses its frames is a RegionError."""
        for zone in self.regions:
            zone.check_coded_size(width, height)

    def inside(self, detections: Detections, frame_h: int, frame_w: int, source=None,
               stream=None) -> np.ndarray:
        """(n,) booleans: which detections lie mostly inside the zones. Cheap: bounding boxes
        sort out, at once, those that miss every zone (most) and those wholly in one zone; only
        the rest have their area inside the zones' union clipped (pyclipper)."""
        mask = np.zeros(len(detections), bool)
        if not self.regions:
            return mask
        zones = self.boxes(frame_h, frame_w, source, stream)  # checked with no detections too
        if not len(detections):
            return mask
        xyxy = detections.boxes_xyxy.astype(np.float64)
        meets = ((xyxy[:, None, :2] < zones[None, :, 2:]) & (zones[None, :, :2] < xyxy[:, None, 2:])).all(2)
        within = ((zones[None, :, :2] <= xyxy[:, None, :2]) & (xyxy[:, None, 2:] <= zones[None, :, 2:])).all(2)
        mask[within.any(1)] = True
        for i in np.flatnonzero(meets.any(1) & ~mask):
            polygon = detections.polygons[i]
            area = polygon_area(polygon)
            mask[i] = area > 0 and area_inside_boxes(polygon, zones[meets[i]]) >= MOSTLY_INSIDE * area
        return mask

    def first_read(self, frame_h: int, frame_w: int, source=None, stream=None) -> None:
        """A source's first frame read had this size (see RegionWatch.first_read)."""
        if self.regions:
            self.boxes(frame_h, frame_w, source, stream)

    def drop(self, detections: Detections, frame_h: int, frame_w: int, source=None,
             stream=None) -> Tuple[Detections, int]:
        """The detections without those mostly inside the zones, and how many those were."""
        inside = self.inside(detections, frame_h, frame_w, source, stream)
        count = int(inside.sum())
        return (detections[~inside] if count else detections), count

    def drop_in_frames(self, found: Sequence[Detections], letterboxes,
                       dropped: Optional[list] = None, sources: Optional[Sequence] = None,
                       streams: Optional[Sequence] = None) -> List[Detections]:
        """`drop` on each frame's detections (the letterboxes give the frame sizes); `dropped`,
        a list, receives each frame's count; `sources`, `streams`: whose each frame is (`boxes`)."""
        if not self.regions:  # every frame of a run without --ignore comes here: nothing to do
            if dropped is not None:
                dropped.extend([0] * len(found))
            return list(found)
        kept = []
        for i, (detections, box) in enumerate(zip(found, letterboxes)):
            detections, count = self.drop(detections, box.frame_h, box.frame_w,
                                          None if sources is None else sources[i],
                                          None if streams is None else streams[i])
            kept.append(detections)
            if dropped is not None:
                dropped.append(count)
        return kept


def _zone(value) -> Region:
    """One zone as Region.of takes it; None, which means no region of interest there, is no
    zone (a list's None would be taken as one, then fail in describe() or the first frame)."""
    if value is None:
        raise ShapeError("ignore must be (x, y, w, h) or 'X,Y,W,H' for each zone, got None "
                         "in the list (no zones: ignore=None or [])")
    return Region.of(value, FLAG)


def _four_numbers(value) -> bool:
    """(x, y, w, h) of one zone, not a list of four zones."""
    return (isinstance(value, (tuple, list, np.ndarray)) and len(value) == 4
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value))
