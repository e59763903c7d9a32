"""Annotators: draw detections onto a frame (supervision style: configure once, `annotate` many)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from engine.errors import ShapeError

from .detections import Detections
from .preprocess import as_bgr
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


def annotate(image: np.ndarray, detections: Detections, annotators=None) -> np.ndarray:
    """A copy of `image` with `detections` drawn by `annotators` (None: green outlines; an
    empty list draws nothing); a grey frame (a Source of one's own) is drawn on in colour, as
    the detector takes it, so every sink gets a BGR picture."""
    scene = as_bgr(image)
    scene = scene.copy() if scene is image else scene
    for annotator in (PolygonAnnotator(),) if annotators is None else annotators:
        scene = annotator.annotate(scene, detections)
    return scene
