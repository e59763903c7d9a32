"""CPU post-processing of one probability map (NumPy / OpenCV, and the compiled steps of
`compiled.py` where they are built), box for box the reference.

Three host stages, shared with the GPU path (which only replaces where the bitmap and the
score crops come from):
1. `find_candidates(bitmap)`: contours -> the boxes (or polygons) to score, each with the
   polygon its score fills and the map crop that score reads;
2. `candidate_scores`: the reference's score, cv2.mean under the filled polygon: for all
   candidates of the map in one compiled call (`compiled.py`), else per candidate with OpenCV
   (`masked_means`, also what the GPU path uses on its gathered crops);
3. `finish`: box_thresh, unclip, final rectangle.
What the reference does per contour in Python is done on arrays where it can be (rectangle
corners, corner order, crops, unclip distances) or in C (the bitmap, the scores, the ring
sums); what stays per candidate is one OpenCV or pyclipper call each (minAreaRect,
approxPolyDP, offset), which keeps the result identical.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

from dbnet.postprocess_config import PostprocessConfig, PostprocessError

from . import compiled
from .geometry import expand_polygons, expand_quads, ordered_box_points, unclip_distances

_SCRATCH = threading.local()
_FEW_CONTOURS = 32  # below this, a minAreaRect each is quicker than the array pre-filter
_STRIP_BYTES = 1 << 21  # map bytes per strip of `binarize` (measured: smaller strips cost more calls)
NOT_FINITE = "the probability map contains NaN or infinite values (broken model, engine or input)"


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread array reused from call to call. A fresh megabyte-sized array comes from the
    OS page by page (hundreds of page faults, about as long as thresholding and tracing the map)."""
    size = math.prod(shape)
    flat = getattr(_SCRATCH, name, None)
    if flat is None or flat.dtype != dtype or flat.size < size:
        flat = np.empty(size, dtype)
        setattr(_SCRATCH, name, flat)
    return flat[:size].reshape(shape)


