"""`Region`: the region of interest (`dbrt run --roi X,Y,W,H`, `Detector(roi=...)`).

Only this part of each frame is resized onto the network input (at the resize rule's size for
the region, so small text there gets more pixels), and detections come back in full-frame
pixels. X,Y is the top-left corner and W,H the size, either in frame pixels (whole numbers:
`100,400,800,300`) or in fractions of the frame (written with a decimal point, each 0..1:
`0.1,0.5,0.8,0.4`), which fit sources of any size. A region reaching past the frame is clipped
to it; one that leaves nothing of a source's first frames is an error, one that leaves nothing
of its later frames of another size (a camera back at a lower resolution after a reconnect)
watches nothing of those (`RegionWatch`).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from engine.errors import ShapeError, warn_caller, without_credentials

Box = Tuple[int, int, int, int]  # x, y, w, h in frame pixels


class RegionError(ShapeError):
    """A region that cannot be used; `reason` is the message without the flag and region."""

    def __init__(self, region, reason: str, flag: str = "--roi"):
        super().__init__(f"{flag} {region}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Region:
    """x, y, w, h: frame pixels, or fractions of the frame when `fractions`; `flag`: the option
    its errors name (--roi, or --ignore for an ignore zone, pipeline.ignore)."""

    x: float
    y: float
    w: float
    h: float
    fractions: bool = False
    flag: str = field(default="--roi", compare=False, repr=False)

    def __post_init__(self):
        for name in ("x", "y", "w", "h"):  # NumPy's numbers as Python's: report.json is JSON
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
                object.__setattr__(self, name, int(value) if isinstance(value, numbers.Integral)
                                   else float(value))
        values = (self.x, self.y, self.w, self.h)
        if not all(math.isfinite(v) for v in values):
            raise RegionError(self, "X,Y,W,H must be finite numbers", self.flag)
        if self.w <= 0 or self.h <= 0:
            raise RegionError(self, "the region is empty (W and H must be > 0)", self.flag)
        if self.fractions and not all(0 <= v <= 1 for v in values):
            raise RegionError(self, "fractions of the frame lie from 0 to 1 (give frame pixels "
                                    "as whole numbers, e.g. 100,400,800,300)", self.flag)

    @classmethod
    def parse(cls, text: str, flag: str = "--roi") -> "Region":
        """'X,Y,W,H': whole numbers are frame pixels; any value with a decimal point makes the
        four of them fractions of the frame."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4:
            raise RegionError(text, "expected X,Y,W,H (four numbers)", flag)
        fractions = any("." in p or "e" in p.lower() for p in parts)
        try:
            values = [float(p) if fractions else int(p) for p in parts]
        except ValueError:
            raise RegionError(text, "expected X,Y,W,H (four numbers)", flag) from None
        return cls(*values, fractions=fractions, flag=flag)

    @classmethod
    def of(cls, value, flag: str = "--roi") -> Optional["Region"]:
        """A Region from what `roi=` takes: None, a Region, 'X,Y,W,H', or four numbers (all
        integers: frame pixels; any float: fractions of the frame); its errors name `flag`."""
        if value is None or isinstance(value, Region):
            return value if value is None or value.flag == flag else replace(value, flag=flag)
        if isinstance(value, str):
            return cls.parse(value, flag)
        try:
            values = list(value)
        except TypeError:
            values = []
        if len(values) != 4 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                       for v in values):
            raise ShapeError(f"{flag.lstrip('-')} must be (x, y, w, h) or 'X,Y,W,H', got {value!r}")
        pixels = all(isinstance(v, numbers.Integral) for v in values)
        return cls(*(int(v) if pixels else float(v) for v in values), fractions=not pixels,
                   flag=flag)

    def __str__(self) -> str:
        """X,Y,W,H as `parse` reads it back: fractions keep a decimal point (0.0,0,1,1 is the
        whole frame; 0,0,1,1 would be one pixel)."""
        if not self.fractions:
            return ",".join(str(v) for v in (self.x, self.y, self.w, self.h))
        parts = [f"{v:g}" for v in (self.x, self.y, self.w, self.h)]
        if not any("." in p or "e" in p for p in parts):
            parts[0] += ".0"
        return ",".join(parts)

    def describe(self) -> dict:
        """What report.json records: the region as given and its unit."""
        return dict(x=self.x, y=self.y, w=self.w, h=self.h,
                    unit="fraction" if self.fractions else "pixels")

    def in_frame(self, frame_h: int, frame_w: int) -> Box:
        """(x, y, w, h): the region in a frame of this size, clipped to it."""
        x0, x1 = self._span(self.x, self.w, frame_w)
        y0, y1 = self._span(self.y, self.h, frame_h)
        if x1 <= x0 or y1 <= y0:
            raise self.nothing_of(frame_h, frame_w)
        return x0, y0, x1 - x0, y1 - y0

    def nothing_of(self, frame_h: int, frame_w: int, whose: str = "this run") -> RegionError:
        """The error of a region that leaves nothing of frames of this size (`whose` they are)."""
        what = "watched" if self.flag == "--roi" else "ignored"
        return RegionError(self, f"{self.missed(frame_h, frame_w, whose)}: nothing of them would "
                                 f"be {what}", self.flag)

    def missed(self, frame_h: int, frame_w: int, whose: str = "this run") -> str:
        """Why the region leaves nothing of frames of this size (`whose` frames they are)."""
        where = "is less than a pixel of" if self.fractions and self._overlaps() else "lies outside"
        return f"the region {where} the {frame_w}x{frame_h} frames (W x H) of {whose}"

    def check_coded_size(self, width: int, height: int) -> None:
        """Before a video's first frame: RegionError when the region misses its frames upright
        and turned (a rotation tag turns them only as they are decoded)."""
        try:
            self.in_frame(width, height)  # turned a quarter
        except RegionError:
            self.in_frame(height, width)  # as coded; raises naming that size

    def _overlaps(self) -> bool:
        """Whether fractions of the frame meet it at all (before rounding to pixels)."""
        return all(start < 1 and start + length > 0
                   for start, length in ((self.x, self.w), (self.y, self.h)))

    def _span(self, start: float, length: float, size: int) -> Tuple[int, int]:
        if self.fractions:
            start, end = round(start * size), round((start + length) * size)
        else:
            start, end = int(start), int(start + length)
        return min(max(start, 0), size), min(max(end, 0), size)


