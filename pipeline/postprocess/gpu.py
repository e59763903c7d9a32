"""GPU post-processing of a batch of maps that live on the device (CuPy), box for box the
reference; the same code runs with NumPy (the "twin" the tests compare with the CPU path).

1. device (components.py): threshold, dilation, labelling, per-candidate statistics, reference
   order and truncation, min-size pre-filter; ONE compact copy of the candidate table and the
   per-row extremes.
2. host: minAreaRect of each component's extreme-pixel ring (the same rectangle as its contour),
   the reference's corner order; holes, polygon mode and "slow" scores of components with holes
   need a real contour: their bitmap crops (a few pixels around the bbox) are copied and traced.
3. device: the score masks (drawn by cv2.fillPoly on the host, so OpenCV's fill rule holds by
   construction) are uploaded and the probability under them summed; one small copy back.
   "slow" scores of components without holes come from step 1 and need no extra round trip.
4. host: box_thresh, unclip and the final rectangle (geometry.py).
"""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from engine.lazy import array_module

from .arrays import to_host
from .components import HOLE, OUTER, column, find_candidates, to_host_compact
from .config import PostprocessConfig
from .cpu import fast_crops, fill_mask, slow_crops
from .geometry import expand_polygons, expand_quads, order_quads, unclip_distances

_C = {name: column(name) for name in ("map", "kind", "key", "x0", "y0", "x1", "y1", "count",
                                      "has_holes", "rows")}


# -- contours of the candidates that need one ----------------------------------------------
def _crop_boxes(table, shape) -> np.ndarray:
    """(k, 4) x0, y0, x1, y1 (exclusive) of the bitmap crops: bbox + 2 px, inside the map."""
    _, h, w = shape
    lo = np.maximum(table[:, [_C["x0"], _C["y0"]]] - 2, 0)
    hi = np.minimum(table[:, [_C["x1"], _C["y1"]]] + 3, (w, h))
    return np.concatenate([lo, hi], axis=1)


def _fetch_crops(xp, mask, maps, boxes) -> List[np.ndarray]:
    """Copy the bitmap crops to the host in one transfer."""
    if not len(boxes):
        return []
    flat = xp.concatenate([mask[m, y0:y1, x0:x1].ravel()
                           for m, (x0, y0, x1, y1) in zip(maps.tolist(), boxes.tolist())])
    host = to_host(flat).view(np.uint8)
    sizes = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0])
    parts = np.split(host, np.cumsum(sizes)[:-1])
    return [p.reshape(b[3] - b[1], b[2] - b[0]) for p, b in zip(parts, boxes)]


def _list_keys(crop: np.ndarray) -> np.ndarray:
    """Keys of findContours(RETR_LIST) on `crop`, in its output order (descending)."""
    h, w = crop.shape
    n_fg, fg = cv2.connectedComponents(crop, connectivity=8, ltype=cv2.CV_32S)
    n_bg, bg = cv2.connectedComponents(1 - crop, connectivity=4, ltype=cv2.CV_32S)
    keys = []
    for labels, count, hole in ((fg, n_fg, False), (bg, n_bg, True)):
        flat = labels.ravel()
        idx = np.flatnonzero(flat)
        first = np.full(count, h * w, np.int64)
        np.minimum.at(first, flat[idx], idx)
        if hole:
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            inner = np.setdiff1d(np.arange(1, count), border)
            keys.append(first[inner] - 1)
        else:
            keys.append(first[1:])
    return np.sort(np.concatenate(keys))[::-1]


