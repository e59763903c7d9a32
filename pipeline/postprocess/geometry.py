"""Host-side geometry shared by the CPU and GPU paths: box ordering, unclip, frame mapping.

Each function reproduces one step of the reference (PaddleOCR `DBPostProcess`) exactly,
including its integer quirks, so both paths produce the reference's boxes.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np
import pyclipper


def order_quads(corners: np.ndarray) -> np.ndarray:
    """The reference's corner order (`get_mini_boxes`) of (n, 4, 2) corners: corners sorted by
    x (stable); of the two left-most the upper one first, then the upper right, the lower right
    and the lower left ("upper" = strictly smaller y, else the second in x order)."""
    idx = np.argsort(corners[:, :, 0], axis=1, kind="stable")
    pts = np.take_along_axis(corners, idx[:, :, None], axis=1)
    swap_left = ~(pts[:, 1, 1] > pts[:, 0, 1])
    swap_right = ~(pts[:, 3, 1] > pts[:, 2, 1])
    rows = np.arange(len(pts))
    first = np.where(swap_left, 1, 0)
    second = np.where(swap_right, 3, 2)
    return np.stack([pts[rows, first], pts[rows, second], pts[rows, 5 - second],
                     pts[rows, 1 - first]], axis=1)


def _closed_rings(polys) -> tuple:
    """(n, k + 1, 2) float64 rings closed on their first point, and the ring sizes; ragged
    polygons are padded with further copies of the first point (zero-length edges, terms of 0)."""
    if isinstance(polys, np.ndarray):
        p = polys.reshape(len(polys), -1, 2).astype(np.float64)
        return np.concatenate([p, p[:, :1]], axis=1)
    sizes = np.fromiter((len(p) for p in polys), np.intp, len(polys))
    points = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys]).astype(np.float64)
    starts = np.cumsum(sizes) - sizes
    step = np.arange(sizes.max() + 1)
    index = starts[:, None] + np.where(step < sizes[:, None], step, 0)
    return points[index]


def ring_areas_lengths(polys) -> tuple:
    """Area and perimeter of each polygon, bit for bit as shapely (GEOS `Area::ofRing`,
    `Length::ofLine`) computes them: area = |sum over i of (x_i - x_0) * (y_{i-1} - y_{i+1})| / 2
    and the edge lengths, each summed in vertex order. A plain shoelace sum rounds differently
    (e.g. 8.999999999999993 instead of 9.0), which moves pyclipper's integer result.
    polys: (n, k, 2) array or a list of (k_i, 2) arrays."""
    if not len(polys):
        return np.zeros(0), np.zeros(0)
    ring = _closed_rings(polys)
    x, y = ring[..., 0], ring[..., 1]
    area, length = np.zeros(len(ring)), np.zeros(len(ring))
    for i in range(1, ring.shape[1] - 1):  # column by column: the reference's summation order
        area += (x[:, i] - x[:, 0]) * (y[:, i - 1] - y[:, i + 1])
    for i in range(1, ring.shape[1]):
        dx, dy = x[:, i] - x[:, i - 1], y[:, i] - y[:, i - 1]
        length += np.sqrt(dx * dx + dy * dy)
    return np.abs(area / 2.0), length


def unclip_distances(polys, ratio: float) -> np.ndarray:
    """area * ratio / perimeter of each polygon ((n, k, 2) array or list of (k_i, 2)), float64,
    as the reference computes it with shapely; 0 for degenerate polygons."""
    area, length = ring_areas_lengths(polys)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(length > 0, area * ratio / length, 0.0)


def offset_polygon(poly: np.ndarray, distance: float) -> List[np.ndarray]:
    """pyclipper round-join offset; pyclipper truncates the float input to integers, exactly
    as in the reference. Returns the resulting integer polygons (usually one)."""
    offset = pyclipper.PyclipperOffset()  # default miter limit / arc tolerance, as the reference
    offset.AddPath(poly, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(p, np.int32) for p in offset.Execute(float(distance))]


def expand_quads(quads: np.ndarray, distances: np.ndarray, min_side: float) -> list:
    """Offset each quad, take the minimum-area rectangle around the result; per quad the
    ordered (4, 2) float32 corners, or None when the rectangle's short side < min_side."""
    rects = []
    for quad, distance in zip(quads, distances):
        expanded = offset_polygon(quad, distance)
        rect = cv2.minAreaRect(np.concatenate(expanded).reshape(-1, 1, 2)) if expanded else None
        rects.append(rect if rect is not None and min(rect[1]) >= min_side else None)
    found = [r for r in rects if r is not None]
    if not found:
        return [None] * len(rects)
    boxes = iter(order_quads(np.stack([cv2.boxPoints(r) for r in found])))
    return [None if r is None else next(boxes) for r in rects]


def expand_polygons(polys: list, ratio: float, min_side: float) -> List[Optional[np.ndarray]]:
    """Unclip each polygon; None where it splits into several or its rectangle is too small."""
    out = []
    for poly, distance in zip(polys, unclip_distances(polys, ratio)):
        expanded = offset_polygon(poly, distance)
        ok = len(expanded) == 1 and min(cv2.minAreaRect(expanded[0].reshape(-1, 1, 2))[1]) >= min_side
        out.append(expanded[0] if ok else None)  # int32, as pyclipper returns it
    return out


def to_frame(points: np.ndarray, map_w: int, map_h: int, frame_w: int, frame_h: int) -> np.ndarray:
    """Map-pixel points -> frame pixels exactly as the reference: x / map_w * frame_w, rounded
    (half to even) and clipped, in the points' own precision (float32 quads, float64 for the
    integer polygons), so even ties at .5 round the same way."""
    out = np.empty(points.shape, np.float32)
    out[..., 0] = np.clip(np.round(points[..., 0] / map_w * frame_w), 0, frame_w)
    out[..., 1] = np.clip(np.round(points[..., 1] / map_h * frame_h), 0, frame_h)
    return out
