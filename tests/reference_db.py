"""An independent re-implementation of the reference DB post-processing, for differential tests
and the benchmark.

It follows the documented behaviour of PaddleOCR's `DBPostProcess` (which RapidOCR copies)
step by step, one contour at a time, as the reference does: findContours(RETR_LIST), the first
`max_candidates` contours, minAreaRect + corner ordering, fillPoly-mask mean score on the integer
bounding crop, pyclipper unclip of the float box (truncated to integers by pyclipper), a second
minAreaRect, rounding to the destination size. It deliberately shares no code with
`pipeline.postprocess`. The unclip distance uses shapely's Polygon area / length, as PaddleOCR
does (a plain shoelace sum rounds differently on some boxes). One documented difference from PaddleOCR:
polygon mode honours score_mode="slow" (PaddleOCR always uses the fast score there).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon


class ReferenceDB:
    def __init__(self, thresh=0.3, box_thresh=0.6, max_candidates=1000, unclip_ratio=1.5,
                 use_dilation=False, score_mode="fast", box_type="quad", min_size=3):
        self.thresh, self.box_thresh = thresh, box_thresh
        self.max_candidates, self.unclip_ratio = max_candidates, unclip_ratio
        self.use_dilation, self.score_mode, self.box_type = use_dilation, score_mode, box_type
        self.min_size = min_size

    # -- steps --------------------------------------------------------------------------------
    @staticmethod
    def mini_box(points):
        rect = cv2.minAreaRect(points)
        corners = sorted(list(cv2.boxPoints(rect)), key=lambda p: p[0])
        a, d = (0, 1) if corners[1][1] > corners[0][1] else (1, 0)
        b, c = (2, 3) if corners[3][1] > corners[2][1] else (3, 2)
        return [corners[a], corners[b], corners[c], corners[d]], min(rect[1])

    @staticmethod
    def mean_in_polygon(pred, poly, x_lo, x_hi, y_lo, y_hi):
        mask = np.zeros((y_hi - y_lo + 1, x_hi - x_lo + 1), dtype=np.uint8)
        local = poly.copy()
        local[:, 0] = local[:, 0] - x_lo
        local[:, 1] = local[:, 1] - y_lo
        cv2.fillPoly(mask, local.reshape(1, -1, 2).astype(np.int32), 1)
        return cv2.mean(pred[y_lo:y_hi + 1, x_lo:x_hi + 1], mask)[0]

    def score_fast(self, pred, box):
        h, w = pred.shape[:2]
        x_lo = int(np.clip(math.floor(box[:, 0].min()), 0, w - 1))
        x_hi = int(np.clip(math.ceil(box[:, 0].max()), 0, w - 1))
        y_lo = int(np.clip(math.floor(box[:, 1].min()), 0, h - 1))
        y_hi = int(np.clip(math.ceil(box[:, 1].max()), 0, h - 1))
        return self.mean_in_polygon(pred, box.copy(), x_lo, x_hi, y_lo, y_hi)

    def score_slow(self, pred, contour):
        h, w = pred.shape[:2]
        pts = contour.reshape(-1, 2).copy()
        x_lo, x_hi = int(np.clip(pts[:, 0].min(), 0, w - 1)), int(np.clip(pts[:, 0].max(), 0, w - 1))
        y_lo, y_hi = int(np.clip(pts[:, 1].min(), 0, h - 1)), int(np.clip(pts[:, 1].max(), 0, h - 1))
        return self.mean_in_polygon(pred, pts, x_lo, x_hi, y_lo, y_hi)

    def unclip(self, box):
        poly = Polygon(box)
        distance = poly.area * self.unclip_ratio / poly.length
        offset = pyclipper.PyclipperOffset()
        offset.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        return offset.Execute(distance)

    # -- the two modes ----------------------------------------------------------------------
    def quads(self, pred, contours, dest_w, dest_h):
        h, w = pred.shape
        boxes, scores = [], []
        for contour in contours[:self.max_candidates]:
            points, short = self.mini_box(contour)
            if short < self.min_size:
                continue
            points = np.array(points)
            score = (self.score_fast(pred, points.reshape(-1, 2)) if self.score_mode == "fast"
                     else self.score_slow(pred, contour))
            if self.box_thresh > score:
                continue
            expanded = np.array(self.unclip(points)).reshape(-1, 1, 2).astype(np.int32)
            box, short = self.mini_box(expanded)
            if short < self.min_size + 2:
                continue
            box = np.array(box)
            box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
            box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
            boxes.append(box.astype(np.float32))
            scores.append(score)
        return boxes, scores

    def polygons(self, pred, contours, dest_w, dest_h):
        h, w = pred.shape
        boxes, scores = [], []
        for contour in contours[:self.max_candidates]:
            eps = 0.002 * cv2.arcLength(contour, True)
            points = cv2.approxPolyDP(contour, eps, True).reshape(-1, 2)
            if points.shape[0] < 4:
                continue
            score = (self.score_fast(pred, points) if self.score_mode == "fast"
                     else self.score_slow(pred, contour))
            if self.box_thresh > score:
                continue
            expanded = self.unclip(points)
            if len(expanded) != 1:
                continue
            box = np.array(expanded[0], dtype=np.float64).reshape(-1, 2)
            _, short = self.mini_box(box.reshape(-1, 1, 2).astype(np.int32))
            if short < self.min_size + 2:
                continue
            box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
            box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
            boxes.append(box.astype(np.float32))
            scores.append(score)
        return boxes, scores

    def __call__(self, pred, dest_w=None, dest_h=None):
        """pred: (H, W) float32 map -> (list of polygons in destination pixels, scores)."""
        h, w = pred.shape
        bitmap = (pred > self.thresh).astype(np.uint8)
        if self.use_dilation:
            bitmap = cv2.dilate(bitmap, np.array([[1, 1], [1, 1]], dtype=np.uint8))
        contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        mode = self.quads if self.box_type == "quad" else self.polygons
        return mode(pred, contours, dest_w or w, dest_h or h)
