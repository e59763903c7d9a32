"""Polygon geometry of the ICDAR 2015 protocol (pipeline.evaluate): areas, simplicity,
intersections and bounding-box overlap tests. Areas and intersections use pyclipper on
coordinates scaled to 1/65536 pixel, so no shapely is needed."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

_SCALE = 65536.0  # pyclipper works on integers: keep 1/65536 px


def _next(v: np.ndarray) -> np.ndarray:
    """v shifted one place toward the front, the first value last (np.roll(v, -1), without its
    overhead: the protocol calls this for every polygon pair)."""
    return np.concatenate((v[1:], v[:1]))


def polygon_area(points: np.ndarray) -> float:
    """Unsigned shoelace area."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, _next(y)) - np.dot(y, _next(x))))


def _dedupe(points: np.ndarray) -> np.ndarray:
    """Drop repeated consecutive vertices (and a closing vertex equal to the first)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    keep = np.any(p != np.roll(p, 1, axis=0), axis=1)
    return p[keep] if keep.any() else p[:1]


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    """Do closed segments ab and cd share a point?"""
    def orient(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    def on_segment(p, q, r):  # r collinear with pq: is it within pq's box?
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    if o1 != o2 and o3 != o4:
        return True
    return ((o1 == 0 and on_segment(a, b, c)) or (o2 == 0 and on_segment(a, b, d))
            or (o3 == 0 and on_segment(c, d, a)) or (o4 == 0 and on_segment(c, d, b)))


def is_simple_polygon(points: np.ndarray) -> bool:
    """True for a polygon that shapely would call valid and simple: >= 3 distinct vertices,
    non-zero area, and no two non-adjacent edges touching."""
    p = _dedupe(points)
    n = len(p)
    if n < 3 or not np.all(np.isfinite(p)) or polygon_area(p) <= 0:
        return False
    edges = [(p[i], p[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # first and last edge share vertex 0
            if _segments_cross(*edges[i], *edges[j]):
                return False
    return True


def _to_clipper(points: np.ndarray) -> List[Tuple[int, int]]:
    scaled = np.round(np.asarray(points, np.float64).reshape(-1, 2) * _SCALE).astype(np.int64)
    return [tuple(pt) for pt in scaled.tolist()]


def intersection_area(a: np.ndarray, b: np.ndarray) -> float:
    """Area of the intersection of two simple polygons."""
    return overlapping_intersection_area(a, b) if _boxes_overlap(a, b) else 0.0


def overlapping_intersection_area(a: np.ndarray, b: np.ndarray) -> float:
    """intersection_area of two polygons whose bounding boxes overlap."""
    import pyclipper

    clipper = pyclipper.Pyclipper()
    clipper.AddPath(_to_clipper(a), pyclipper.PT_SUBJECT, True)
    clipper.AddPath(_to_clipper(b), pyclipper.PT_CLIP, True)
    parts = clipper.Execute(pyclipper.CT_INTERSECTION, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO)
    return abs(sum(pyclipper.Area(part) for part in parts)) / (_SCALE * _SCALE)


def area_inside_boxes(points: np.ndarray, boxes: Sequence[Sequence[float]]) -> float:
    """Area of a polygon inside the union of axis-aligned (x0, y0, x1, y1) boxes (boxes that
    overlap count once: the clip paths are filled nonzero)."""
    import pyclipper

    clipper = pyclipper.Pyclipper()
    clipper.AddPath(_to_clipper(points), pyclipper.PT_SUBJECT, True)
    for x0, y0, x1, y1 in boxes:
        clipper.AddPath(_to_clipper([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]), pyclipper.PT_CLIP, True)
    parts = clipper.Execute(pyclipper.CT_INTERSECTION, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO)
    return abs(sum(pyclipper.Area(part) for part in parts)) / (_SCALE * _SCALE)


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a).reshape(-1, 2), np.asarray(b).reshape(-1, 2)
    return bool(np.all(a.min(0) < b.max(0)) and np.all(b.min(0) < a.max(0)))


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = intersection_area(a, b)
    union = polygon_area(a) + polygon_area(b) - inter
    return 0.0 if union <= 0 else inter / union


def bounding_boxes(polygons: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Per polygon its bounding box's low and high corner; an empty polygon overlaps nothing."""
    lo = np.array([p.min(0) if len(p) else (np.inf, np.inf) for p in polygons], np.float64).reshape(-1, 2)
    hi = np.array([p.max(0) if len(p) else (-np.inf, -np.inf) for p in polygons], np.float64).reshape(-1, 2)
    return lo, hi


def boxes_overlap_matrix(a: Tuple[np.ndarray, np.ndarray], b: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(len a, len b) booleans: _boxes_overlap of every pair, at once."""
    (a_lo, a_hi), (b_lo, b_hi) = a, b
    return (np.all(a_lo[:, None] < b_hi[None], axis=2) & np.all(b_lo[None] < a_hi[:, None], axis=2))
