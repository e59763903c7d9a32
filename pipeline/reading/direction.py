"""`DirectionClassifier`: which text crops are upside down, turned before they are read.

A CTC recognizer reads text turned 180 degrees as garbage ("HELLO 42" upside down read "HH42").
PaddleOCR (`use_angle_cls`) and RapidOCR (`use_cls`) run a small classifier between detection
and recognition, labels "0" and "180"; this runs the same model (the rapidocr wheel ships
ch_ppocr_mobile_v2.0_cls_mobile.onnx) on the recognizer's own batches:

    with Recognizer(direction=True) as rec:    # or a DirectionClassifier / an .onnx path
        dets = rec.read(image, detections)

Its input is each crop at height 48, aspect kept up to width 192 (a longer one squeezed to it),
normalised as (x / 255 - 0.5) / 0.5 (BGR) and right-padded with zeros, as PaddleOCR feeds it.
The recognizer's crops are already cut and normalised (PP-OCR rec takes the same normalisation
at the same height), so the classifier's input is made from them, NumPy or CuPy alike (the
GPU crop path's batch stays on the GPU); a crop whose top class is "180" with a probability
above `thresh` has its own width (not the batch's padding) turned 180 degrees in place.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from engine.errors import ModelError
from engine.lazy import array_module
from engine.loader import RunnerOptions, load_runner
from engine.padding import pad_batch, runner_min_batch
from engine.shapes import ShapeProfile

from .ctc import as_probabilities
from .spec import RecSpec, rapidocr_model_path, runner_options

RAPIDOCR_CLS = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
LABELS = ("0", "180")
HEIGHT, WIDTH = 48, 192
MEAN, STD = 0.5, 0.5  # of x / 255, every channel; BGR as OpenCV reads
DEFAULT_THRESH = 0.9  # PaddleOCR's and RapidOCR's cls_thresh
BATCH_SIZE = 32


def default_cls_model_path() -> Path:
    """PaddleOCR's mobile text-direction classifier as the `rapidocr` wheel ships it."""
    return rapidocr_model_path(RAPIDOCR_CLS, "the text-direction classifier comes with the "
                               "rapidocr wheel: pip install 'dbrt[read]' (it ships {file}) or "
                               "pass --rec-cls-model")


class DirectionClassifier:
    """A 0 / 180 degree text-direction classifier over the recognizer's normalised crops.

    model:  .onnx / engine path (default: the rapidocr wheel's), or a Runner; one (N, 3, H, W)
            input, one (N, 2) output (probabilities or logits of "0" and "180")
    thresh: a crop is turned when "180" is its top class with a probability above this
    backend / device / options: as Recognizer's (engine.loader.load_runner)
    """

    def __init__(self, model=None, *, thresh: float = DEFAULT_THRESH, backend: str = "auto",
                 device: str = "auto", options: Optional[RunnerOptions] = None):
        if not 0.0 <= thresh <= 1.0:
            raise ModelError(f"the direction threshold must be from 0 to 1, got {thresh}")
        self.thresh = float(thresh)
        self.model_name = getattr(model, "name", None) or str(model or default_cls_model_path())
        if hasattr(model, "infer"):
            self.runner = model
        else:
            path = default_cls_model_path() if model is None else Path(model)
            options = runner_options(_profile, path, backend, device, options)
            self.runner = load_runner(path, backend=backend, device=device, options=options)
        self.runner.activate()
        try:
            self.output_name = _check_io(self.runner, self.model_name)
        except BaseException:  # refused: its session (GPU memory with TensorRT) let go
            self.runner.deactivate()
            raise
        self.min_batch = runner_min_batch(self.runner)
        self.classified = 0
        self.turned = 0
        self.undone = 0  # turns whose crop read more confidently upright (see Recognizer)

    def upside_down(self, batch, widths: Sequence[int], spec: RecSpec,
                    members: Optional[Sequence[int]] = None) -> np.ndarray:
        """Which crops of the recognizer's normalised batch (NumPy or CuPy, crop k valid in its
        first widths[k] columns) are upside down: (N,) bool, or one per crop of `members`."""
        inputs = classifier_input(batch, widths, spec, members)
        limit = int(getattr(self.runner, "max_batch", 0) or 0) or BATCH_SIZE
        probs = [self._infer(inputs[start:start + limit]) for start in range(0, len(inputs), limit)]
        probs = np.concatenate(probs) if probs else np.zeros((0, len(LABELS)), np.float32)
        self.classified += len(probs)
        return (probs.argmax(axis=1) == LABELS.index("180")) & (probs[:, 1] > self.thresh)

    def turn_upside_down(self, batch, widths: Sequence[int], spec: RecSpec,
                         candidates: Optional[np.ndarray] = None):
        """Turns the crops of `batch` the classifier finds upside down 180 degrees in place
        (only those of `candidates`, a bool mask, when given); returns their indices."""
        members = (np.arange(len(widths)) if candidates is None
                   else np.flatnonzero(np.asarray(candidates, bool)))
        if not len(members):
            return members
        turn = members[self.upside_down(batch, widths, spec, members)]
        for k in turn:
            turn_half(batch, k, widths[k])
        self.turned += len(turn)
        return turn

    def _infer(self, inputs) -> np.ndarray:
        count = int(inputs.shape[0])
        out = self.runner.infer(pad_batch(inputs, self.min_batch))[self.output_name][:count]
        out = np.asarray(out.get() if hasattr(out, "get") else out, np.float32)
        if out.shape != (count, len(LABELS)):
            raise ModelError(f"text-direction classifier {self.model_name} returned shape "
                             f"{out.shape} for {count} crops; expected ({count}, 2)")
        return as_probabilities(out)

    def describe(self) -> dict:
        return dict(model=self.model_name, runner=self.runner.name, thresh=self.thresh,
                    crops_classified=self.classified, crops_turned=self.turned,
                    turns_undone=self.undone)

    def close(self) -> None:
        self.runner.deactivate()


