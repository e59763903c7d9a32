"""`Recognizer`: reads the text inside detected polygons with a CTC recognizer ONNX.

    with Recognizer() as rec:                          # PP-OCRv6 rec as the rapidocr wheel ships it
        dets = rec.read(image, detector.detect(image)) # detections with "text" / "text_score"

Any CTC model with one (N, 3, H, W) input and one (N, T, classes) output runs through the same
runners as the detector; its dictionary comes from `charset` (a file, one character per line) or
from the model's own `character` metadata (RapidOCR's PP-OCR ONNX files carry it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from engine.errors import ModelError
from engine.lazy import array_module
from engine.padding import pad_batch, runner_min_batch
from engine.loader import RunnerOptions, load_runner

from ..detections import Detections
from ..preprocess import as_bgr
from .crops import crop_batches, cut_crop, pad_quads, plan_crops, reading_quads
from .ctc import Charset, characters_from_metadata, ctc_greedy_decode
from .direction import direction_classifier, turn_half
from .spec import RecSpec, preset as named_preset, rapidocr_model_path, runner_options

TEXT, TEXT_SCORE = "text", "text_score"
RAPIDOCR_REC = "PP-OCRv6_rec_small.onnx"


def default_rec_model_path() -> Path:
    """PP-OCRv6 rec small as the `rapidocr` wheel ships it (pip install dbrt[read])."""
    return rapidocr_model_path(RAPIDOCR_REC, "reading text needs a recognizer: pip install "
                               "'dbrt[read]' (the rapidocr wheel ships {file}) or pass --rec-model")


class Recognizer:
    """A CTC text recognizer: crops, one engine call per batch of crops, greedy decoding.

    model:   .onnx path (default: RapidOCR's PP-OCRv6 rec small), or a Runner
    charset: a dictionary file, a Charset, or None for the model's own `character` metadata
    spec:    a RecSpec (crop height, widths, normalisation, batch size); default: `preset`'s
    backend: "auto", "onnxruntime" or "tensorrt" (as engine.loader.load_runner: "auto" runs an
             .onnx with TensorRT through the engine cache when TensorRT and a GPU are usable,
             with the spec's dynamic-width profile, `RecSpec.profile`); device: "auto", "cpu",
             "cuda"; options: engine.loader.RunnerOptions (default on ONNX Runtime: idle threads
             sleep, spin=False: in a run the recognizer works beside the detector's session,
             whose cores busy-waiting threads would take)
    direction: turn upside-down crops before reading them (direction.py): None (off), True
             (the rapidocr wheel's classifier), a DirectionClassifier, or a classifier's path
    """

    def __init__(self, model=None, charset: Union[str, os.PathLike, Charset, None] = None, *,
                 spec: Optional[RecSpec] = None, preset: str = "ppocr", backend: str = "auto",
                 device: str = "auto", options: Optional[RunnerOptions] = None, direction=None):
        self.spec = spec or named_preset(preset)
        given_options = options  # the classifier's own runner takes them without the profile
        self.model_name = getattr(model, "name", None) or str(model or default_rec_model_path())
        if hasattr(model, "infer"):
            self.runner = model
        else:
            path = default_rec_model_path() if model is None else Path(model)
            options = runner_options(self.spec.profile, path, backend, device, options)
            self.runner = load_runner(path, backend=backend, device=device, options=options)
        self.runner.activate()
        try:  # a model, dictionary or classifier refused leaves no session / GPU memory behind
            self.output_name, num_classes = _check_ctc_io(self.runner, self.spec, self.model_name)
            self.spec = _fitted_to_width(self.spec, self.runner.inputs[0].shape[3])
            self.min_batch = runner_min_batch(self.runner)  # a fixed batch: shorter ones padded
            self.charset = self._charset(charset, num_classes)
            self.direction = direction_classifier(direction, backend, device, given_options)
        except BaseException:
            self.runner.deactivate()
            raise
        self.skipped = 0  # polygons that rectified to nothing (too thin to read)
        self.crops_read = 0
        self._cropper = None

    def _charset(self, charset, num_classes: Optional[int]) -> Charset:
        if isinstance(charset, Charset):
            if num_classes is not None and len(charset) != num_classes:
                raise ModelError(f"the charset has {len(charset)} classes, the recognizer "
                                 f"{self.model_name} has {num_classes}")
            return charset
        if num_classes is None:
            raise ModelError(f"recognizer {self.model_name}: its output's class count is not fixed; "
                             "dbrt cannot check a dictionary against it")
        if charset is not None:
            return Charset.from_file(charset, num_classes)
        chars = characters_from_metadata(self.runner.metadata)
        if not chars:
            raise ModelError(f"recognizer {self.model_name} carries no dictionary; pass "
                             "--rec-dict FILE (one character per line)")
        return Charset.from_characters(chars, num_classes, f"the dictionary in {self.model_name}")

    # -- reading ------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Crops per engine call: the spec's, never more than the model takes (one exported for
        a fixed batch size, an engine's profile: `Runner.max_batch`, 0 for no limit), and all
        that a model of a fixed batch size takes (it is padded to them in any case)."""
        limit = int(getattr(self.runner, "max_batch", 0) or 0)
        size = min(self.spec.batch_size, limit) if limit else self.spec.batch_size
        return max(size, self.min_batch)

    def read(self, image, detections: Detections) -> Detections:
        """`detections` with two more columns: "text" (str) and "text_score" (float32, the mean
        probability of the characters read; 0 with an empty text for a polygon too thin to read).
        `image`: the BGR uint8 frame, a NumPy array (crops cut with OpenCV) or a CuPy array
        already on the GPU (crops cut there by one kernel per batch, gpu_crops.py)."""
        n = len(detections)
        texts, scores = [""] * n, np.zeros(n, np.float32)
        if n:
            if isinstance(image, np.ndarray):  # greyscale, as the detector takes it
                image = as_bgr(image)
            spec, size = self.spec, self.batch_size
            quads = pad_quads(reading_quads(detections.polygons), spec.margin)
            plan = plan_crops(quads, spec.height, spec.min_width, spec.max_width)
            self.skipped += int(n - plan.valid.sum())
            self._read_plan(image, plan, crop_batches(plan, size), texts, scores)
            if plan.tall.any():  # vertical text reads either way: the more confident one wins
                flipped = plan.turned_half()
                tall = np.flatnonzero(plan.tall)
                batches = [tall[k:k + size] for k in range(0, len(tall), size)]
                self._read_plan(image, flipped, batches, texts, scores, keep_better=True)
        data = dict(detections.data)
        data[TEXT], data[TEXT_SCORE] = np.asarray(texts, dtype=str), scores
        return Detections(detections.polygons, detections.scores, data)

    def _read_plan(self, image, plan, batches, texts: list, scores: np.ndarray,
                   keep_better: bool = False) -> None:
        spec, on_gpu = self.spec, array_module(image) is not np
        for members in batches:
            if on_gpu:
                batch = self._gpu_cropper()(image, plan, members)
            else:
                batch = _normalise([cut_crop(image, plan.corners[i], int(plan.widths[i]),
                                             spec.height) for i in members], spec)
            if keep_better:  # a tall crop is read both ways already: no direction classifier
                batch_texts, batch_scores = self._infer_decode(batch)
            else:
                batch_texts, batch_scores = self._read_batch(batch, plan.widths[members],
                                                             candidates=~plan.tall[members])
            for i, text, score in zip(members, batch_texts, batch_scores):
                if not keep_better or score > scores[i]:
                    texts[i], scores[i] = text, score

    def recognize(self, crops: Sequence[np.ndarray]) -> Tuple[List[str], np.ndarray]:
        """Texts and confidences of upright BGR uint8 crops of any size (each is resized to the
        recognizer's height; greyscale ones get three channels; an empty one reads as "" with
        confidence 0, as a polygon too thin to read), batched by width."""
        spec = self.spec
        sized, readable = [], [k for k, crop in enumerate(crops) if np.asarray(crop).size]
        for crop in (as_bgr(crops[k]) for k in readable):  # OpenCV cannot warp an empty image
            h, w = crop.shape[:2]
            width = int(np.clip(np.ceil(spec.height * w / max(h, 1)), spec.min_width, spec.max_width))
            sized.append(cut_crop(crop, np.float32([[0, 0], [w, 0], [w, h], [0, h]]), width,
                                  spec.height))
        texts, scores = [""] * len(crops), np.zeros(len(crops), np.float32)
        order = np.argsort([c.shape[1] for c in sized], kind="stable")
        size = self.batch_size
        for start in range(0, len(order), size):
            members = order[start:start + size]
            got_texts, got_scores = self._recognize([sized[i] for i in members])
            for i, text, score in zip(members, got_texts, got_scores):
                texts[readable[i]], scores[readable[i]] = text, score
        return texts, scores

    def _recognize(self, crops: Sequence[np.ndarray]) -> Tuple[List[str], np.ndarray]:
        return self._read_batch(_normalise(crops, self.spec), [c.shape[1] for c in crops])

    def _read_batch(self, batch, widths: Sequence[int], candidates=None):
        """`_infer_decode` of a normalised batch, the crops the direction classifier (if any)
        finds upside down turned first; those are read upright too and the more confident
        reading kept: the classifier alone turned a few short upright words ("OPEN")."""
        if self.direction is None:
            return self._infer_decode(batch)
        turned = self.direction.turn_upside_down(batch, widths, self.spec, candidates)
        texts, scores = self._infer_decode(batch)
        if len(turned):
            upright = batch[turned]  # a copy (fancy indexing), turned back
            for row, k in enumerate(turned):
                turn_half(upright, row, widths[k])
            upright_texts, upright_scores = self._infer_decode(upright)
            better = upright_scores > scores[turned]
            for k, text, score in zip(turned[better], np.asarray(upright_texts, object)[better],
                                      upright_scores[better]):
                texts[k], scores[k] = text, score
            self.direction.undone += int(better.sum())
        return texts, scores

    def _infer_decode(self, batch) -> Tuple[List[str], np.ndarray]:
        """One engine call on a normalised (N, 3, height, W) batch (NumPy or CuPy), decoded;
        a batch shorter than the model takes is padded with copies of its last crop, whose
        outputs are dropped."""
        count = int(batch.shape[0])
        out = self.runner.infer(pad_batch(batch, self.min_batch))[self.output_name][:count]
        out = out.get() if hasattr(out, "get") else np.asarray(out)
        if out.ndim != 3 or out.shape[0] != count:
            raise ModelError(f"recognizer {self.model_name} returned shape {out.shape} for "
                             f"{count} crops; a CTC recognizer returns (N, T, classes)")
        self.crops_read += count
        return ctc_greedy_decode(out, self.charset)

    def _gpu_cropper(self):
        if self._cropper is None:  # CuPy is imported only for a frame that is on the GPU
            from .gpu_crops import GpuCropper

            self._cropper = GpuCropper(self.spec)
        return self._cropper

    def describe(self) -> dict:
        return dict(model=self.model_name, runner=self.runner.name, classes=len(self.charset),
                    height=self.spec.height, max_width=self.spec.max_width, batch_size=self.batch_size,
                    margin=self.spec.margin, crops_read=self.crops_read, skipped_unreadable=self.skipped,
                    direction=None if self.direction is None else self.direction.describe())

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.deactivate()
        if self.direction is not None:
            self.direction.close()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _normalise(crops: Sequence[np.ndarray], spec: RecSpec) -> np.ndarray:
    """(N, 3, height, W) float32: crops normalised, left-aligned, padded with zeros (the
    normalised mid-grey PaddleOCR pads with) to the batch's bucketed width."""
    width = spec.batch_width(max(c.shape[1] for c in crops))
    batch = np.zeros((len(crops), 3, spec.height, width), np.float32)
    scale = 1.0 / (255.0 * np.asarray(spec.std, np.float32))
    shift = np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    for k, crop in enumerate(crops):
        pixels = crop[:, :width] if spec.bgr else crop[:, :width, ::-1]
        batch[k, :, :, :pixels.shape[1]] = (pixels * scale - shift).transpose(2, 0, 1)
    return batch


def _fitted_to_width(spec: RecSpec, width) -> RecSpec:
    """The spec for a model whose input width is fixed (a PP-OCR rec exported at 320): every
    crop is resized to the height keeping its aspect ratio, a wider one squeezed to the width,
    and padded on the right to it (as PaddleOCR feeds such a model); a dynamic width keeps
    the spec."""
    if not isinstance(width, int) or width <= 0:
        return spec
    return spec.replace(min_width=min(spec.min_width, width), max_width=width, width_step=width)


def _check_ctc_io(runner, spec: RecSpec, name: str) -> Tuple[str, Optional[int]]:
    """One NCHW image input of the spec's height and one (N, T, classes) output, else an error
    naming what the model has instead."""
    inputs, outputs = runner.inputs, runner.outputs
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelError(f"recognizer {name} is not CTC-shaped: expected one (N, 3, H, W) input, "
                         f"got {[(t.name, t.shape) for t in inputs]}")
    channels, height = inputs[0].shape[1:3]
    if (isinstance(channels, int) and channels != 3) or (isinstance(height, int) and height != spec.height):
        raise ModelError(f"recognizer {name} takes {inputs[0].shape}; expected (N, 3, "
                         f"{spec.height}, W) (the preset's height is {spec.height})")
    if len(outputs) != 1 or len(outputs[0].shape) != 3:
        raise ModelError(f"recognizer {name} is not CTC-shaped: expected one (N, T, classes) "
                         f"output, got {[(t.name, t.shape) for t in outputs]}")
    classes = outputs[0].shape[2]
    return outputs[0].name, classes if isinstance(classes, int) and classes > 0 else None
