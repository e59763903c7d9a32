"""CPU preprocessing (NumPy / OpenCV): resize to multiples of the stride, normalise, NCHW.

This is also the oracle of the GPU preprocessing kernel (pipeline.gpu_preprocess).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from engine.errors import ShapeError
from engine.modelspec import MAX_INPUT_SIDE, ModelSpec


@dataclass(frozen=True)
class Letterbox:
    """How a frame maps onto the network input: input = frame * scale, top-left aligned.

    scale_x / scale_y are input pixels per frame pixel; (content_h, content_w) is the part of the
    input covered by the frame (the rest is padding when letterboxing).
    """

    frame_h: int
    frame_w: int
    input_h: int
    input_w: int
    scale_x: float
    scale_y: float
    content_h: int
    content_w: int


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def target_size(frame_h: int, frame_w: int, limit_side: int, limit_type: str = "min",
                stride: int = 32, max_side: int = MAX_INPUT_SIDE) -> Tuple[int, int]:
    """Network input (H, W), multiples of `stride`, following the DB / PaddleOCR resize rule.

    limit_type "min": the short side becomes `limit_side` (MhLiao's 736);
    limit_type "max": the long side is capped at `limit_side` (never upscaled);
    limit_type "min_at_least": the short side is raised to `limit_side` when shorter (PP-OCR).
    Whatever the rule asks, no side exceeds `max_side` (the aspect ratio is kept), so a 2x4000
    strip under "min side 736" gets a 32x4000 input, not 736x1,472,000.
    """
    if frame_h <= 0 or frame_w <= 0:
        raise ShapeError(f"empty frame {frame_h}x{frame_w}")
    if limit_type == "min":
        ratio = limit_side / min(frame_h, frame_w)
        size = _round_to(frame_h * ratio, stride), _round_to(frame_w * ratio, stride)
    elif limit_type == "max":
        ratio = min(1.0, limit_side / max(frame_h, frame_w))
        size = _round_to(frame_h * ratio, stride), _round_to(frame_w * ratio, stride)
    elif limit_type == "min_at_least":
        # PaddleOCR / RapidOCR "min": raise a short side below limit_side, never reduce; they
        # truncate the scaled size before rounding, which matters on x.5 multiples of stride.
        ratio = max(1.0, limit_side / min(frame_h, frame_w))
        size = _round_to(int(frame_h * ratio), stride), _round_to(int(frame_w * ratio), stride)
    else:
        raise ShapeError(f"limit_type must be 'min', 'max' or 'min_at_least', got {limit_type!r}")
    if max(size) <= max_side:
        return size
    ratio = max_side / max(frame_h, frame_w)  # rounded down, so the cap holds
    return tuple(max(stride, int(side * ratio) // stride * stride) for side in (frame_h, frame_w))


def make_letterbox(frame_h: int, frame_w: int, input_h: int, input_w: int,
                   keep_aspect: bool = False) -> Letterbox:
    """Stretch the frame onto the input (DB reference), or keep its aspect ratio and pad."""
    if keep_aspect:
        s = min(input_h / frame_h, input_w / frame_w)
        ch, cw = max(1, int(round(frame_h * s))), max(1, int(round(frame_w * s)))
        return Letterbox(frame_h, frame_w, input_h, input_w, cw / frame_w, ch / frame_h, ch, cw)
    return Letterbox(frame_h, frame_w, input_h, input_w, input_w / frame_w, input_h / frame_h,
                     input_h, input_w)


def normalise(image: np.ndarray, spec: ModelSpec, out: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 HWC BGR -> float32 CHW, in the model's colour order and normalisation.

    Written per channel straight into `out` ((3, H, W) float32, e.g. a slot of the batch) as
    x * (1/std) - mean/std: on a 2 MP frame ~10x faster than NumPy's astype / subtract /
    multiply / transpose chain, which matters on a CPU where this shares cores with inference.
    """
    h, w = image.shape[:2]
    if out is None:
        out = np.empty((3, h, w), np.float32)
    planes = cv2.split(image)
    if spec.color != "BGR":
        planes = planes[::-1]
    for c, plane in enumerate(planes):
        scale = 1.0 / float(spec.std[c])
        view = out[c]
        res = cv2.addWeighted(plane, scale, plane, 0.0, -float(spec.mean[c]) * scale, dst=view,
                              dtype=cv2.CV_32F)
        if not np.shares_memory(res, view):  # OpenCV could not write in place (odd strides)
            view[...] = res
    return out


def preprocess(frame: np.ndarray, spec: ModelSpec, size: Tuple[int, int] = None,
               keep_aspect: bool = False, out: Optional[np.ndarray] = None
               ) -> Tuple[np.ndarray, Letterbox]:
    """One BGR uint8 frame -> (3, H, W) float32 input and its Letterbox.

    `size` is the network (H, W); by default the spec's resize rule picks it. `out`: write the
    input there (a (3, H, W) float32 array, e.g. a batch slot) instead of a new array.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"expected an HxWx3 uint8 BGR frame, got {frame.shape} {frame.dtype}")
    fh, fw = frame.shape[:2]
    ih, iw = size or target_size(fh, fw, spec.limit_side, spec.limit_type, spec.stride)
    if ih % spec.stride or iw % spec.stride:
        raise ShapeError(f"input size {ih}x{iw} is not a multiple of {spec.stride}")
    box = make_letterbox(fh, fw, ih, iw, keep_aspect)
    resized = cv2.resize(frame, (box.content_w, box.content_h), interpolation=cv2.INTER_LINEAR)
    chw = np.empty((3, ih, iw), np.float32) if out is None else out
    if (box.content_h, box.content_w) != (ih, iw):
        chw[:, box.content_h:, :] = 0.0  # zero = the mean colour after normalising
        chw[:, :box.content_h, box.content_w:] = 0.0
    normalise(resized, spec, chw[:, :box.content_h, :box.content_w])
    return chw, box


def preprocess_batch(frames: Sequence[np.ndarray], spec: ModelSpec, size: Tuple[int, int],
                     keep_aspect: bool = False) -> Tuple[np.ndarray, list]:
    """Frames (any sizes) -> one (N, 3, H, W) batch at `size`, and their Letterboxes."""
    batch = np.empty((len(frames), 3, size[0], size[1]), np.float32)
    boxes = []
    for i, frame in enumerate(frames):
        boxes.append(preprocess(frame, spec, size, keep_aspect, out=batch[i])[1])
    return batch, boxes