def binarize(prob: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """prob > thresh as uint8 0/1, dilated by 2x2 when asked (anchor at the kernel centre);
    raises PostprocessError when the map holds NaN or inf. Compiled where it is built (one pass,
    `compiled.threshold`), else NumPy / OpenCV reading the map once, in strips of rows that stay in
    the cache while they are summed (the finite check: a float64 sum of float32 values is finite
    exactly when every value is), thresholded and dilated.
    The result lives in this thread's scratch memory: valid until the next call."""
    out = scratch("bitmap", prob.shape, np.uint8)
    finite = compiled.threshold(prob, config.thresh, config.use_dilation, out)
    if finite is None:
        finite = math.isfinite(_threshold_strips(prob, config, out))
    if not finite:
        raise PostprocessError(NOT_FINITE)
    return out


def _threshold_strips(prob: np.ndarray, config: PostprocessConfig, out: np.ndarray) -> float:
    """binarize with NumPy / OpenCV into out; returns the map's float64 sum."""
    h, w = prob.shape
    rows = max(1, _STRIP_BYTES // (prob.itemsize * max(w, 1)))
    if config.use_dilation:
        return _threshold_dilated(prob, config.thresh, rows, out)
    total = 0.0
    for y in range(0, h, rows):
        strip = prob[y:y + rows]
        total += cv2.sumElems(strip)[0]
        np.greater(strip, config.thresh, out=out[y:y + rows].view(np.bool_))
    return total


def _threshold_dilated(prob: np.ndarray, thresh: float, rows: int, out: np.ndarray) -> float:
    """out = cv2.dilate(prob > thresh, 2x2 kernel): a pixel is set when it or its upper, left or
    upper-left neighbour is; per strip two single-threaded maxima (OpenCV's threaded dilate
    spends several times the CPU time on a busy machine): with the row above (row 0 of `bits`
    carries the previous strip's last row), then with the column to the left. Returns the
    map's float64 sum."""
    h, w = prob.shape
    bits = scratch("strip", (rows + 1, w), np.uint8)
    both = scratch("strip_rows", (rows, w), np.uint8)
    bits[rows] = 0  # nothing above the first row
    total = 0.0
    for y in range(0, h, rows):
        strip = prob[y:y + rows]
        n = len(strip)
        total += cv2.sumElems(strip)[0]
        bits[0] = bits[rows]
        np.greater(strip, thresh, out=bits[1:n + 1].view(np.bool_))
        cv2.max(bits[1:n + 1], bits[:n], dst=both[:n])
        out[y:y + n, 0] = both[:n, 0]
        if w > 1:
            cv2.max(both[:n, 1:], both[:n, :-1], dst=out[y:y + n, 1:])
    return total


def find_contours(bitmap: np.ndarray, max_candidates: int) -> tuple:
    """All contours, holes included (RETR_LIST), in OpenCV's order, first `max_candidates`."""
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return contours[:max_candidates]


@dataclass
class Candidates:
    """The candidates of one map that reach scoring, in the reference's order."""

    shapes: object  # (n, 4, 2) float32 ordered quads, or a list of (k, 2) int32 polygons
    fills: object   # per candidate the int32 polygon its score fills
    crops: np.ndarray  # (n, 4) int64 x0, y0, x1, y1 (inclusive) of the score crop in the map
    in_map: bool = False  # the fills are in map coordinates (fillPoly shifts each by minus its
    #                       crop's origin); else they already are in crop coordinates
    points: Optional[np.ndarray] = None  # (P, 2) int32 every fill in crop coordinates, and
    starts: Optional[np.ndarray] = None  # (n + 1,): fill i = points[starts[i]:starts[i + 1]]

    def __len__(self) -> int:
        return len(self.crops)

    def shifts(self) -> Optional[list]:
        """Per candidate the (dx, dy) fillPoly adds to its fill (for the OpenCV scores), or None."""
        return (-self.crops[:, :2]).tolist() if self.in_map else None


def _clipped(lo: np.ndarray, hi: np.ndarray, h: int, w: int) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 with every corner clipped into the (h, w) map."""
    top = np.array([w - 1, h - 1, w - 1, h - 1])
    return np.minimum(np.maximum(np.concatenate([lo, hi], axis=1), 0), top).astype(np.int64)


def _point_fills(points: list, h: int, w: int) -> dict:
    """Integer polygons (contours, approximated contours): crop = their extent (boundingRect),
    clipped; the polygon is filled as it is, shifted by minus the crop's origin (fillPoly's
    integer offset, the same pixels as subtracting it first)."""
    if not points:
        return dict(fills=[], crops=np.zeros((0, 4), np.int64), in_map=True,
                    points=np.zeros((0, 2), np.int32), starts=np.zeros(1, np.int64))
    sizes = np.fromiter(map(len, points), np.intp, len(points))
    flat = np.concatenate(points).reshape(-1, 2)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    lo, hi = np.minimum.reduceat(flat, starts[:-1]), np.maximum.reduceat(flat, starts[:-1])
    crops = _clipped(lo, hi, h, w)
    shifted = (flat - np.repeat(crops[:, :2], sizes, axis=0)).astype(np.int32)
    return dict(fills=points, crops=crops, in_map=True, points=shifted,
                starts=starts)


def _quad_fills(quads: np.ndarray, h: int, w: int) -> dict:
    """Float quads: crop = floor / ceil of the extent, clipped; vertices shifted to the crop
    and truncated toward zero, as the reference (the float subtraction is exact)."""
    crops = _clipped(np.floor(quads.min(axis=1)), np.ceil(quads.max(axis=1)), h, w)
    fills = (quads - crops[:, None, :2]).astype(np.int32)
    return dict(fills=fills, crops=crops, points=fills.reshape(-1, 2),
                starts=np.arange(0, 4 * len(quads) + 1, 4))


def may_reach_min_size(contours, min_size: int) -> List[int]:
    """Indices of the contours whose rectangle can reach min_size. Exact: the minimum-area
    rectangle is no larger than the axis-aligned one, so short_side**2 <= extent_x * extent_y
    (an integer; below min_size**2 the short side stays below min_size by far more than
    float error). One pass over all points instead of a minAreaRect per speck."""
    if len(contours) <= _FEW_CONTOURS:
        return list(range(len(contours)))
    sizes = np.fromiter(map(len, contours), np.intp, len(contours))
    points = np.concatenate(contours).reshape(-1, 2)
    starts = np.cumsum(sizes) - sizes
    extent = np.maximum.reduceat(points, starts) - np.minimum.reduceat(points, starts)
    return np.flatnonzero(extent[:, 0] * extent[:, 1] >= min_size * min_size).tolist()


def quad_candidates(contours, config: PostprocessConfig, h: int, w: int) -> Candidates:
    """minAreaRect of every contour, short side >= min_size, corners in the reference's order."""
    rects = [(i, cv2.minAreaRect(contours[i])) for i in may_reach_min_size(contours, config.min_size)]
    kept = [(i, r) for i, r in rects if min(r[1]) >= config.min_size]
    keep = [i for i, _ in kept]
    quads = ordered_box_points([r for _, r in kept])
    if config.score_mode == "fast":
        return Candidates(quads, **_quad_fills(quads, h, w))
    return Candidates(quads, **_point_fills([contours[i] for i in keep], h, w))


def closed_arc_lengths(contours: list) -> np.ndarray:
    """cv2.arcLength(c, True) of every integer contour, bit for bit, in one pass: per edge a
    float32 length (sqrt of dx*dx + dy*dy in float32), summed in float64 from the closing edge
    on, in vertex order, as OpenCV's loop does (np.bincount adds each bin's weights in order)."""
    if not contours:
        return np.zeros(0)
    lengths = compiled.arc_lengths(contours)
    if lengths is not None:
        return lengths
    sizes = np.fromiter(map(len, contours), np.intp, len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.float32)
    ends = np.cumsum(sizes)
    before = np.arange(-1, len(points) - 1)
    before[ends - sizes] = ends - 1  # a contour's first edge comes from its last point
    d = points - points[before]
    lengths = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    return np.bincount(np.repeat(np.arange(len(contours)), sizes), lengths, len(contours))


def polygon_candidates(contours, config: PostprocessConfig, h: int, w: int) -> Candidates:
    """approxPolyDP(0.002 * arcLength) of the contours with >= 4 points; keep >= 4 vertices."""
    contours = [c for c in contours if len(c) >= 4]  # fewer points cannot approximate to 4
    epsilons = (0.002 * closed_arc_lengths(contours)).tolist()
    approx = [cv2.approxPolyDP(c, e, True) for c, e in zip(contours, epsilons)]
    keep = [i for i, a in enumerate(approx) if len(a) >= 4]
    polys = [approx[i].reshape(-1, 2) for i in keep]
    scored = polys if config.score_mode == "fast" else [contours[i] for i in keep]
    return Candidates(polys, **_point_fills(scored, h, w))


def find_candidates(bitmap: np.ndarray, config: PostprocessConfig) -> Candidates:
    """Contours of one bitmap -> the candidates to score."""
    contours = find_contours(bitmap, config.max_candidates)
    make = quad_candidates if config.box_type == "quad" else polygon_candidates
    return make(contours, config, *bitmap.shape)


def map_crops(prob: np.ndarray, crops: np.ndarray) -> List[np.ndarray]:
    """The score crops of one map (views)."""
    return [prob[y0:y1 + 1, x0:x1 + 1] for x0, y0, x1, y1 in crops.tolist()]


def masked_means(crops: list, fills, shifts: Optional[list] = None) -> np.ndarray:
    """Mean of each crop under its filled polygon (fillPoly + cv2.mean, as the reference);
    shifts: per polygon the (dx, dy) that puts it in crop coordinates (None: it is there)."""
    zeros, fill_poly, mean = np.zeros, cv2.fillPoly, cv2.mean  # one C call each per candidate
    if shifts is None:
        return np.array([mean(crop, fill_poly(zeros(crop.shape, np.uint8), (fill,), 1))[0]
                         for crop, fill in zip(crops, fills)], np.float64)
    return np.array([mean(crop, fill_poly(zeros(crop.shape, np.uint8), (fill,), 1, cv2.LINE_8, 0,
                                          shift))[0]
                     for crop, fill, shift in zip(crops, fills, shifts)], np.float64)


def candidate_scores(prob: np.ndarray, cand: Candidates) -> np.ndarray:
    """The reference's score of every candidate of one map, in one compiled call where it is
    available, else with OpenCV per candidate (the same float64 values)."""
    if len(cand):
        scores = compiled.polygon_means(prob, cand.crops, cand.points, cand.starts)
        if scores is not None:
            return scores
    return masked_means(map_crops(prob, cand.crops), cand.fills, cand.shifts())


def finish(cand: Candidates, scores: np.ndarray, config: PostprocessConfig
           ) -> Tuple[List[np.ndarray], List[float]]:
    """box_thresh, unclip, the rectangle (or single polygon) of the result, min_size + 2."""
    passed = np.flatnonzero(scores >= config.box_thresh)
    if config.box_type == "quad":
        quads = cand.shapes[passed]
        out = expand_quads(quads, unclip_distances(quads, config.unclip_ratio), config.min_size + 2)
    else:
        out = expand_polygons([cand.shapes[i] for i in passed.tolist()], config.unclip_ratio,
                              config.min_size + 2)
    return ([p for p in out if p is not None],
            [s for p, s in zip(out, scores[passed].tolist()) if p is not None])


def scored_candidates(prob: np.ndarray, config: PostprocessConfig) -> Tuple[Candidates, np.ndarray]:
    """Steps 1 and 2 of one (H, W) float32 map: its candidates and their scores. They depend on
    thresh, box type, score mode, dilation, min_size and max_candidates, not on box_thresh or
    unclip_ratio, which only `finish` reads."""
    cand = find_candidates(binarize(prob, config), config)
    return cand, candidate_scores(prob, cand)


def postprocess_map(prob: np.ndarray, config: PostprocessConfig) -> Tuple[List[np.ndarray], List[float]]:
    """One (H, W) float32 map -> (polygons in map pixels, scores), in the reference's order."""
    return finish(*scored_candidates(prob, config), config)
