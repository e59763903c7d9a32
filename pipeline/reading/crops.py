"""Text crops for a recognizer: every polygon rectified to the recognizer's height, on the CPU
with OpenCV.

A quad is warped straight to its crop (one perspective transform per quad, so one resampling);
a polygon of more points is first replaced by its minimum-area rectangle. A crop much taller than
wide (vertical text, height >= 1.5 x width) is turned a quarter counter-clockwise, as PaddleOCR
does. Crops are planned first from the corners alone (`plan_crops`), so a frame's crops can be
sorted by width and cut batch by batch: similar widths share a batch (little padding) and memory
stays bounded whatever the number of texts. Quads can be grown by a margin first (`pad_quads`):
a recognizer trained on loose crops reads the first and last letters of a tight box better with
some background around them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..postprocess.geometry import order_quads

TALL_RATIO = 1.5
MIN_SIDE = 1.0  # a quad with a side shorter than this (pixels) rectifies to nothing


def reading_quads(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 4, 2) float32 quads in reading order (top-left, top-right, bottom-right,
    bottom-left): quads as they are, other polygons as their minimum-area rectangle."""
    quads = np.zeros((len(polygons), 4, 2), np.float32)
    for i, poly in enumerate(polygons):
        poly = np.asarray(poly, np.float32)
        quads[i] = poly if len(poly) == 4 else cv2.boxPoints(cv2.minAreaRect(poly))
    return order_quads(quads) if len(quads) else quads


def pad_quads(quads: np.ndarray, margin: float) -> np.ndarray:
    """Ordered quads (TL, TR, BR, BL) grown outward by `margin` x their short side on every
    side, along their own axes (a rotated quad stays rotated, a tall one grows as a flat one)."""
    quads = np.asarray(quads, np.float32).reshape(-1, 4, 2)
    if margin <= 0 or not len(quads):
        return quads
    along = (quads[:, 1] - quads[:, 0]) + (quads[:, 2] - quads[:, 3])   # twice the width axis
    across = (quads[:, 3] - quads[:, 0]) + (quads[:, 2] - quads[:, 1])  # twice the height axis
    long_along = np.linalg.norm(along, axis=1, keepdims=True)
    long_across = np.linalg.norm(across, axis=1, keepdims=True)
    step = margin * np.minimum(long_along, long_across) / 2
    u = along * (step / np.maximum(long_along, 1e-6))
    v = across * (step / np.maximum(long_across, 1e-6))
    return (quads + _GROW_U * u[:, None] + _GROW_V * v[:, None]).astype(np.float32)


_GROW_U = np.float32([-1, 1, 1, -1])[None, :, None]   # TL, BL move left; TR, BR right
_GROW_V = np.float32([-1, -1, 1, 1])[None, :, None]   # TL, TR move up; BR, BL down


@dataclass(frozen=True)
class CropPlan:
    """Per quad: the source corners in crop order, the crop's width at the recognizer's height,
    and whether it is usable (a degenerate quad rectifies to nothing and is skipped)."""

    corners: np.ndarray  # (n, 4, 2) float32: the source points of the crop's TL, TR, BR, BL
    widths: np.ndarray   # (n,) int: crop width in pixels at `height`
    valid: np.ndarray    # (n,) bool
    height: int
    tall: np.ndarray = None  # (n,) bool: turned a quarter; which way the text reads is unknown

    def turned_half(self) -> "CropPlan":
        """The same crops turned 180 degrees (corners BR, BL, TL, TR): how a tall quad reads
        when its text runs bottom to top rather than top to bottom."""
        return CropPlan(np.roll(self.corners, 2, axis=1), self.widths, self.valid, self.height,
                        self.tall)


def plan_crops(quads: np.ndarray, height: int, min_width: int, max_width: int) -> CropPlan:
    """Crop sizes from the corners alone: side lengths give the aspect ratio; tall quads take
    their corners rolled by one (the quarter turn is part of the warp)."""
    quads = np.asarray(quads, np.float32).reshape(-1, 4, 2)
    top = np.linalg.norm(quads[:, 1] - quads[:, 0], axis=1)
    bottom = np.linalg.norm(quads[:, 2] - quads[:, 3], axis=1)
    left = np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1)
    right = np.linalg.norm(quads[:, 2] - quads[:, 1], axis=1)
    w, h = np.maximum(top, bottom), np.maximum(left, right)
    valid = (np.minimum(w, h) >= MIN_SIDE) & np.isfinite(w) & np.isfinite(h)
    tall = h >= TALL_RATIO * w
    corners = np.where(tall[:, None, None], np.roll(quads, -1, axis=1), quads)
    long_side, short_side = np.where(tall, h, w), np.where(tall, w, h)
    ratio = np.where(valid, long_side / np.maximum(short_side, MIN_SIDE), 1.0)
    widths = np.clip(np.ceil(height * ratio), min_width, max_width).astype(np.int64)
    return CropPlan(corners.astype(np.float32), widths, valid, height, tall & valid)


def cut_crop(image: np.ndarray, corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """One (height, width, 3) crop: the quad `corners` (crop TL, TR, BR, BL) warped upright.
    Text much larger than the crop is warped at about its own size first and then shrunk with
    area averaging, so that thin strokes do not alias away."""
    native_h = max(np.linalg.norm(corners[3] - corners[0]), np.linalg.norm(corners[2] - corners[1]))
    # the first warp has no more pixels than a few times the image's: a polygon far outside
    # the frame (from the Python API) asked for terabytes, and the image has no more detail
    scale = min(native_h / height, np.sqrt(4.0 * image.shape[0] * image.shape[1] / (width * height)))
    if native_h > 2 * height and scale > 1:
        big = _warp(image, corners, int(round(width * scale)), int(round(height * scale)))
        return cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)
    return _warp(image, corners, width, height)


def _warp(image: np.ndarray, corners: np.ndarray, width: int, height: int) -> np.ndarray:
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(np.ascontiguousarray(corners, np.float32), target)
    return cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


def crop_batches(plan: CropPlan, batch_size: int):
    """Indices of the valid crops, sorted by width and cut into batches of at most
    `batch_size`: neighbours in width share a batch, so padding stays small."""
    order = np.flatnonzero(plan.valid)
    order = order[np.argsort(plan.widths[order], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
