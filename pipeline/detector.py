"""`Detector`: the single-image API, and the three steps the threaded pipeline runs in turn.

    with Detector() as det:                    # the shipped model, best backend available
        dets = det.detect("photo.jpg")         # -> Detections in image pixels

`prepare` (resize + normalise + batch, on the GPU when CuPy and a GPU runner are there),
`infer` (one engine call) and `postprocess` (DB boxes in frame pixels) are public so that
`pipeline.runner.Pipeline` can run them in separate threads.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import fields
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from engine.errors import DbrtWarning, ShapeError
from engine.lazy import cupy_or_none
from engine.loader import load_runner
from engine.model_check import check_io, check_spec_source, probability_map
from engine.modelspec import MAX_INPUT_SIDE, ModelSpec, resolve_spec

from .detections import Detections
from .postprocess import DBPostprocessor, PostprocessConfig
from .preprocess import Letterbox, preprocess_batch, target_size

_SPEC_OPTIONS = {f.name for f in fields(ModelSpec)} - {"extra"}
_POST_OPTIONS = {f.name for f in fields(PostprocessConfig)}


def _split_options(options: dict) -> Tuple[dict, dict]:
    """Options -> (ModelSpec overrides, PostprocessConfig overrides); None means 'keep'."""
    unknown = set(options) - _SPEC_OPTIONS - _POST_OPTIONS
    if unknown:
        raise TypeError(f"unknown Detector option(s): {', '.join(sorted(unknown))}")
    spec = {k: v for k, v in options.items() if k in _SPEC_OPTIONS}
    post = {k: v for k, v in options.items() if k in _POST_OPTIONS and k not in _SPEC_OPTIONS}
    return spec, post


class Detector:
    """A DBNet text detector: model + its ModelSpec + DB post-processing.

    model:       .onnx / .engine path (default: the shipped model), or an activated-or-not Runner
    backend:     "auto", "onnxruntime" or "tensorrt";  device: "auto", "cpu", "cuda"
    preset:      a named ModelSpec for foreign models ("db", "ppocr", "mmocr")
    keep_aspect: letterbox (pad) instead of stretching onto the input size
    input_size:  fixed network (H, W) for every frame (default: the spec's resize rule)
    threads:     intra-op threads of CPU backends (0: backend default)
    sessions:    ONNX Runtime on the CPU: that many sessions share each batch (pipeline batch >= it)
    spin:        ONNX Runtime: whether idle intra-op threads busy-wait (None: ORT default)
    options:     ModelSpec fields (limit_side, limit_type, thresh, box_thresh, unclip_ratio, ...)
                 and PostprocessConfig fields (max_candidates, score_mode, box_type, ...)
    """

    def __init__(self, model=None, backend: str = "auto", device: str = "auto",
                 preset: Optional[str] = None, keep_aspect: Optional[bool] = None,
                 input_size: Optional[Tuple[int, int]] = None, threads: int = 0,
                 sessions: int = 1, spin: Optional[bool] = None, **options):
        spec_options, post_options = _split_options(options)
        if hasattr(model, "infer"):
            self.runner = model
        else:
            self.runner = load_runner(model, backend=backend, device=device, threads=threads,
                                      sessions=sessions, spin=spin)
        self.runner.activate()
        self.spec = resolve_spec(self.runner.metadata, preset, **spec_options)
        # a foreign model with a wrong or missing preset fails here, not as silent junk boxes
        check_spec_source(self.runner.metadata, preset, self.runner.inputs, self.runner.outputs)
        check_io(self.runner.inputs, self.runner.outputs, self.spec)
        self._range_checked = False
        extra_post = {k: v for k, v in self.spec.extra.items() if k in _POST_OPTIONS}
        self.post = DBPostprocessor(PostprocessConfig.from_spec(self.spec, **{**extra_post, **post_options}))
        self.keep_aspect = bool(self.spec.extra.get("keep_aspect", False) if keep_aspect is None
                                else keep_aspect)
        self.input_size = (self._checked_size(input_size) if input_size
                           else self._fixed_engine_size())
        self._cap_reported = False
        self.output_name = self.spec.output or self.runner.output_names[0]
        if self.output_name not in self.runner.output_names:
            raise ShapeError(f"model has no output {self.output_name!r} "
                             f"(outputs: {', '.join(self.runner.output_names)})")
        self._gpu = self._gpu_preprocessor()

    # -- description ----------------------------------------------------------------------------
    @property
    def untrained(self) -> bool:
        """True when the model's metadata says its weights are random (demo before training)."""
        return bool(self.spec.extra.get("untrained"))

    @property
    def uses_gpu_preprocess(self) -> bool:
        return self._gpu is not None

    def describe(self) -> dict:
        return dict(runner=self.runner.name, spec=json.loads(self.spec.to_json()), untrained=self.untrained,
                    keep_aspect=self.keep_aspect, input_size=self.input_size,
                    gpu_preprocess=self.uses_gpu_preprocess, post=self.post.config.to_dict())

    def _checked_size(self, size) -> Tuple[int, int]:
        h, w = (int(v) for v in size)
        if not all(0 < v <= MAX_INPUT_SIDE and v % self.spec.stride == 0 for v in (h, w)):
            raise ShapeError(f"input size {h}x{w}: each side must be a multiple of "
                             f"{self.spec.stride} from {self.spec.stride} to {MAX_INPUT_SIDE}")
        return h, w

    def _fixed_engine_size(self) -> Optional[Tuple[int, int]]:
        """An engine built for one input size must be fed that size."""
        dims = self.runner.inputs[0].shape[2:]
        if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
            return int(dims[0]), int(dims[1])
        return None

    def _gpu_preprocessor(self):
        if self.runner.output_device != "cuda" or cupy_or_none() is None:
            return None
        from .gpu_preprocess import GpuPreprocessor

        return GpuPreprocessor(self.spec, keep_aspect=self.keep_aspect)

    # -- the three steps -------------------------------------------------------------------------
    def input_size_for(self, frame_h: int, frame_w: int) -> Tuple[int, int]:
        """Network (H, W) for a frame of this size; frames of equal input size can share a batch."""
        if self.input_size:
            return self.input_size
        spec = self.spec
        size = target_size(frame_h, frame_w, spec.limit_side, spec.limit_type, spec.stride)
        if max(size) > MAX_INPUT_SIDE - spec.stride and not self._cap_reported:
            wanted = target_size(frame_h, frame_w, spec.limit_side, spec.limit_type, spec.stride,
                                 max_side=1 << 62)
            if wanted != size:
                self._cap_reported = True
                warnings.warn(
                    f"a {frame_h}x{frame_w} frame would need a {wanted[0]}x{wanted[1]} input "
                    f"({spec.limit_type} side {spec.limit_side}); inputs are capped at "
                    f"{MAX_INPUT_SIDE} pixels a side, so it runs at {size[0]}x{size[1]} (further "
                    "frames are capped without a message)", DbrtWarning, stacklevel=2)
        return size

    def prepare(self, images: Sequence[np.ndarray]) -> Tuple[object, List[Letterbox]]:
        """BGR uint8 frames -> (N, 3, H, W) float32 batch (NumPy, or CuPy on the GPU path)."""
        if not images:
            raise ShapeError("prepare() needs at least one image")
        size = self.input_size_for(*images[0].shape[:2])
        if self._gpu is not None:
            return self._gpu(images, size)
        return preprocess_batch(images, self.spec, size, self.keep_aspect)

    def infer(self, batch) -> object:
        """One engine call; returns the (N, H, W) probability maps (sigmoid applied to logits)."""
        prob = self.runner.infer(batch)[self.output_name]
        # layout checked every batch; the value range (a device sync) on the first only
        prob = probability_map(prob, self.spec, tuple(batch.shape[2:]),
                               check_range=not self._range_checked)
        self._range_checked = True
        return prob

    def postprocess(self, prob, letterboxes: Sequence[Letterbox]) -> List[Detections]:
        """Probability maps -> one Detections per frame, in frame pixels."""
        return self.post(prob, letterboxes)

    # -- single-image API ---------------------------------------------------------------------
    def detect(self, image: Union[np.ndarray, str, os.PathLike]) -> Detections:
        """Text in one BGR uint8 image (or an image file)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Union[np.ndarray, str, os.PathLike]]) -> List[Detections]:
        """Text in several images; images of different sizes are run in separate batches."""
        from .sources.images import read_image

        loaded = [_check_image(read_image(os.fspath(image)) if isinstance(image, (str, os.PathLike))
                               else image) for image in images]
        results: List[Optional[Detections]] = [None] * len(loaded)
        for size, members in _group_by(loaded, self.input_size_for).items():
            batch, letterboxes = self.prepare([loaded[i] for i in members])
            dets = self.postprocess(self.infer(batch), letterboxes)
            for i, det in zip(members, dets):
                results[i] = det
        return results

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:  # greyscale: the network wants three channels
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
    return image


def _group_by(images, size_of) -> dict:
    groups: dict = {}
    for i, image in enumerate(images):
        groups.setdefault(size_of(*image.shape[:2]), []).append(i)
    return groups
