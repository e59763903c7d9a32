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

from . import compiled


def order_quads(corners: np.ndarray) -> np.ndarray:
    """The reference's corner order (`get_mini_boxes`) of (n, 4, 2) corners: corners sorted by
    x (stable); of the two left-most the upper one first, then the upper right, the lower right
    and the lower left ("upper" = strictly smaller y, else the second in x order)."""
    by_x = np.argsort(corners[:, :, 0], axis=1, kind="stable")
    rows = np.arange(len(corners))[:, None]
    ys = corners[rows, by_x, 1]
    pick = np.empty(by_x.shape, np.intp)  # positions in x order: left-upper, right-upper, ...
    pick[:, 0] = ys[:, 1] <= ys[:, 0]
    pick[:, 1] = 2 + (ys[:, 3] <= ys[:, 2])
    pick[:, 2] = 5 - pick[:, 1]
    pick[:, 3] = 1 - pick[:, 0]
    return corners[rows, by_x[rows, pick]]


def rect_array(rects: list) -> np.ndarray:
    """cv2.minAreaRect results -> (n, 5) float32 rows of centre x, y, width, height, angle
    (the float32 values OpenCV computed)."""
    return np.array([(c[0], c[1], s[0], s[1], a) for c, s, a in rects], np.float32).reshape(-1, 5)


_FEW = 24  # rectangles: fewer go through cv2.boxPoints one by one
# corner = centre + sign * (a * h) + sign * (b * w) (x), centre + sign * (b * h) + sign * (a * w) (y)
_SIGNS = np.array([[-1, 1, 1, -1], [-1, -1, 1, 1], [1, -1, -1, 1], [-1, -1, 1, 1]], np.float32)


def _corners(rects: np.ndarray, opencv5: bool) -> np.ndarray:
    """RotatedRect::points in float32 arithmetic, term for term (a sign flip is exact); OpenCV 5
    computes the last two corners from the centre, OpenCV 4 mirrors the first two through it."""
    cx, cy, w, h = (rects[:, i, None] for i in range(4))
    radians = (rects[:, 4].astype(np.float64) * np.pi / 180.0).tolist()
    # libm's cos / sin as OpenCV calls them (math.* = the same libm), rounded to float32, halved
    cos_sin = np.array([(math.cos(r), math.sin(r)) for r in radians], np.float64).reshape(-1, 2)
    half = cos_sin.astype(np.float32) * np.float32(0.5)
    b, a = half[:, :1], half[:, 1:]
    out = np.empty((len(rects), 4, 2), np.float32)
    out[:, :, 0] = cx + _SIGNS[0] * (a * h) + _SIGNS[1] * (b * w)
    out[:, :, 1] = cy + _SIGNS[2] * (b * h) + _SIGNS[3] * (a * w)
    if not opencv5:
        out[:, 2:] = np.float32(2) * np.stack([cx, cy], axis=-1) - out[:, :2]
    return out


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


def ordered_box_points(rects: list) -> np.ndarray:
    """order_quads(box_points(rects)): compiled where it is built and OpenCV's corner arithmetic
    is one of the two known ones."""
    formula = _corner_formula()
    corners = compiled.box_corners(rects, formula) if formula is not None else None
    return order_quads(box_points(rects)) if corners is None else corners


def box_points(rects: list) -> np.ndarray:
    """cv2.boxPoints of a list of cv2.minAreaRect results, bit for bit: (n, 4, 2) float32.
    Below a few dozen rectangles OpenCV's own call per rectangle is the quicker way."""
    formula = _corner_formula() if len(rects) > _FEW else None
    if formula is None:
        return np.array([cv2.boxPoints(r) for r in rects], np.float32).reshape(-1, 4, 2)
    return _corners(rect_array(rects), formula)


