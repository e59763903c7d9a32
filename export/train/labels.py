"""DB training targets (MhLiao/DB's MakeShrinkMap + MakeBorderMap), NumPy / OpenCV / pyclipper.

    targets = make_targets(polygons, ignore, height, width)
    targets["gt"], targets["mask"]                   # shrunk text kernels, 0 where ignored
    targets["thresh_map"], targets["thresh_mask"]    # border distance map in [0.3, 0.7]

Shrink / expand offset D = A (1 - r^2) / L with r = 0.4 by default (A area, L perimeter); a
smaller shrink ratio r leaves thinner kernels and wider gaps between neighbouring words.
"""
from __future__ import annotations

from typing import Dict, Sequence

import cv2
import numpy as np
import pyclipper

SHRINK_RATIO = 0.4
MIN_TEXT_SIZE = 8
THRESH_MIN, THRESH_MAX = 0.3, 0.7


def area_perimeter(poly: np.ndarray):
    x, y = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    perimeter = float(np.linalg.norm(poly - np.roll(poly, -1, axis=0), axis=1).sum())
    return float(area), perimeter


def offset_distance(poly: np.ndarray, ratio: float = SHRINK_RATIO) -> float:
    area, perimeter = area_perimeter(poly)
    return area * (1 - ratio ** 2) / max(perimeter, 1e-6)


def offset_polygon(poly: np.ndarray, distance: float) -> np.ndarray:
    """Polygon grown (distance > 0) or shrunk (< 0) with round joins; empty (0, 2) if it vanishes."""
    pco = pyclipper.PyclipperOffset()
    pco.AddPath([tuple(p) for p in np.round(poly).astype(np.int64).tolist()],
                pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    out = pco.Execute(distance)
    if not out:
        return np.zeros((0, 2), np.float32)
    return np.array(max(out, key=len), np.float32).reshape(-1, 2)


def _segment_distance(xs, ys, a, b) -> np.ndarray:
    """Distance of every (xs, ys) point to the segment a-b."""
    ab = b - a
    denom = max(float(ab @ ab), 1e-9)
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / denom, 0, 1)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


def draw_border(poly: np.ndarray, canvas: np.ndarray, mask: np.ndarray,
                ratio: float = SHRINK_RATIO) -> None:
    """Add one polygon's normalised edge-distance map (1 on the edge) to canvas; fill mask."""
    distance = offset_distance(poly, ratio)
    padded = offset_polygon(poly, distance)
    if len(padded) < 3 or distance <= 0:
        return
    cv2.fillPoly(mask, [np.round(padded).astype(np.int32)], 1.0)
    x0, y0 = np.floor(padded.min(0)).astype(int)
    x1, y1 = np.ceil(padded.max(0)).astype(int)
    h, w = canvas.shape
    vx0, vy0, vx1, vy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if vx1 < vx0 or vy1 < vy0:
        return
    ys, xs = np.mgrid[vy0:vy1 + 1, vx0:vx1 + 1].astype(np.float32)
    nearest = np.full(xs.shape, np.inf, np.float32)
    for i in range(len(poly)):
        d = _segment_distance(xs, ys, poly[i], poly[(i + 1) % len(poly)])
        np.minimum(nearest, d, out=nearest)
    region = canvas[vy0:vy1 + 1, vx0:vx1 + 1]
    np.fmax(1 - np.clip(nearest / distance, 0, 1), region, out=region)


def make_targets(polygons: Sequence[np.ndarray], ignore: Sequence[bool], height: int,
                 width: int, min_text_size: int = MIN_TEXT_SIZE,
                 shrink_ratio: float = SHRINK_RATIO) -> Dict[str, np.ndarray]:
    """All four DB targets for one image, as float32 (H, W) maps; `shrink_ratio` is DB's r."""
    gt = np.zeros((height, width), np.float32)
    mask = np.ones((height, width), np.float32)
    canvas = np.zeros((height, width), np.float32)
    thresh_mask = np.zeros((height, width), np.float32)
    for poly, ign in zip(polygons, ignore):
        poly = np.asarray(poly, np.float32).reshape(-1, 2)
        size = poly.max(0) - poly.min(0)
        if ign or size.min() < min_text_size or len(poly) < 3:
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0.0)
            continue
        shrunk = offset_polygon(poly, -offset_distance(poly, shrink_ratio))
        if len(shrunk) < 3:
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0.0)
            continue
        cv2.fillPoly(gt, [np.round(shrunk).astype(np.int32)], 1.0)
        draw_border(poly, canvas, thresh_mask, shrink_ratio)
    thresh_map = canvas * (THRESH_MAX - THRESH_MIN) + THRESH_MIN
    return {"gt": gt, "mask": mask, "thresh_map": thresh_map.astype(np.float32),
            "thresh_mask": thresh_mask}
