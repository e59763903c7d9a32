"""`Detector`: the single-image API, and the three steps the threaded pipeline runs in turn.

    with Detector() as det:                    # the shipped model, best backend available
        dets = det.detect("photo.jpg")         # -> Detections in image pixels

`prepare` (resize + normalise + batch, on the GPU when CuPy and a GPU runner are there),
`infer` (one engine call) and `postprocess` (DB boxes in frame pixels) are public so that
`pipeline.runner.Pipeline` can run them in separate threads.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from dbnet.model_check import check_io, check_spec_source, probability_map
from dbnet.spec import METADATA_KEY, MAX_INPUT_SIDE, ModelSpec, profile_for, resolve_spec
from engine.errors import ModelError, ShapeError, warn_caller
from engine.shapes import ShapeProfile
from engine.lazy import cupy_or_none
from engine.onnxruntime.int8_cpu import SATURATION_WARNING, int8_kernels_saturate
from engine.padding import pad_batch, runner_min_batch
from engine.loader import RunnerOptions, load_runner

from .detections import Detections
from .ignore import IgnoreZones
from .postprocess import DBPostprocessor
from .postprocess.compiled import status as compiled_status
from .preprocess import Letterbox, as_bgr, preprocess_batch
from .region import Region, RegionWatch
from .shipped import default_model_path


def _engine_profile(model, preset: Optional[str], input_size, dla_core: Optional[int]):
    """The profile of an engine built from an .onnx, as a function of its metadata: the resize
    rule's range, or for the DLA, which runs one shape, one frame at `input_size`."""
    if dla_core is None or not str(model).lower().endswith(".onnx"):  # (an engine has its own)
        return lambda meta: profile_for(meta, preset)
    if input_size is None:
        raise ModelError(f"an engine built for DLA core {dla_core} runs one input shape: give "
                         "input_size (--input-size HxW)")
    hw = tuple(int(v) for v in input_size)
    return lambda meta: ShapeProfile.from_hw(hw, hw, hw)


def _model_name(model) -> str:
    """How reports name the model: its path or URL as given (never nothing), or a runner's name."""
    if hasattr(model, "infer"):
        return str(getattr(model, "name", type(model).__name__))
    return os.fspath(model) if isinstance(model, os.PathLike) else str(model)