def _closed_rings(polys, width: int = 0) -> np.ndarray:
    """(n, k + 1, 2) float64 rings closed on their first point; ragged polygons (a list) are
    padded to `width` points with further copies of the first one (zero-length edges, terms 0)."""
    if isinstance(polys, np.ndarray):
        p = polys.reshape(len(polys), -1, 2).astype(np.float64)
        return np.concatenate([p, p[:, :1]], axis=1)
    sizes = np.fromiter((len(p) for p in polys), np.intp, len(polys))
    points = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys]).astype(np.float64)
    starts = np.cumsum(sizes) - sizes
    step = np.arange(width)
    return points[starts[:, None] + np.where(step < sizes[:, None], step, 0)]


def _ring_sums(ring: np.ndarray) -> tuple:
    """Area and perimeter of closed (n, m, 2) rings, each summed in vertex order."""
    x, y = ring[..., 0], ring[..., 1]
    terms = (x[:, 1:-1] - x[:, :1]) * (y[:, :-2] - y[:, 2:])
    dx, dy = x[:, 1:] - x[:, :-1], y[:, 1:] - y[:, :-1]
    edges = np.sqrt(dx * dx + dy * dy)
    area = np.add.accumulate(terms, axis=1)[:, -1] if terms.shape[1] else np.zeros(len(ring))
    return np.abs(area / 2.0), np.add.accumulate(edges, axis=1)[:, -1]


def ring_areas_lengths(polys, flat: Optional[tuple] = None) -> tuple:
    """Area and perimeter of each polygon, bit for bit as shapely (GEOS `Area::ofRing`,
    `Length::ofLine`) computes them: area = |sum over i of (x_i - x_0) * (y_{i-1} - y_{i+1})| / 2
    and the edge lengths, each summed in vertex order (a running sum: np.add.accumulate). A
    plain shoelace sum rounds differently (8.999999999999993 instead of 9.0), which moves
    pyclipper's integer result. polys: (n, k, 2) array or a list of (k_i, 2) arrays; a list is
    padded per power-of-two size class, so one long polygon does not pad all the others."""
    if not len(polys):
        return np.zeros(0), np.zeros(0)
    sums = compiled.ring_sums(polys, flat)
    if sums is not None:
        return np.abs(sums[0] / 2.0), sums[1]
    if isinstance(polys, np.ndarray):
        return _ring_sums(_closed_rings(polys))
    sizes = np.fromiter((len(p) for p in polys), np.intp, len(polys))
    width = 1 << np.ceil(np.log2(sizes + 1)).astype(np.intp)  # ring points incl. the closing one
    area, length = np.empty(len(polys)), np.empty(len(polys))
    for w in np.unique(width).tolist():
        idx = np.flatnonzero(width == w)
        area[idx], length[idx] = _ring_sums(_closed_rings([polys[i] for i in idx.tolist()], w))
    return area, length


def unclip_distances(polys, ratio: float, flat: Optional[tuple] = None) -> np.ndarray:
    """area * ratio / perimeter of each polygon ((n, k, 2) array or list of (k_i, 2)), float64,
    as the reference computes it with shapely; 0 for degenerate polygons. flat: the polygons'
    `compiled.ragged` form where the caller has it."""
    area, length = ring_areas_lengths(polys, flat)
    return np.divide(area * ratio, length, out=np.zeros(len(area)), where=length > 0)


