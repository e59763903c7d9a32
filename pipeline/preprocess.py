"""CPU preprocessing (NumPy / OpenCV): resize to multiples of the stride, normalise, NCHW.

This is also the oracle of the GPU preprocessing kernel (pipeline.gpu_preprocess).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from engine.errors import ShapeError
from dbnet.spec import ModelSpec


@dataclass(frozen=True)
class Letterbox:
    """How a frame maps onto the network input: input = (frame - origin) * scale, top-left aligned.

    scale_x / scale_y are input pixels per frame pixel; (content_h, content_w) is the part of the
    input covered by the frame (the rest is padding when letterboxing). `region`: the (x, y, w, h)
    part of the frame that was resized onto the input (a region of interest; None: all of it).
    """

    frame_h: int
    frame_w: int
    input_h: int
    input_w: int
    scale_x: float
    scale_y: float
    content_h: int
    content_w: int
    region: Optional[Tuple[int, int, int, int]] = None

    @property
    def area(self) -> Tuple[int, int, int, int]:
        """(x, y, w, h) of the frame pixels on the input: the region, else the whole frame."""
        return self.region or (0, 0, self.frame_w, self.frame_h)


def make_letterbox(frame_h: int, frame_w: int, input_h: int, input_w: int,
                   keep_aspect: bool = False, region: Optional[Tuple[int, int, int, int]] = None
                   ) -> Letterbox:
    """Stretch the frame (or its `region`, x, y, w, h) onto the input (DB reference), or keep
    its aspect ratio and pad."""
    h, w = (region[3], region[2]) if region else (frame_h, frame_w)
    if keep_aspect:
        s = min(input_h / h, input_w / w)
        ch, cw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        return Letterbox(frame_h, frame_w, input_h, input_w, cw / w, ch / h, ch, cw, region)
    return Letterbox(frame_h, frame_w, input_h, input_w, input_w / w, input_h / h,
                     input_h, input_w, region)


def crop(frame: np.ndarray, region: Optional[Tuple[int, int, int, int]]) -> np.ndarray:
    """The (x, y, w, h) region of a frame, as a view (no copy); the frame itself for None."""
    if region is None:
        return frame
    x, y, w, h = region
    return frame[y:y + h, x:x + w]


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
               keep_aspect: bool = False, out: Optional[np.ndarray] = None,
               region: Optional[Tuple[int, int, int, int]] = None) -> Tuple[np.ndarray, Letterbox]:
    """One BGR uint8 frame -> (3, H, W) float32 input and its Letterbox.

    `size` is the network (H, W); by default the spec's resize rule picks it (for the region).
    `out`: write the input there (a (3, H, W) float32 array, e.g. a batch slot) instead of a new
    array. `region`: only this (x, y, w, h) part of the frame (inside it) goes onto the input.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"expected an HxWx3 uint8 BGR frame, got {frame.shape} {frame.dtype}")
    fh, fw = frame.shape[:2]
    part = crop(frame, region)
    ih, iw = size or spec.resize.input_size(*part.shape[:2])
    if ih % spec.resize.stride or iw % spec.resize.stride:
        raise ShapeError(f"input size {ih}x{iw} is not a multiple of {spec.resize.stride}")
    box = make_letterbox(fh, fw, ih, iw, keep_aspect, region)
    resized = cv2.resize(part, (box.content_w, box.content_h), interpolation=cv2.INTER_LINEAR)
    chw = np.empty((3, ih, iw), np.float32) if out is None else out
    if (box.content_h, box.content_w) != (ih, iw):
        chw[:, box.content_h:, :] = 0.0  # zero = the mean colour after normalising
        chw[:, :box.content_h, box.content_w:] = 0.0
    normalise(resized, spec, chw[:, :box.content_h, :box.content_w])
    return chw, box


def preprocess_batch(frames: Sequence[np.ndarray], spec: ModelSpec, size: Tuple[int, int],
                     keep_aspect: bool = False, regions: Optional[List] = None
                     ) -> Tuple[np.ndarray, list]:
    """Frames (any sizes) -> one (N, 3, H, W) batch at `size`, and their Letterboxes;
    `regions`: per frame the (x, y, w, h) part of it that goes onto the input (None: all)."""
    batch = np.empty((len(frames), 3, size[0], size[1]), np.float32)
    regions = regions or [None] * len(frames)
    letterboxes = []
    for i, (frame, region) in enumerate(zip(frames, regions)):
        letterboxes.append(preprocess(frame, spec, size, keep_aspect, out=batch[i], region=region)[1])
    return batch, letterboxes


def as_bgr(image) -> np.ndarray:
    """An HxWx3 uint8 image: greyscale (HxW, HxWx1) gets three channels, as the networks want;
    anything else is a ShapeError (a Source of one's own may give such frames)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
    return image