class Detector:
    """A DBNet text detector: model + its ModelSpec + DB post-processing.

    model:      .onnx / .engine path (default: the shipped model), a triton://HOST:PORT/NAME URL
                (a model on a Triton server; its ModelSpec comes from the model config's
                `parameters`), or an activated-or-not Runner
    spec:       the ModelSpec (normalisation, resize rule, post-processing), a dict of changes
                to the model's own (`{"box_thresh": 0.5}`), or a function that changes it
                (`lambda spec: spec.replace(box_thresh=0.5)`); default:
                the model's own (its dbrt metadata), else `preset`'s
    preset:     a named ModelSpec for foreign models ("db", "ppocr", "mmocr")
    input_size: fixed network (H, W) for every frame (default: the spec's resize rule)
    backend:    "auto", "onnxruntime" or "tensorrt";  device: "auto", "cpu", "cuda"
    options:    engine.loader.RunnerOptions (threads, sessions, TensorRT build options, ...)
    read:       also read the text in every polygon: True (the default recognizer, PP-OCR rec
                from the rapidocr wheel), a recognizer .onnx path, or a pipeline.reading.Recognizer
                (yours to close: several Detectors may share it); the detections then carry
                `texts` and `text_scores`
    roi:        a region of interest: only this part of each frame is detected in, at the
                resize rule's size for the region; boxes stay in frame pixels. (x, y, w, h) in
                frame pixels (integers), fractions of the frame (floats, 0..1), an 'X,Y,W,H'
                string as `dbrt run --roi` takes, or a pipeline.region.Region. One that misses
                the first frames is a RegionError; later frames of a size it misses get no
                detections, one warning per size (roi.in_frame(h, w) says it beforehand)
    ignore:     ignore zones, each as roi= takes one (a list of them), in frame coordinates
                whatever the roi: a detection mostly inside them is dropped (pipeline.ignore)

    One Detector may serve several Pipelines (or threads) at once: ONNX Runtime takes
    concurrent calls, and each thread that calls a TensorRT engine gets its own execution
    context (on an engine with dynamic shapes their calls take turns, as TensorRT asks of
    contexts that share an optimization profile). Close it after the last of them (a Pipeline given close_detector=True closes it
    when its own run ends).
    """

    def __init__(self, model=None, spec: Union[ModelSpec, dict, Callable[[ModelSpec], ModelSpec], None] = None,
                 *, preset: Optional[str] = None,
                 input_size: Optional[Tuple[int, int]] = None, backend: str = "auto",
                 device: str = "auto", options: Optional[RunnerOptions] = None, read=None,
                 roi=None, ignore=None):
        self.roi = Region.of(roi)  # a bad region fails before the model loads
        self._watch = RegionWatch(self.roi)
        self.ignore = IgnoreZones.of(ignore)
        if model is None:
            model = default_model_path()
        self.model_name = _model_name(model)
        if hasattr(model, "infer"):
            if options is not None:
                raise ModelError("runner options apply when the Detector loads the model; "
                                 "this runner is already made")
            self.runner = model
        else:
            options = options or RunnerOptions()
            if not isinstance(options, RunnerOptions):
                raise TypeError(f"options: expected an engine.loader.RunnerOptions, got {options!r}")
            if options.profile is None:  # an engine built from an .onnx follows the resize rule
                options = dataclasses.replace(options, profile=_engine_profile(
                    model, preset, input_size, options.dla_core))
            self.runner = load_runner(model, backend=backend, device=device, options=options)
        self.runner.activate()
        try:  # a spec, size or recognizer that fails leaves no session / GPU memory behind
            self._configure(spec, preset, input_size)
            self.recognizer = _recognizer(read, backend, device)
            self._owns_recognizer = self.recognizer is not read  # one passed in stays the caller's
        except BaseException:
            self.runner.deactivate()
            raise

    def _configure(self, spec, preset: Optional[str], input_size) -> None:
        if isinstance(spec, ModelSpec):
            self.spec = spec
        else:  # a foreign model with a wrong or missing preset fails here, not as junk boxes
            check_spec_source(self.runner.metadata, preset, self.runner.inputs, self.runner.outputs)
            _note_remote_defaults(self.runner, preset)
            self.spec = resolve_spec(self.runner.metadata, preset)
            self.spec = _changed(self.spec, spec)
        _note_saturating_int8(self.runner, self.spec)
        try:
            self.output_name = check_io(self.runner.inputs, self.runner.outputs, self.spec)
        except ModelError as exc:
            where = getattr(self.runner, "url", None)  # a served model: name the server
            raise (ModelError(f"{where}: {exc}") if where else exc) from None
        self._range_checked = False
        self.min_batch = runner_min_batch(self.runner)  # a fixed-batch model: shorter ones padded
        self.post = DBPostprocessor(self.spec.post)
        self.input_size = self._checked_size(input_size) if input_size else self._fixed_engine_size()
        self._cap_reported = False
        self._gpu = self._gpu_preprocessor()

    # -- description ----------------------------------------------------------------------------
    @property
    def untrained(self) -> bool:
        """True when the model's metadata says its weights are random (demo before training)."""
        return self.spec.untrained

    @property
    def keep_aspect(self) -> bool:
        return self.spec.resize.keep_aspect

    @property
    def uses_gpu_preprocess(self) -> bool:
        return self._gpu is not None

    def describe(self) -> dict:
        remote = dict(server=self.runner.describe()) if getattr(self.runner, "remote", False) else {}
        return dict(model=self.model_name, runner=self.runner.name, **remote,
                    spec=json.loads(self.spec.to_json()), untrained=self.untrained,
                    keep_aspect=self.keep_aspect, input_size=self.input_size,
                    roi=None if self.roi is None else self.roi.describe(),
                    ignore=self.ignore.describe(),
                    gpu_preprocess=self.uses_gpu_preprocess, post=self.post.config.to_dict(),
                    post_compiled=compiled_status(),
                    reader=None if self.recognizer is None else self.recognizer.describe())

    def _checked_size(self, size) -> Tuple[int, int]:
        if not (isinstance(size, (tuple, list)) and len(size) == 2
                and all(isinstance(v, numbers.Integral) for v in size)):
            raise ShapeError(f"input_size must be (height, width), got {size!r} (whole pixels)")
        h, w = (int(v) for v in size)
        stride = self.spec.resize.stride
        if not all(0 < v <= MAX_INPUT_SIDE and v % stride == 0 for v in (h, w)):
            raise ShapeError(f"input size {h}x{w}: each side must be a multiple of "
                             f"{stride} from {stride} to {MAX_INPUT_SIDE}")
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
    def region_in(self, frame_h: int, frame_w: int) -> Optional[Tuple[int, int, int, int]]:
        """The (x, y, w, h) part of a frame of this size that goes onto the input (the region of
        interest clipped to the frame), None for all of it, and for a size the region leaves
        nothing of (`postprocess` refuses a source's first such frames, RegionWatch)."""
        return self._watch.box(frame_h, frame_w)

    def input_size_for(self, frame_h: int, frame_w: int) -> Tuple[int, int]:
        """Network (H, W) for a frame of this size (for its region of interest, when there is
        one); frames of equal input size can share a batch."""
        region, what = self.region_in(frame_h, frame_w), "frame"
        if region is not None:
            (frame_w, frame_h), what = region[2:], f"region (--roi {self.roi}) of a frame"
        if self.input_size:
            return self.input_size
        resize = self.spec.resize
        size = resize.input_size(frame_h, frame_w)
        if max(size) > MAX_INPUT_SIDE - resize.stride and not self._cap_reported:
            wanted = resize.input_size(frame_h, frame_w, max_side=1 << 62)
            if wanted != size:
                self._cap_reported = True
                warn_caller(
                    f"a {frame_h}x{frame_w} {what} would need a {wanted[0]}x{wanted[1]} input "
                    f"({resize.limit_type} side {resize.limit_side}); inputs are capped at "
                    f"{MAX_INPUT_SIDE} pixels a side, so it runs at {size[0]}x{size[1]} (further "
                    "frames are capped without a message)", every_time=True)  # once a Detector
        return size

    def prepare(self, images: Sequence[np.ndarray],
                device_frames: Optional[list] = None) -> Tuple[object, List[Letterbox]]:
        """BGR uint8 frames -> (N, 3, H, W) float32 batch (NumPy, or CuPy on the GPU path).
        device_frames: on the GPU path, a list that receives each frame's upload (CuPy), which
        the read stage then crops on the GPU; left empty on the CPU path."""
        if not images:
            raise ShapeError("prepare() needs at least one image")
        images = [as_bgr(image) for image in images]  # a Source of your own may give grey
        size = self.input_size_for(*images[0].shape[:2])
        regions = None if self.roi is None else [self.region_in(*i.shape[:2]) for i in images]
        if self._gpu is not None:
            return self._gpu(images, size, device_frames, regions)
        return preprocess_batch(images, self.spec, size, self.keep_aspect, regions)

    def infer(self, batch) -> object:
        """One engine call; returns the (N, H, W) probability maps (sigmoid applied to logits)."""
        return self.collect(self.submit(batch))

    @property
    def asynchronous(self) -> bool:
        """`submit` returns before the batch has run (a model on a Triton server)."""
        return self.runner.asynchronous

    def submit(self, batch) -> "PendingBatch":
        """Start one engine call (shapes are checked now); `collect` gives its probability maps.
        A batch shorter than the model takes (`min_batch`, a fixed batch size) is padded with
        copies of its last frame, whose maps `collect` drops."""
        count = int(batch.shape[0])
        future = self.runner.submit(pad_batch(batch, self.min_batch))
        return PendingBatch(future, tuple(batch.shape[2:]), count)

    def collect(self, pending: "PendingBatch") -> object:
        """The (N, H, W) probability maps of a submitted batch (waits for them)."""
        prob = pending.future.result()[self.output_name][:pending.count]
        # layout checked every batch; the value range (a device sync) on the first only
        prob = probability_map(prob, self.spec, pending.input_hw,
                               check_range=not self._range_checked)
        self._range_checked = True
        return prob

    def postprocess(self, prob, letterboxes: Sequence[Letterbox], dropped: Optional[list] = None,
                    sources: Optional[Sequence[str]] = None,
                    streams: Optional[Sequence[int]] = None) -> List[Detections]:
        """Probability maps -> one Detections per frame, in frame pixels, but those mostly inside
        the ignore zones (`dropped`, a list, receives how many per frame); none in a frame the
        region of interest misses (`sources`, `streams`: whose each frame is, for the warnings
        of sizes the region or a zone misses, and what `first_read` said of them)."""
        found = self._watch.keep_watched(self.post(prob, letterboxes), letterboxes, sources, streams)
        return self.ignore.drop_in_frames(found, letterboxes, dropped, sources, streams)

    def first_read(self, frame_h: int, frame_w: int, source=None, stream=None) -> None:
        """A source's first frame read had this size (Frame.first_size; RegionWatch.first_read)."""
        self._watch.first_read(frame_h, frame_w, source, stream)
        self.ignore.first_read(frame_h, frame_w, source, stream)

    def read(self, image: np.ndarray, detections: Detections) -> Detections:
        """The texts of `detections` in `image` when this detector reads (else them unchanged)."""
        if self.recognizer is None:
            return detections
        return self.recognizer.read(image, detections)

    # -- single-image API ---------------------------------------------------------------------
    def detect(self, image: Union[np.ndarray, str, os.PathLike]) -> Detections:
        """Text in one BGR uint8 image (or an image file)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Union[np.ndarray, str, os.PathLike]]) -> List[Detections]:
        """Text in several images; images of different sizes are run in separate batches, none
        larger than the model takes (`Runner.max_batch`), and one shorter than a model of a
        fixed batch size takes padded up to it (`Runner.min_batch`)."""
        from .sources.images import read_image

        if isinstance(images, (str, os.PathLike, np.ndarray)):  # one image: detect() takes it
            raise TypeError(f"detect_batch takes a list of images, got one {type(images).__name__}; "
                            "use detect() or [image]")
        if any(isinstance(image, (bytes, bytearray, memoryview)) for image in images):
            raise TypeError("an encoded image (bytes, e.g. a web upload) is not taken: decode it "
                            "first, e.g. cv2.imdecode(np.frombuffer(data, np.uint8), "
                            "cv2.IMREAD_COLOR), or pass its file's path")
        loaded = [as_bgr(read_image(os.fspath(image)) if isinstance(image, (str, os.PathLike))
                               else image) for image in images]
        results: List[Optional[Detections]] = [None] * len(loaded)
        limit = self.runner.max_batch or len(loaded)
        for group in _group_by(loaded, self.input_size_for).values():
            for start in range(0, len(group), limit):
                members = group[start:start + limit]
                batch, letterboxes = self.prepare([loaded[i] for i in members])
                dets = self.postprocess(self.infer(batch), letterboxes)
                for i, det in zip(members, dets):
                    results[i] = self.read(loaded[i], det)
        return results

    # -- lifecycle ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Abandon engine calls in flight and any wait for a model server (an aborted run)."""
        cancel = getattr(self.runner, "cancel", None)
        if cancel is not None:
            cancel()

    def stop_waiting(self) -> None:
        """A stopping run (the first Ctrl-C) does not wait for a model server that is away:
        the frames that would wait fail at once (counted); a local model has nothing to do."""
        stop_waiting = getattr(self.runner, "stop_waiting", None)
        if stop_waiting is not None:
            stop_waiting()

    def close(self) -> None:
        try:
            self.runner.deactivate()
        finally:
            if self.recognizer is not None and self._owns_recognizer:
                self.recognizer.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PendingBatch(NamedTuple):
    future: object            # concurrent.futures.Future of the runner's outputs
    input_hw: Tuple[int, int]
    count: int                # frames of the batch (the model's outputs beyond them: padding)


