"""`DBPostprocessor`: probability maps -> `Detections` in frame pixels, on the CPU or the GPU.

The path follows the map: a CuPy map stays on its GPU (only the surviving candidates are copied
to the host), a NumPy map is processed with NumPy / OpenCV. Both return the reference's boxes.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import cv2
import numpy as np

from engine.errors import ShapeError
from engine.lazy import array_module, require
from pipeline.detections import Detections
from pipeline.preprocess import Letterbox

from . import cpu
from dbnet.postprocess_config import PostprocessConfig, PostprocessError
from .geometry import to_frame

DEVICES = ("auto", "cpu", "gpu")


def _as_batch(prob, xp):
    """(N, 1, H, W), (N, H, W) or (H, W) -> (N, H, W) float32 of the same array module."""
    if prob.ndim == 4 and prob.shape[1] == 1:
        prob = prob[:, 0]
    elif prob.ndim == 2:
        prob = prob[None]
    if prob.ndim != 3:
        raise ShapeError(f"expected probability maps of shape (N, 1, H, W) or (N, H, W), "
                         f"got {tuple(prob.shape)}")
    if prob.dtype.kind != "f":
        raise ShapeError(f"probability maps must be floating point, got {prob.dtype}")
    return xp.ascontiguousarray(prob, dtype=xp.float32)


def _check_letterboxes(letterboxes, n: int, h: int, w: int) -> List[Letterbox]:
    if isinstance(letterboxes, Letterbox):
        letterboxes = [letterboxes]
    boxes = list(letterboxes)
    if len(boxes) != n:
        raise ShapeError(f"{n} probability maps but {len(boxes)} letterboxes")
    for box in boxes:
        if (box.input_h, box.input_w) != (h, w):
            raise ShapeError(f"a letterbox for a {box.input_h}x{box.input_w} input was given "
                             f"with a {h}x{w} probability map")
    return boxes


def check_finite(prob: np.ndarray) -> None:
    """NaN / inf in a map means a broken model or engine: say so instead of returning junk.
    The float64 sum of float32 values is finite exactly when every value is (it cannot
    overflow), and cv2.sumElems needs no temporary the size of the map."""
    if prob.size and not math.isfinite(cv2.sumElems(prob.reshape(-1, prob.shape[-1]))[0]):
        raise PostprocessError(cpu.NOT_FINITE)


def check_padding_finite(prob: np.ndarray, h: int, w: int) -> None:
    """check_finite on what lies outside a map's (h, w) content (`cpu.binarize` checks the
    content while it thresholds it)."""
    check_finite(prob[h:])
    check_finite(prob[:h, w:])


class DBPostprocessor:
    """The DB post-processing of a batch of maps at network-input resolution.

    config: `PostprocessConfig`; device: "auto" (where the map lives), "cpu" or "gpu".
    """

    def __init__(self, config: Optional[PostprocessConfig] = None, device: str = "auto"):
        if device not in DEVICES:
            raise PostprocessError(f"device must be one of {DEVICES}, got {device!r}")
        self.config = config or PostprocessConfig()
        self.device = device

    def __repr__(self) -> str:
        return f"DBPostprocessor({self.config}, device={self.device!r})"

    def _place(self, prob):
        """(array module, map on it): where the map lives, unless `device` says otherwise."""
        xp = array_module(prob)
        if self.device == "cpu" and xp is not np:
            return np, prob.get()
        if self.device == "gpu" and xp is np:
            xp = require("cupy")
        return xp, xp.asarray(prob)

    def __call__(self, prob, letterboxes: Sequence[Letterbox]) -> List[Detections]:
        """prob: (N, 1, H, W) or (N, H, W) maps at network-input resolution; one Letterbox per
        map (how its frame was resized onto the input)."""
        xp, prob = self._place(prob)
        batch = _as_batch(prob, xp)
        n, h, w = batch.shape
        boxes = _check_letterboxes(letterboxes, n, h, w)
        if xp is np:
            return self.finish(self._scored(batch, boxes), boxes)
        from . import gpu

        results = gpu.postprocess_batch(batch, [(b.content_h, b.content_w) for b in boxes], self.config)
        return [to_detections(polys, scores, box) for (polys, scores), box in zip(results, boxes)]

    def _scored(self, batch: np.ndarray, boxes: List[Letterbox]) -> list:
        """Per map of a host batch its candidates and scores (the GPU path checks on the
        device, with its bitmap copy)."""
        staged = []
        for i, b in enumerate(boxes):
            check_padding_finite(batch[i], b.content_h, b.content_w)
            staged.append(cpu.scored_candidates(batch[i, :b.content_h, :b.content_w], self.config))
        return staged

    def scored(self, prob, letterboxes: Sequence[Letterbox]) -> list:
        """The first half of a CPU call: per map its candidates and their scores, which depend on
        thresh but not on box_thresh or unclip_ratio. `finish` completes them under any of those,
        so threshold tuning finds candidates once per thresh (pipeline.tune)."""
        batch = _as_batch(prob if array_module(prob) is np else prob.get(), np)
        n, h, w = batch.shape
        return self._scored(batch, _check_letterboxes(letterboxes, n, h, w))

    def finish(self, staged: list, letterboxes: Sequence[Letterbox]) -> List[Detections]:
        """Detections of `scored` maps under this postprocessor's box_thresh and unclip_ratio
        (its thresh and the other settings must be those the candidates were found with)."""
        results = [cpu.finish(cand, scores, self.config) for cand, scores in staged]
        return [to_detections(polys, scores, box) for (polys, scores), box in zip(results, letterboxes)]


def to_detections(polys, scores, box: Letterbox) -> Detections:
    """Polygons in map pixels -> Detections in frame pixels (rounded and clipped as the reference).
    All polygons are mapped in one vectorised call (each keeps its own precision: float32 quads,
    int32 polygons divide in float64). A region of interest's map is mapped onto the region,
    then moved by its origin: whole pixels, so the rounding stays the reference's."""
    x, y, w, h = box.area
    if not polys:
        frame_polys = ()
    elif all(len(p) == len(polys[0]) for p in polys):  # quads
        frame_polys = tuple(_moved(to_frame(np.stack(polys), box.content_w, box.content_h, w, h),
                                   x, y))
    else:
        flat = _moved(to_frame(np.concatenate(polys), box.content_w, box.content_h, w, h), x, y)
        sizes = [len(p) for p in polys]
        frame_polys = tuple(flat[end - size:end] for end, size in zip(np.cumsum(sizes).tolist(), sizes))
    return Detections(frame_polys, np.asarray(scores, np.float32))


def _moved(points: np.ndarray, x: int, y: int) -> np.ndarray:
    """Region pixels -> frame pixels (in place)."""
    if x or y:
        points += np.array([x, y], np.float32)
    return points
