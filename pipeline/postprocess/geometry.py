"""Host-side geometry shared by the CPU and GPU paths: box ordering, unclip, frame mapping.

Each function reproduces one step of the reference (PaddleOCR `DBPostProcess`) exactly,
including its integer quirks, so both paths produce the reference's boxes.
"""
from __future__ import annotations

import math
from functools import lru_cache
from itertools import chain
from typing import List, Optional

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


def rect_array(rects: list) -> np.ndarray:
    """cv2.minAreaRect results -> (n, 5) float32 rows of centre x, y, width, height, angle
    (the float32 values OpenCV computed)."""
    return np.array([(c[0], c[1], s[0], s[1], a) for c, s, a in rects], np.float32).reshape(-1, 5)


def _corners(rects: np.ndarray, opencv5: bool) -> np.ndarray:
    """RotatedRect::points in float32 arithmetic, term for term; OpenCV 5 computes the last two
    corners from the centre, OpenCV 4 mirrors the first two through it."""
    cx, cy, w, h = (rects[:, i] for i in range(4))
    radians = (rects[:, 4].astype(np.float64) * np.pi / 180.0).tolist()
    half = np.float32(0.5)  # libm's cos / sin as OpenCV calls them (math.* = the same libm)
    b = np.array([math.cos(r) for r in radians], np.float64).astype(np.float32) * half
    a = np.array([math.sin(r) for r in radians], np.float64).astype(np.float32) * half
    p0 = (cx - a * h - b * w, cy + b * h - a * w)
    p1 = (cx + a * h - b * w, cy - b * h - a * w)
    if opencv5:
        p2 = (cx + a * h + b * w, cy - b * h + a * w)
        p3 = (cx - a * h + b * w, cy + b * h + a * w)
    else:
        two = np.float32(2)
        p2 = (two * cx - p0[0], two * cy - p0[1])
        p3 = (two * cx - p1[0], two * cy - p1[1])
    return np.stack([np.stack(p, axis=-1) for p in (p0, p1, p2, p3)], axis=1)


@lru_cache(maxsize=1)
def _corner_formula() -> Optional[bool]:
    """Which OpenCV arithmetic cv2.boxPoints uses here (checked once on awkward rectangles);
    None when neither matches bit for bit, then every rectangle goes through cv2.boxPoints."""
    rng = np.random.default_rng(0)
    rects = np.concatenate([rng.uniform(-10, 3000, (256, 2)), rng.uniform(0, 500, (256, 2)),
                            rng.choice([90.0, -90.0, 45.0, 0.0, 30.0], (256, 1))
                            + rng.uniform(-1, 1, (256, 1)) * rng.choice([0, 1], (256, 1))],
                           axis=1).astype(np.float32)
    expected = np.stack([cv2.boxPoints(((float(r[0]), float(r[1])), (float(r[2]), float(r[3])),
                                        float(r[4]))) for r in rects])
    for opencv5 in (True, False):
        if np.array_equal(_corners(rects, opencv5).view(np.int32), expected.view(np.int32)):
            return opencv5
    return None


def box_points(rects: np.ndarray) -> np.ndarray:
    """cv2.boxPoints of (n, 5) float32 rectangles at once, bit for bit: (n, 4, 2) float32."""
    rects = np.asarray(rects, np.float32).reshape(-1, 5)
    formula = _corner_formula()
    if formula is None:
        return np.stack([cv2.boxPoints(((float(r[0]), float(r[1])), (float(r[2]), float(r[3])),
                                        float(r[4]))) for r in rects]).reshape(-1, 4, 2)
    return _corners(rects, formula)


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


def offset_polygon(poly, distance: float) -> list:
    """pyclipper round-join offset of one polygon (nested lists of x, y are the fastest input);
    pyclipper truncates the float input to integers, exactly as in the reference. Returns its
    output: a list of polygons (usually one), each a list of [x, y] integers."""
    offset = pyclipper.PyclipperOffset()  # default miter limit / arc tolerance, as the reference
    offset.AddPath(poly, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return offset.Execute(float(distance))


def _points(polygons: list) -> np.ndarray:
    """pyclipper polygons -> one (k, 1, 2) int32 array of all their points."""
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(polygons)), np.int32)
    return flat.reshape(-1, 1, 2)


def expand_quads(quads: np.ndarray, distances: np.ndarray, min_side: float) -> list:
    """Offset each quad, take the minimum-area rectangle around the result; per quad the
    ordered (4, 2) float32 corners, or None when the rectangle's short side < min_side."""
    rects = []
    for quad, distance in zip(quads.tolist(), distances.tolist()):
        expanded = offset_polygon(quad, distance)
        rects.append(cv2.minAreaRect(_points(expanded)) if expanded else None)
    ok = [r is not None and min(r[1]) >= min_side for r in rects]
    if not any(ok):
        return [None] * len(rects)
    boxes = iter(order_quads(box_points(rect_array([r for r, keep in zip(rects, ok) if keep]))))
    return [next(boxes) if keep else None for keep in ok]


def expand_polygons(polys: list, ratio: float, min_side: float) -> List[Optional[np.ndarray]]:
    """Unclip each polygon; None where it splits into several or its rectangle is too small."""
    out = []
    for poly, distance in zip(polys, unclip_distances(polys, ratio).tolist()):
        expanded = offset_polygon(poly.reshape(-1, 2).tolist(), distance)
        points = _points(expanded) if len(expanded) == 1 else None
        ok = points is not None and min(cv2.minAreaRect(points)[1]) >= min_side
        out.append(points.reshape(-1, 2) if ok else None)  # int32, as pyclipper returns it
    return out


def to_frame(points: np.ndarray, map_w: int, map_h: int, frame_w: int, frame_h: int) -> np.ndarray:
    """Map-pixel points -> frame pixels exactly as the reference: x / map_w * frame_w, rounded
    (half to even) and clipped, in the points' own precision (float32 quads, float64 for the
    integer polygons), so even ties at .5 round the same way."""
    out = np.empty(points.shape, np.float32)
    out[..., 0] = np.clip(np.round(points[..., 0] / map_w * frame_w), 0, frame_w)
    out[..., 1] = np.clip(np.round(points[..., 1] / map_h * frame_h), 0, frame_h)
    return out