_UNSEEN = object()


class SourcesMet:
    """What a frame size that a region (the region of interest, an ignore zone) leaves nothing
    of means, decided per source, not by which camera of a run happened to deliver first: a
    mistake in the flag, the region's RegionError naming the source, when that source's frames
    never had it; else a size the source went on to (a camera back at a lower resolution after
    a reconnect, a smaller image of a folder), whose frames go on, said in one warning per
    region, source and size. A frame's source is its stream where the run says it (a folder's
    images are one source), else its source's name; frames whose source is not said (a Python
    caller's, None) stand for every source."""

    def __init__(self, goes_on: str):
        self.goes_on = goes_on  # what the warning says becomes of such frames
        self._met: set = set()  # sources (None: not said) whose frames had every region
        self._warned: set = set()  # (region, source, h, w) of frames whose warning was given

    def check(self, missing: Sequence[Region], frame_h: int, frame_w: int, source=None,
              stream=None) -> bool:
        """Whether frames of this size of `source` (`stream`: which of the run's it is) had
        every region, none being `missing`; a RegionError when their source's frames never did."""
        which = source if stream is None else stream
        if not missing:
            self._met.add(which)
            return True
        whose = "this run" if source is None else without_credentials(str(source))
        if which not in self._met and None not in self._met:
            raise missing[0].nothing_of(frame_h, frame_w, whose)
        for region in missing:
            key = (region, source, frame_h, frame_w)
            if key not in self._warned:
                self._warned.add(key)
                # once a key here; the default filter (once a line) hid it from a later Detector
                warn_caller(f"{region.flag} {region}: {region.missed(frame_h, frame_w, whose)}: "
                            f"{self.goes_on}", every_time=True)
        return False


class RegionWatch:
    """A Detector's region of interest over the frame sizes it meets (none: all of every frame).

    A region that leaves nothing of a source's first frames is the RegionError of
    `Region.in_frame` (a mistake in --roi); once frames of a source had it, a size it misses is
    not an error that ends every stream of the run: nothing of those frames is watched
    (`SourcesMet`). They go through the network whole (they hold their place in a batch) and no
    detection of theirs is kept; keeping them instead would publish text from the parts of the
    view that the region leaves out. A region partly outside is clipped to the frames, whatever
    their size."""

    def __init__(self, region: Optional[Region]):
        self.region = region
        self._boxes: Dict[Tuple[int, int], Optional[Box]] = {}  # frame (h, w) -> box or None
        self._sources = SourcesMet("nothing of them is watched (they go on, without detections)")

    def box(self, frame_h: int, frame_w: int) -> Optional[Box]:
        """The region in frames of this size, clipped to them; None for all of the frame (no
        region, or a size that the region misses: `keep_watched` decides what that means)."""
        if self.region is None:
            return None
        box = self._boxes.get((frame_h, frame_w), _UNSEEN)
        if box is _UNSEEN:
            try:
                box = self.region.in_frame(frame_h, frame_w)
            except RegionError:
                box = None
            if len(self._boxes) >= 64:  # a folder of images of many sizes: keep it small
                self._boxes.clear()
            self._boxes[(frame_h, frame_w)] = box  # not read back: another thread may clear it
        return box

    def watches(self, frame_h: int, frame_w: int) -> bool:
        """Whether anything of frames of this size is detected in."""
        return self.region is None or self.box(frame_h, frame_w) is not None

    def first_read(self, frame_h: int, frame_w: int, source=None, stream=None) -> None:
        """A source's first frame read had this size (`Frame.first_size`: a live source may
        have dropped it before the run took a frame): decided as a frame of it would have been,
        a RegionError when the region misses it, else the source's later sizes go on."""
        if self.region is not None:
            missing = () if self.watches(frame_h, frame_w) else (self.region,)
            self._sources.check(missing, frame_h, frame_w, source, stream)

    def keep_watched(self, found: Sequence, letterboxes, sources: Optional[Sequence] = None,
                     streams: Optional[Sequence] = None) -> List:
        """Each frame's detections, none for a frame that is not watched (see `watches`);
        `sources`: each frame's source, which names it in the warning, and is the source unless
        `streams` says which it is (a folder's images are one source). A RegionError when the
        region misses the first frames of a frame's source."""
        if self.region is None:
            return list(found)
        kept = []
        for i, (detections, box) in enumerate(zip(found, letterboxes)):
            missing = () if self.watches(box.frame_h, box.frame_w) else (self.region,)
            if not self._sources.check(missing, box.frame_h, box.frame_w,
                                       None if sources is None else sources[i],
                                       None if streams is None else streams[i]):
                detections = detections[:0]
            kept.append(detections)
        return kept