def _trace(crop: np.ndarray, box, kind: int, key: int, width: int) -> np.ndarray:
    """The reference's contour of one candidate, found by its key among the crop's contours."""
    x0, y0, x1, _ = box
    contours, _ = cv2.findContours(crop, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    kx, ky = key % width - x0, key // width - y0
    local = ky * (x1 - x0) + kx
    if kind == OUTER:  # an outer contour starts at its first pixel
        found = [c for c in contours if c[0, 0, 0] == kx and c[0, 0, 1] == ky]
        contour = found[0]
    else:
        contour = contours[int(np.flatnonzero(_list_keys(crop) == local)[0])]
    return contour + np.array([x0, y0], np.int32)


def _contours(xp, mask, table, needed) -> dict:
    """{candidate index: contour in map pixels} for the candidates in `needed`."""
    idx = np.flatnonzero(needed)
    boxes = _crop_boxes(table[idx], mask.shape)
    crops = _fetch_crops(xp, mask, table[idx, _C["map"]], boxes)
    width = mask.shape[2]
    return {int(i): _trace(c, b, table[i, _C["kind"]], table[i, _C["key"]], width)
            for i, c, b in zip(idx, crops, boxes)}


# -- rectangles from the per-row extremes ------------------------------------------------------
def _rings(table, left, right) -> dict:
    """{candidate index: closed ring of extreme pixels} for the OUTER candidates: down the left
    side, up the right side (the contour's convex hull, traversed as findContours does)."""
    outer = np.flatnonzero(table[:, _C["kind"]] == OUTER)
    heights = table[outer, _C["rows"]]
    ends = np.cumsum(heights)
    ys = np.repeat(table[outer, _C["y0"]] - (ends - heights), heights) + np.arange(heights.sum())
    lpts = np.stack([left, ys], axis=1).astype(np.int32)
    rpts = np.stack([right, ys], axis=1).astype(np.int32)
    return {int(i): np.concatenate([lpts[e - n:e], rpts[e - n:e][::-1]]).reshape(-1, 1, 2)
            for i, n, e in zip(outer, heights, ends)}


def _quads(points: dict, order, min_size: int):
    """minAreaRect per candidate; keeps those whose short side reaches min_size."""
    rects = {i: cv2.minAreaRect(points[i]) for i in order}
    kept = [i for i in order if min(rects[i][1]) >= min_size]
    if not kept:
        return [], np.zeros((0, 4, 2), np.float32)
    return kept, order_quads(np.stack([cv2.boxPoints(rects[i]) for i in kept]))


# -- scores -------------------------------------------------------------------------------------
def masked_sums(xp, prob, maps, origins, masks) -> Tuple[np.ndarray, np.ndarray]:
    """Sum and count of prob under each (map, origin, uint8 mask): one upload, one copy back."""
    if not masks:
        return np.zeros(0), np.zeros(0)
    n, h, w = prob.shape
    sizes = np.array([m.size for m in masks])
    widths = np.array([m.shape[1] for m in masks])
    offsets = np.cumsum(sizes) - sizes
    meta = np.stack([np.asarray(maps), origins[:, 0], origins[:, 1], widths, offsets], axis=1)
    dev_meta = xp.asarray(meta.astype(np.int64))
    dev_masks = xp.asarray(np.concatenate([m.ravel() for m in masks]))
    pixel = xp.arange(int(sizes.sum()))
    owner = xp.searchsorted(xp.ascontiguousarray(dev_meta[:, 4]), pixel, side="right") - 1
    local = pixel - dev_meta[owner, 4]
    row, col = local // dev_meta[owner, 3], local % dev_meta[owner, 3]
    flat = dev_meta[owner, 0] * (h * w) + (dev_meta[owner, 2] + row) * w + dev_meta[owner, 1] + col
    weights = dev_masks.astype(xp.float64)
    sums = xp.bincount(owner, weights=prob.ravel()[flat] * weights, minlength=len(masks))
    counts = xp.bincount(owner, weights=weights, minlength=len(masks))
    both = to_host(xp.concatenate([sums, counts]))
    return both[:len(masks)], both[len(masks):]


def _scores(xp, prob, table, sums, polys: dict, contours: dict, sizes, config) -> dict:
    """{candidate: score} for the candidates in `polys` (quads or approximated polygons)."""
    slow = config.score_mode == "slow"
    scores, jobs = {}, []
    for i, poly in polys.items():
        if slow and table[i, _C["kind"]] == OUTER and not table[i, _C["has_holes"]]:
            scores[i] = sums[i] / table[i, _C["count"]]  # fillPoly(contour) == the component
        else:
            jobs.append((i, contours[i].reshape(-1, 2) if slow else poly))
    masks, origins, maps = [], [], []
    for i, poly in jobs:
        m = table[i, _C["map"]]
        lo, hi = (slow_crops if slow else fast_crops)([poly], *sizes[m])
        masks.append(fill_mask(poly, lo[0], hi[0]))
        origins.append(lo[0])
        maps.append(m)
    total, count = masked_sums(xp, prob, maps, np.array(origins).reshape(-1, 2), masks)
    for (i, _), s, c in zip(jobs, total, count):
        scores[i] = s / c if c else 0.0
    return scores


# -- the two modes ------------------------------------------------------------------------------
def _quad_results(xp, prob, cand, host, sizes, config):
    table, left, right, sums = host
    kinds = table[:, _C["kind"]]
    needs_contour = (kinds == HOLE) | ((config.score_mode == "slow") & (table[:, _C["has_holes"]] > 0))
    contours = _contours(xp, cand.mask, table, needs_contour)
    points = {**_rings(table, left, right), **{i: c for i, c in contours.items() if kinds[i] == HOLE}}
    kept, quads = _quads(points, range(len(table)), config.min_size)
    scores = _scores(xp, prob, table, sums, dict(zip(kept, quads)), contours, sizes, config)
    passed = [j for j, i in enumerate(kept) if scores[i] >= config.box_thresh]
    boxes = expand_quads(quads[passed], unclip_distances(quads[passed], config.unclip_ratio),
                         config.min_size + 2)
    return [(table[kept[j], _C["map"]], box, scores[kept[j]])
            for j, box in zip(passed, boxes) if box is not None]


def _polygon_results(xp, prob, cand, host, sizes, config):
    table, _, _, sums = host
    contours = _contours(xp, cand.mask, table, np.ones(len(table), bool))
    approx = {i: cv2.approxPolyDP(c, 0.002 * cv2.arcLength(c, True), True).reshape(-1, 2)
              for i, c in contours.items()}
    approx = {i: a for i, a in sorted(approx.items()) if len(a) >= 4}
    scores = _scores(xp, prob, table, sums, approx, contours, sizes, config)
    passed = [i for i in approx if scores[i] >= config.box_thresh]
    expanded = expand_polygons([approx[i] for i in passed], config.unclip_ratio, config.min_size + 2)
    return [(table[i, _C["map"]], poly, scores[i])
            for i, poly in zip(passed, expanded) if poly is not None]


def postprocess_batch(prob, sizes, config: PostprocessConfig) -> List[Tuple[list, list]]:
    """prob: (N, H, W) float32 (CuPy or NumPy); sizes: per map content (h, w).
    Returns per map (polygons in map pixels, scores), in the reference's order."""
    xp = array_module(prob)
    cand = find_candidates(xp, prob, sizes, config)
    host = to_host_compact(xp, cand)
    mode = _quad_results if config.box_type == "quad" else _polygon_results
    results = [([], []) for _ in sizes]
    for m, poly, score in mode(xp, prob, cand, host, sizes, config):
        results[m][0].append(poly)
        results[m][1].append(float(score))
    return results