def _note_saturating_int8(runner, spec: ModelSpec) -> None:
    """An INT8 model on ONNX Runtime's CPU provider where its integer kernels saturate loses
    boxes against the same model's INT8 arithmetic elsewhere (TensorRT, VNNI CPUs): say so."""
    first = getattr(runner, "runners", (runner,))[0]  # a ParallelRunner's sessions are alike
    if spec.precision != "int8" or getattr(first, "name", "") != "onnxruntime":
        return
    if first.providers[:1] == ("CPUExecutionProvider",) and int8_kernels_saturate():
        warn_caller(SATURATION_WARNING)


def _note_remote_defaults(runner, preset: Optional[str]) -> None:
    """A served model whose config carries no ModelSpec runs on the DB defaults: say so."""
    if getattr(runner, "remote", False) and not preset and \
            ModelSpec.from_metadata(runner.metadata) is None:
        warn_caller(f"{runner.url} has no '{METADATA_KEY}' parameter in its model config, so it "
                    f"runs with the DBNet defaults (pass --preset for a foreign model)")


def _recognizer(read, backend: str, device: str):
    """The Recognizer that `read` asks for (None: no reading)."""
    if read is None or read is False:
        return None
    from .reading import Recognizer

    if isinstance(read, Recognizer):
        return read
    rec_device = device if device in ("cpu", "cuda") else "auto"
    return Recognizer(None if read is True else read, backend=backend, device=rec_device)


def _changed(spec: ModelSpec, change) -> ModelSpec:
    """The model's spec after the `spec=` argument: a function of it, or a dict of changes
    (`{"box_thresh": 0.5}`); a function that returns no ModelSpec is named."""
    if change is None:
        return spec
    if isinstance(change, dict):
        return spec.replace(**change)
    if not callable(change):
        raise TypeError(f"spec= takes a ModelSpec, a dict of changes or a function of the "
                        f"model's ModelSpec, got {type(change).__name__}")
    changed = change(spec)
    if not isinstance(changed, ModelSpec):
        raise TypeError(f"spec= function {getattr(change, '__name__', change)!r} returned "
                        f"{type(changed).__name__}, not a ModelSpec (a missing return?)")
    return changed


def _group_by(images, size_of) -> dict:
    groups: dict = {}
    for i, image in enumerate(images):
        groups.setdefault(size_of(*image.shape[:2]), []).append(i)
    return groups