def direction_classifier(direction, backend: str, device: str,
                         options: Optional[RunnerOptions]) -> Optional[DirectionClassifier]:
    """The classifier a Recognizer's `direction` names: None / False (none), True (the
    shipped one), a DirectionClassifier, or a model path or Runner."""
    if direction is None or direction is False:
        return None
    if isinstance(direction, DirectionClassifier):
        return direction
    model = None if direction is True else direction
    return DirectionClassifier(model, backend=backend, device=device, options=options)


def classifier_input(batch, widths: Sequence[int], spec: RecSpec,
                     members: Optional[Sequence[int]] = None):
    """(N, 3, 48, 192) float32 (NumPy or CuPy, as `batch`): each crop's (of `members`, default
    all) valid columns of the recognizer's normalised batch, resized to height 48 keeping its
    aspect ratio (at most 192 wide, bilinear as cv2.INTER_LINEAR), in the classifier's
    normalisation, zero-padded."""
    xp = array_module(batch)
    _, _, height, batch_width = (int(d) for d in batch.shape)
    members = range(int(batch.shape[0])) if members is None else members
    out = xp.zeros((len(members), 3, HEIGHT, WIDTH), xp.float32)
    for row, k in enumerate(members):
        width = max(1, min(int(widths[k]), batch_width))
        crop = _renormalised(batch[k, :, :, :width], spec, xp)
        target = min(WIDTH, max(1, math.ceil(HEIGHT * width / height)))
        if height != HEIGHT:
            crop = _resize_linear(crop, 1, HEIGHT, xp)
        if target != width:
            crop = _resize_linear(crop, 2, target, xp)
        out[row, :, :, :target] = crop
    return out


def turn_half(batch, k: int, width: int) -> None:
    """Crop k of a normalised (N, C, H, W) batch turned 180 degrees in place: its first `width`
    columns reversed in both directions; the padding to their right stays where it is."""
    width = min(int(width), int(batch.shape[3]))
    batch[k, :, :, :width] = batch[k, :, ::-1, :width][:, :, ::-1].copy()


def _renormalised(crop, spec: RecSpec, xp):
    """A (3, H, W) crop in the recognizer's normalisation and channel order -> the
    classifier's ((x / 255 - 0.5) / 0.5, BGR); PP-OCR rec's preset takes that already."""
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    if spec.bgr and np.all(mean == MEAN) and np.all(std == STD):
        return crop
    unit = crop * xp.asarray(std)[:, None, None] + xp.asarray(mean)[:, None, None]  # x / 255
    if not spec.bgr:
        unit = unit[::-1]
    return ((unit - MEAN) / STD).astype(xp.float32)


def _resize_linear(array, axis: int, size: int, xp):
    """`array` resized to `size` along `axis` with OpenCV's INTER_LINEAR sampling (pixel
    centres aligned, edges clamped)."""
    old = int(array.shape[axis])
    src = np.maximum((np.arange(size, dtype=np.float64) + 0.5) * (old / size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), old - 1)
    high = np.minimum(low + 1, old - 1)
    frac = (src - low).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = size
    frac = xp.asarray(frac).reshape(shape)
    a = xp.take(array, xp.asarray(low), axis=axis)
    b = xp.take(array, xp.asarray(high), axis=axis)
    return (a + frac * (b - a)).astype(xp.float32)


def _profile() -> ShapeProfile:
    """The TensorRT profile of the classifier's input: batches of 1 to 32 crops of 48 x 192."""
    return ShapeProfile.from_hw((HEIGHT, WIDTH), (HEIGHT, WIDTH), (HEIGHT, WIDTH),
                                batch=(1, 8, BATCH_SIZE), multiples=(HEIGHT, WIDTH)).validate()


def _check_io(runner, name: str) -> str:
    """One NCHW image input and one (N, 2) output, else an error naming what it has."""
    inputs, outputs = runner.inputs, runner.outputs
    image_in = len(inputs) == 1 and len(inputs[0].shape) == 4 and _fits(inputs[0].shape[1], 3)
    two_out = len(outputs) == 1 and len(outputs[0].shape) == 2 and _fits(outputs[0].shape[1], 2)
    if not (image_in and two_out):
        raise ModelError(f"{name} is not a text-direction classifier: expected one (N, 3, H, W) "
                         f"input and one (N, 2) output (labels 0, 180), got inputs "
                         f"{[(t.name, t.shape) for t in inputs]}, outputs "
                         f"{[(t.name, t.shape) for t in outputs]}")
    return outputs[0].name


def _fits(dim, size: int) -> bool:
    """A fixed dimension of this size, or a dynamic one (None / a name)."""
    return not isinstance(dim, int) or dim == size
