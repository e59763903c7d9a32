"""CPU post-processing of one probability map (NumPy / OpenCV), box for box the reference.

What the reference does per contour in Python is done here on arrays where it can be: contour
bounding boxes and the exact min-size pre-filter, crop bounds, corner ordering, unclip distances.
What must stay per candidate is a single OpenCV / pyclipper call each (minAreaRect, fillPoly,
offset), which is what makes the result identical to the reference.
"""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .config import PostprocessConfig
from .geometry import expand_polygons, expand_quads, order_quads, unclip_distances

_DILATE_KERNEL = np.ones((2, 2), np.uint8)


def binarize(prob: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """prob > thresh as uint8 0/1, dilated by 2x2 when asked (anchor at the kernel centre)."""
    bitmap = (prob > config.thresh).view(np.uint8)
    return cv2.dilate(bitmap, _DILATE_KERNEL) if config.use_dilation else bitmap


def find_contours(bitmap: np.ndarray, max_candidates: int) -> list:
    """All contours, holes included (RETR_LIST), in OpenCV's order, first `max_candidates`."""
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours[:max_candidates])


def contour_extents(contours: list) -> Tuple[np.ndarray, np.ndarray]:
    """Per-contour (x, y) minimum and maximum, (n, 2) int each, without a Python loop."""
    sizes = np.fromiter((len(c) for c in contours), np.intp, len(contours))
    points = np.concatenate(contours).reshape(-1, 2)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts)


def may_reach_min_size(lo: np.ndarray, hi: np.ndarray, min_size: int) -> np.ndarray:
    """Exact pre-filter: the minimum-area rectangle is no larger than the axis-aligned one, so
    short_side**2 <= short * long <= extent_x * extent_y; below min_size**2 it cannot pass."""
    ext = (hi - lo).astype(np.int64)
    return ext[:, 0] * ext[:, 1] >= min_size * min_size


def fast_crops(polys, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Inclusive (n, 2) lo / hi corners of the "fast" score crops: floor / ceil of each
    polygon's extent, clipped to the (h, w) map. polys: (n, k, 2) array or list of (k_i, 2)."""
    if isinstance(polys, np.ndarray):
        lo, hi = np.floor(polys.min(axis=1)), np.ceil(polys.max(axis=1))
    else:
        lo = np.array([np.floor(p.min(axis=0)) for p in polys]).reshape(-1, 2)
        hi = np.array([np.ceil(p.max(axis=0)) for p in polys]).reshape(-1, 2)
    top = (w - 1, h - 1)
    return np.clip(lo, 0, top).astype(np.int64), np.clip(hi, 0, top).astype(np.int64)


def slow_crops(contours: list, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Crops of the "slow" score: each contour's extent, clipped to the map."""
    lo, hi = contour_extents(contours)
    top = (w - 1, h - 1)
    return np.clip(lo, 0, top).astype(np.int64), np.clip(hi, 0, top).astype(np.int64)


def fill_mask(poly: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The reference's score mask: the polygon filled on its crop, vertices shifted to the
    crop origin and truncated toward zero."""
    mask = np.zeros((hi[1] - lo[1] + 1, hi[0] - lo[0] + 1), np.uint8)
    local = (poly.reshape(-1, 2).astype(np.float64) - lo).astype(np.int32)
    cv2.fillPoly(mask, local[None], 1)
    return mask


def masked_means(prob: np.ndarray, polys, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of `prob` under each polygon's score mask (cv2.mean, as the reference)."""
    if isinstance(polys, np.ndarray):  # quads: shift and truncate all vertices at once
        local = (polys.astype(np.float64) - lo[:, None, :]).astype(np.int32)
    else:
        local = [(p.reshape(-1, 2).astype(np.float64) - o).astype(np.int32) for p, o in zip(polys, lo)]
    out = np.empty(len(polys), np.float64)
    for i, ((x0, y0), (x1, y1)) in enumerate(zip(lo.tolist(), hi.tolist())):
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.fillPoly(mask, local[i][None], 1)
        out[i] = cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0]
    return out


def score_fast(prob: np.ndarray, polys: list) -> np.ndarray:
    """Mean inside each filled polygon (quad), on its floor / ceil bounding crop."""
    if not len(polys):
        return np.zeros(0)
    return masked_means(prob, polys, *fast_crops(polys, *prob.shape))


def score_slow(prob: np.ndarray, contours: list) -> np.ndarray:
    """Mean inside each filled contour, on its bounding crop."""
    if not contours:
        return np.zeros(0)
    pts = [c.reshape(-1, 2) for c in contours]
    return masked_means(prob, pts, *slow_crops(pts, *prob.shape))


def candidate_quads(contours: list, min_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Ordered minAreaRect corners of the contours whose short side reaches min_size.

    Returns (indices into contours, (k, 4, 2) float32 corners)."""
    if not contours:
        return np.zeros(0, np.intp), np.zeros((0, 4, 2), np.float32)
    lo, hi = contour_extents(contours)
    idx = np.flatnonzero(may_reach_min_size(lo, hi, min_size))
    rects = [cv2.minAreaRect(contours[i]) for i in idx]
    big = np.fromiter((min(r[1]) >= min_size for r in rects), bool, len(rects))
    corners = [cv2.boxPoints(r) for r, ok in zip(rects, big) if ok]
    if not corners:
        return np.zeros(0, np.intp), np.zeros((0, 4, 2), np.float32)
    return idx[big], order_quads(np.stack(corners))


def quads_from_contours(prob, contours, config) -> Tuple[List[np.ndarray], List[float]]:
    """Box mode: rectangle, score, box_thresh, unclip, rectangle again, min_size + 2."""
    idx, quads = candidate_quads(contours, config.min_size)
    if config.score_mode == "fast":
        scores = score_fast(prob, quads)
    else:
        scores = score_slow(prob, [contours[i] for i in idx])
    passed = scores >= config.box_thresh
    quads, scores = quads[passed], scores[passed]
    boxes = expand_quads(quads, unclip_distances(quads, config.unclip_ratio), config.min_size + 2)
    return ([b for b in boxes if b is not None],
            [float(s) for b, s in zip(boxes, scores) if b is not None])


def polygons_from_contours(prob, contours, config) -> Tuple[List[np.ndarray], List[float]]:
    """Polygon mode: approxPolyDP (>= 4 points), score, box_thresh, unclip into one polygon."""
    contours = [c for c in contours if len(c) >= 4]  # fewer points cannot approximate to 4
    approx = [cv2.approxPolyDP(c, 0.002 * cv2.arcLength(c, True), True).reshape(-1, 2)
              for c in contours]
    keep = [i for i, a in enumerate(approx) if len(a) >= 4]
    if config.score_mode == "fast":
        scores = score_fast(prob, [approx[i] for i in keep])
    else:
        scores = score_slow(prob, [contours[i] for i in keep])
    passed = [(approx[i], float(s)) for i, s in zip(keep, scores) if s >= config.box_thresh]
    expanded = expand_polygons([p for p, _ in passed], config.unclip_ratio, config.min_size + 2)
    kept = [(poly, s) for poly, (_, s) in zip(expanded, passed) if poly is not None]
    return [p for p, _ in kept], [s for _, s in kept]


def postprocess_map(prob: np.ndarray, config: PostprocessConfig) -> Tuple[List[np.ndarray], List[float]]:
    """One (H, W) float32 map -> (polygons in map pixels, scores), in the reference's order."""
    contours = find_contours(binarize(prob, config), config.max_candidates)
    if config.box_type == "quad":
        return quads_from_contours(prob, contours, config)
    return polygons_from_contours(prob, contours, config)
