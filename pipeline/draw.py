"""Annotators: draw detections onto a frame (supervision style: configure once, `annotate` many)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from engine.errors import ShapeError

from .detections import Detections
from .preprocess import as_bgr
from .ignore import IgnoreZones
from .region import Region

Color = Tuple[int, int, int]  # BGR


@dataclass(frozen=True)
class PolygonAnnotator:
    """Outlines every polygon; optionally writes its score next to its first point."""

    color: Color = (0, 255, 0)
    thickness: int = 2
    show_score: bool = False
    font_scale: float = 0.5

    def annotate(self, scene: np.ndarray, detections: Detections) -> np.ndarray:
        """Draws in place on `scene` (BGR uint8) and returns it."""
        if not len(detections):
            return scene
        polys = [np.round(p).astype(np.int32).reshape(-1, 1, 2) for p in detections.polygons]
        cv2.polylines(scene, polys, isClosed=True, color=self.color, thickness=self.thickness,
                      lineType=cv2.LINE_AA)
        if self.show_score:
            for poly, score in zip(polys, detections.scores):
                x, y = poly[0, 0]
                cv2.putText(scene, f"{score:.2f}", (int(x), max(10, int(y) - 3)),
                            cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, self.color, 1, cv2.LINE_AA)
        return scene


@dataclass(frozen=True)
class BannerAnnotator:
    """A line of text in the top-left corner (e.g. a warning that the model is untrained)."""

    text: str
    color: Color = (0, 0, 255)
    font_scale: float = 0.6

    def annotate(self, scene: np.ndarray, detections: Optional[Detections] = None) -> np.ndarray:
        (w, h), base = cv2.getTextSize(self.text, cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, 1)
        cv2.rectangle(scene, (0, 0), (w + 8, h + base + 8), (0, 0, 0), thickness=-1)
        cv2.putText(scene, self.text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, self.font_scale,
                    self.color, 1, cv2.LINE_AA)
        return scene


@dataclass(frozen=True)
class RegionAnnotator:
    """Outlines the region of interest (a Detector's `roi`), so that a viewer sees which part
    of the frame is watched; a frame the region misses gets no outline. `region` takes what
    `Detector(roi=)` takes; None (a Detector without a region: all of the frame) draws nothing."""

    region: Optional[Region]
    color: Color = (0, 200, 255)
    thickness: int = 2

    def __post_init__(self):  # a bad region fails here, not in the sink thread's first frame
        object.__setattr__(self, "region", Region.of(self.region))

    def annotate(self, scene: np.ndarray, detections: Optional[Detections] = None) -> np.ndarray:
        if self.region is None:
            return scene
        try:
            x, y, w, h = self.region.in_frame(*scene.shape[:2])
        except ShapeError:  # the detector names the error; the picture is drawn as it is
            return scene
        cv2.rectangle(scene, (x, y), (x + w - 1, y + h - 1), self.color, self.thickness)
        return scene


@dataclass(frozen=True)
class IgnoreAnnotator:
    """Outlines the ignore zones (a Detector's `ignore`) dashed, in another colour than the
    region of interest's solid outline, so that a viewer sees which text is left out; a zone a
    frame misses is not drawn. `zones` takes what `Detector(ignore=)` takes."""

    zones: object
    color: Color = (255, 0, 255)
    thickness: int = 2
    dash: int = 8  # pixels drawn, then as many skipped

    def __post_init__(self):  # a bad zone fails here, not in the sink thread's first frame
        object.__setattr__(self, "zones", IgnoreZones.of(self.zones))

    def annotate(self, scene: np.ndarray, detections: Optional[Detections] = None) -> np.ndarray:
        for zone in self.zones:
            try:
                x, y, w, h = zone.in_frame(*scene.shape[:2])
            except ShapeError:  # the detector names the error; the picture is drawn as it is
                continue
            x1, y1 = x + w - 1, y + h - 1
            for a, b in (((x, y), (x1, y)), ((x1, y), (x1, y1)), ((x1, y1), (x, y1)), ((x, y1), (x, y))):
                self._dashed(scene, a, b)
        return scene

    def _dashed(self, scene: np.ndarray, a, b) -> None:
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in range(0, length + 1, 2 * self.dash):
            end = min(start + self.dash, length)
            p, q = (_along(a, b, start, length), _along(a, b, end, length))
            cv2.line(scene, p, q, self.color, self.thickness)


def _along(a, b, step: int, length: int) -> Tuple[int, int]:
    """The point `step` pixels from a towards b (an axis-parallel line of `length` pixels)."""
    if length == 0:
        return a
    return (a[0] + (b[0] - a[0]) * step // length, a[1] + (b[1] - a[1]) * step // length)


def region_annotators(detector) -> list:
    """Outlines of a Detector's region of interest and ignore zones (the boxes go over them)."""
    roi, ignore = getattr(detector, "roi", None), getattr(detector, "ignore", None)
    return (([RegionAnnotator(roi)] if roi is not None else [])
            + ([IgnoreAnnotator(ignore)] if ignore else []))


def annotate(image: np.ndarray, detections: Detections, annotators=None) -> np.ndarray:
    """A copy of `image` with `detections` drawn by `annotators` (None: green outlines; an
    empty list draws nothing); a grey frame (a Source of one's own) is drawn on in colour, as
    the detector takes it, so every sink gets a BGR picture."""
    scene = as_bgr(image)
    scene = scene.copy() if scene is image else scene
    for annotator in (PolygonAnnotator(),) if annotators is None else annotators:
        scene = annotator.annotate(scene, detections)
    return scene
