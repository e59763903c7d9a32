"""Host-side geometry shared by the CPU and GPU paths: box ordering, unclip, frame mapping.

Each function reproduces one step of the reference (PaddleOCR `DBPostProcess`) exactly,
including its integer quirks, so both paths produce the reference's boxes.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np
import pyclipper


def order_quad(corners: np.ndarray) -> np.ndarray:
    """The reference's corner order (`get_mini_boxes`): of the two left-most corners the upper
    one first, then the upper right, the lower right and the lower left. corners: (4, 2)."""
    pts = corners[np.argsort(corners[:, 0], kind="stable")]
    left = (0, 1) if pts[1, 1] > pts[0, 1] else (1, 0)
    right = (2, 3) if pts[3, 1] > pts[2, 1] else (3, 2)
    return pts[[left[0], right[0], right[1], left[1]]]


def order_quads(corners: np.ndarray) -> np.ndarray:
    """`order_quad` for an (n, 4, 2) batch."""
    idx = np.argsort(corners[:, :, 0], axis=1, kind="stable")
    pts = np.take_along_axis(corners, idx[:, :, None], axis=1)
    swap_left = ~(pts[:, 1, 1] > pts[:, 0, 1])
    swap_right = ~(pts[:, 3, 1] > pts[:, 2, 1])
    rows = np.arange(len(pts))
    first = np.where(swap_left, 1, 0)
    second = np.where(swap_right, 3, 2)
    return np.stack([pts[rows, first], pts[rows, second], pts[rows, 5 - second],
                     pts[rows, 1 - first]], axis=1)


def mini_box(points: np.ndarray) -> Tuple[np.ndarray, float]:
    """minAreaRect of a point set -> (ordered float32 (4, 2) corners, short side)."""
    rect = cv2.minAreaRect(points)
    return order_quad(cv2.boxPoints(rect)), min(rect[1])


def area_and_perimeter(poly: np.ndarray) -> Tuple[float, float]:
    """Shoelace area (absolute, as shapely's Polygon.area) and perimeter, in float64."""
    p = np.asarray(poly, np.float64).reshape(-1, 2)
    q = np.roll(p, -1, axis=0)
    area = 0.5 * abs(float(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1])))
    return area, float(np.sum(np.hypot(q[:, 0] - p[:, 0], q[:, 1] - p[:, 1])))


def unclip(poly: np.ndarray, ratio: float) -> List[np.ndarray]:
    """Expand a polygon by area * ratio / perimeter with pyclipper (round joins).

    pyclipper truncates the float input to integers, exactly as in the reference. Returns the
    resulting integer polygons (usually one).
    """
    area, perimeter = area_and_perimeter(poly)
    if perimeter == 0.0:
        return []
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(poly, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(p, np.int32) for p in offset.Execute(area * ratio / perimeter)]


def expand_quad(quad: np.ndarray, ratio: float, min_side: float) -> Optional[np.ndarray]:
    """Unclip a quad and take the rectangle around it; None when it is too small."""
    expanded = unclip(quad, ratio)
    if not expanded:
        return None
    box, short = mini_box(np.concatenate(expanded).reshape(-1, 1, 2))
    return None if short < min_side else box


def expand_polygon(poly: np.ndarray, ratio: float, min_side: float) -> Optional[np.ndarray]:
    """Unclip a polygon; None when it splits into several or its rectangle is too small."""
    expanded = unclip(poly, ratio)
    if len(expanded) != 1:
        return None
    _, short = mini_box(expanded[0].reshape(-1, 1, 2))
    return None if short < min_side else expanded[0].astype(np.float32)


def to_frame(points: np.ndarray, scale_x: float, scale_y: float, frame_w: int,
             frame_h: int) -> np.ndarray:
    """Map-pixel points -> frame pixels, rounded and clipped like the reference."""
    out = np.empty(points.shape, np.float32)
    out[..., 0] = np.clip(np.round(points[..., 0] / scale_x), 0, frame_w)
    out[..., 1] = np.clip(np.round(points[..., 1] / scale_y), 0, frame_h)
    return out