def offset_polygon(poly, distance: float, offset: Optional[pyclipper.PyclipperOffset] = None) -> list:
    """pyclipper round-join offset of one polygon (nested lists of x, y are the fastest input);
    pyclipper truncates the float input to integers, exactly as in the reference. Returns its
    output: a list of polygons (usually one), each a list of [x, y] integers. `offset`: an
    offsetter to reuse (cleared here), else a new one."""
    if offset is None:
        offset = pyclipper.PyclipperOffset()  # default miter limit / arc tolerance, as the reference
    else:
        offset.Clear()
    offset.AddPath(poly, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return offset.Execute(float(distance))


def offset_all(polys: list, distances: list) -> tuple:
    """offset_polygon of every polygon (lists of [x, y]) by its distance. Returns the points of
    every result, all polygons of a result concatenated, as (k_i, 2) int32 views of one array,
    and how many polygons each result has. pyclipper's nested lists are flattened and freed as
    they come: kept, their tens of thousands of small lists make Python's cyclic garbage
    collector run over and over (measured: a third of the unclip time at 3,000 boxes)."""
    offset = pyclipper.PyclipperOffset()
    flat: list = []
    extend, sizes, parts = flat.extend, [], []
    for poly, distance in zip(polys, distances):
        result = offset_polygon(poly, distance, offset)
        parts.append(len(result))
        sizes.append(sum(map(len, result)))
        for path in result:
            extend(chain.from_iterable(path))
    points = np.array(flat, np.int32).reshape(-1, 2)
    ends = np.cumsum(sizes).tolist()
    return [points[end - size:end] for end, size in zip(ends, sizes)], parts


def expand_quads(quads: np.ndarray, distances: np.ndarray, min_side: float) -> list:
    """Offset each quad, take the minimum-area rectangle around the result (all its points, as
    the reference); per quad the ordered (4, 2) float32 corners, or None when there is no result
    or the rectangle's short side < min_side."""
    points, parts = offset_all(quads.tolist(), distances.tolist())
    rects = [cv2.minAreaRect(p) if n else None for p, n in zip(points, parts)]
    rects = [r if r is not None and min(r[1]) >= min_side else None for r in rects]
    found = [r for r in rects if r is not None]
    if not found:
        return [None] * len(rects)
    boxes = iter(ordered_box_points(found))
    return [None if r is None else next(boxes) for r in rects]


def expand_polygons(polys: list, ratio: float, min_side: float) -> List[Optional[np.ndarray]]:
    """Unclip each polygon; None where it splits into several or its rectangle is too small.
    The input and output points are converted for all polygons at once."""
    if not polys:
        return []
    flat, starts = compiled.ragged(polys)  # once, for the distances and pyclipper's lists
    rows = flat.tolist()
    distances = unclip_distances(polys, ratio, (flat, starts))
    bounds = starts.tolist()
    points, parts = offset_all([rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
                               distances.tolist())
    out = []
    for p, n, wide in zip(points, parts, surely_wide(distances, min_side).tolist()):
        ok = n == 1 and (wide or min(cv2.minAreaRect(p)[1]) >= min_side)
        out.append(p if ok else None)  # int32, as pyclipper returns it
    return out


# How far inside distance d pyclipper's round offset may fall: its arcs are chords (arc
# tolerance 0.25, up to ~0.57 where the last step of an arc is 1.5 steps long), every vertex is
# rounded to integers (<= 0.71), and a nearly straight joint keeps one of its two offset points
# (< 1). Measured on 370,000 random polygons: the short side never fell below 2d - 0.36.
_OFFSET_SLACK = 3.0


def surely_wide(distances: np.ndarray, min_side: float) -> np.ndarray:
    """Where the rectangle around an offset polygon cannot be narrower than min_side: the
    offset holds a disc of radius d - slack around the polygon's points, so every width, and
    the minimum-area rectangle's short side, is at least twice that. Spares the reference's
    minAreaRect call (whose only use here is that check) for all but the smallest words."""
    return 2.0 * (distances - _OFFSET_SLACK) >= min_side


def to_frame(points: np.ndarray, map_w: int, map_h: int, frame_w: int, frame_h: int) -> np.ndarray:
    """Map-pixel points -> frame pixels exactly as the reference: x / map_w * frame_w, rounded
    (half to even) and clipped, in the points' own precision (float32 quads, float64 for the
    integer polygons), so even ties at .5 round the same way."""
    out = np.empty(points.shape, np.float32)
    out[..., 0] = np.minimum(np.maximum(np.round(points[..., 0] / map_w * frame_w), 0), frame_w)
    out[..., 1] = np.minimum(np.maximum(np.round(points[..., 1] / map_h * frame_h), 0), frame_h)
    return out
