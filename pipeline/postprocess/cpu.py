"""CPU post-processing of one probability map (NumPy / OpenCV), box for box the reference."""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .config import PostprocessConfig
from .geometry import expand_polygon, expand_quad, mini_box

_DILATE_KERNEL = np.ones((2, 2), np.uint8)


def binarize(prob: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """prob > thresh as uint8 0/1, dilated by 2x2 when asked (anchor at the kernel centre)."""
    bitmap = (prob > config.thresh).view(np.uint8)
    return cv2.dilate(bitmap, _DILATE_KERNEL) if config.use_dilation else bitmap


def find_contours(bitmap: np.ndarray, max_candidates: int) -> list:
    """All contours, holes included (RETR_LIST), in OpenCV's order, first `max_candidates`."""
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours[:max_candidates])


def _crop_mean(prob: np.ndarray, poly: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> float:
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    shifted = (poly.astype(np.float64) - (x0, y0)).astype(np.int32)  # truncation, as the reference
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0]


def score_fast(prob: np.ndarray, poly: np.ndarray) -> float:
    """Mean probability inside the filled polygon, on its (floor/ceil) bounding crop."""
    h, w = prob.shape
    x0, y0 = np.clip(np.floor(poly.min(0)).astype(int), 0, (w - 1, h - 1))
    x1, y1 = np.clip(np.ceil(poly.max(0)).astype(int), 0, (w - 1, h - 1))
    return _crop_mean(prob, poly, x0, y0, x1, y1)


def score_slow(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the filled contour."""
    h, w = prob.shape
    pts = contour.reshape(-1, 2)
    x0, y0 = np.clip(pts.min(0), 0, (w - 1, h - 1))
    x1, y1 = np.clip(pts.max(0), 0, (w - 1, h - 1))
    return _crop_mean(prob, pts, x0, y0, x1, y1)


def _quads(prob, contours, config) -> Tuple[List[np.ndarray], List[float]]:
    polys, scores = [], []
    for contour in contours:
        quad, short = mini_box(contour)
        if short < config.min_size:
            continue
        score = score_fast(prob, quad) if config.score_mode == "fast" else score_slow(prob, contour)
        if score < config.box_thresh:
            continue
        box = expand_quad(quad, config.unclip_ratio, config.min_size + 2)
        if box is not None:
            polys.append(box)
            scores.append(score)
    return polys, scores


def _polygons(prob, contours, config) -> Tuple[List[np.ndarray], List[float]]:
    polys, scores = [], []
    for contour in contours:
        approx = cv2.approxPolyDP(contour, 0.002 * cv2.arcLength(contour, True), True).reshape(-1, 2)
        if len(approx) < 4:
            continue
        score = score_fast(prob, approx) if config.score_mode == "fast" else score_slow(prob, contour)
        if score < config.box_thresh:
            continue
        poly = expand_polygon(approx, config.unclip_ratio, config.min_size + 2)
        if poly is not None:
            polys.append(poly)
            scores.append(score)
    return polys, scores


def postprocess_map(prob: np.ndarray, config: PostprocessConfig) -> Tuple[List[np.ndarray], List[float]]:
    """One (H, W) float32 map -> (polygons in map pixels, scores), in the reference's order."""
    contours = find_contours(binarize(prob, config), config.max_candidates)
    if config.box_type == "quad":
        return _quads(prob, contours, config)
    return _polygons(prob, contours, config)
