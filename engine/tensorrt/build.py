"""Build a TensorRT engine from an ONNX file: ONNX -> network -> serialized plan + record.

Works with TensorRT 8.6 / 10.x (weak typing: FP16 / INT8 builder flags, entropy calibrator) and
11.x (strongly typed only: the precision is whatever the FP16 or Q/DQ ONNX says). Which world we
are in is detected from the API (`hasattr(trt.BuilderFlag, "FP16")`), never from version strings.

    record = build_engine_file("model.onnx", "model.engine", BuildOptions(precision="fp16"))
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from .. import cuda as _cuda
from ..errors import DbrtError, ModelError, ShapeError
from . import require_tensorrt
from ..onnx_info import OnnxSummary, expand_fp16_storage, load_onnx, sha256_file, summarize_onnx
from .cancel import BuildSignals, interrupt
from .dla import check_dla_build, check_dla_core, configure_dla, dla_core_count
from .progress import BuildProgress, Heartbeat, progress_monitor
from ..files import write_whole
from .record import EngineRecord, sidecar_path
from ..shapes import Shape, ShapeProfile
from .logger import capturing_logger, init_plugins, log

PRECISIONS = ("auto", "fp32", "fp16", "int8")
# Calibration data: given the calibration NCHW shape, yields float32 batches of that shape.
CalibrationSource = Callable[[Shape], Iterable[np.ndarray]]


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "auto"                 # auto: the ONNX's own, FP16 for FP32 ONNX on weak typing
    profile: object = None  # a ShapeProfile, or fn(model metadata) -> ShapeProfile (dynamic inputs)
    workspace: Optional[int] = None         # bytes of scratch memory; None: TensorRT's default
    opt_level: Optional[int] = None         # builder optimisation level 0..5; None: default (3)
    timing_cache: Optional[Path] = None     # read before and written after the build
    calibration: Optional[CalibrationSource] = None
    calibration_cache: Optional[Path] = None
    strongly_typed: Optional[bool] = None   # None: strongly typed when the ONNX carries precision
    version_compatible: bool = False        # also runs on later TensorRT versions (slower)
    hardware_compatible: bool = False       # runs on any Ampere+ discrete GPU (slower; no Jetson)
    dla_core: Optional[int] = None          # Jetson DLA core for the layers it runs (dla.py)


@dataclass(frozen=True)
class PrecisionPlan:
    precision: str                          # what the engine computes in
    strongly_typed: bool
    flags: Tuple[str, ...] = ()             # BuilderFlag names to set (weak typing only)
    calibrate: bool = False                 # legacy INT8 entropy calibration


def has_weak_typing(trt) -> bool:
    """TensorRT 8.6 / 10.x: precision builder flags exist. 11.x removed them."""
    return hasattr(trt.BuilderFlag, "FP16")


def has_strongly_typed_flag(trt) -> bool:
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


_EXPORT_HINT = {"fp16": "export an FP16 ONNX first (dbrt export --precision fp16)",
                "int8": "export a Q/DQ INT8 ONNX first (dbrt export --precision int8)",
                "fp32": "use the FP32 ONNX"}


def plan_precision(weak_typing: bool, requested: str, onnx_precision: str,
                   strongly_typed: Optional[bool] = None, strong_flag: bool = True,
                   version: str = "") -> PrecisionPlan:
    """Decide flags / typing for `requested` precision given the TensorRT and the ONNX."""
    if requested not in PRECISIONS:
        raise ModelError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    target = requested
    if requested == "auto":
        target = "fp16" if weak_typing and onnx_precision == "fp32" else onnx_precision
    strong = (not weak_typing) or bool(strongly_typed) or (
        strongly_typed is None and strong_flag and onnx_precision != "fp32"
        and target == onnx_precision)
    if strong:
        if weak_typing and not strong_flag:
            raise ModelError(f"TensorRT {version} cannot build strongly typed networks; "
                             "drop --strongly-typed")
        if target != onnx_precision:
            why = (f"TensorRT {version} builds strongly typed networks only" if not weak_typing
                   else "a strongly typed build")
            raise ModelError(f"{why}: the precision comes from the ONNX, which is "
                             f"{onnx_precision}, not {target}; {_EXPORT_HINT[target]}")
        return PrecisionPlan(target, True)
    if (onnx_precision, target) in (("int8", "fp16"), ("int8", "fp32"), ("fp16", "fp32")):
        # the ONNX's Q/DQ nodes or FP16 types decide where it computes in low precision: a
        # build without their flags fails or computes otherwise than its record would say
        raise ModelError(f"the ONNX is {onnx_precision}, so it cannot be built as {target}; "
                         f"build it at --precision {onnx_precision} (or auto), or "
                         f"{_EXPORT_HINT[target]}")
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[target]
    return PrecisionPlan(target, False, flags, calibrate=target == "int8" and onnx_precision != "int8")


# -- the build steps -----------------------------------------------------------------------
def _network_flags(trt, strongly_typed: bool) -> int:
    kinds = trt.NetworkDefinitionCreationFlag
    flags = 0
    if hasattr(kinds, "EXPLICIT_BATCH"):          # required by 8.x, ignored by 10.x, gone in 11.x
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if strongly_typed and hasattr(kinds, "STRONGLY_TYPED"):
        flags |= 1 << int(kinds.STRONGLY_TYPED)
    return flags


def _parser_error_text(error, summary: OnnxSummary) -> str:
    node = int(error.node())
    if node < 0:
        return error.desc()
    # node_name / node_operator exist from TensorRT 10.0; older ones give only the index.
    name = error.node_name() if hasattr(error, "node_name") else ""
    op = error.node_operator() if hasattr(error, "node_operator") else ""
    label = f"{name} ({op})" if name and op else summary.node_label(node)
    return f"node {label}: {error.desc()}"


def _parse(parser, summary: OnnxSummary) -> bool:
    """An ONNX with FP16 weight storage (dbrt's shipped model) is handed over expanded, so its
    Conv weights reach TensorRT as weights, as in any FP32 ONNX, not as the outputs of cast
    layers (tensors that implicit INT8 calibration may range like activations); the path lets
    TensorRT find external weight files next to the model."""
    if not summary.fp16_storage:
        return parser.parse_from_file(str(summary.path))
    proto = load_onnx(summary.path)
    expand_fp16_storage(proto)
    return parser.parse(proto.SerializeToString(), str(summary.path))


def parse_onnx(trt, network, logger, summary: OnnxSummary):
    """Parse into `network`; ModelError listing the failing nodes by name. Returns the parser,
    which must stay alive until the build (it owns the weights)."""
    parser = trt.OnnxParser(network, logger)
    if not _parse(parser, summary):
        errors = [_parser_error_text(parser.get_error(i), summary) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT {trt.__version__} cannot parse {summary.path.name}: "
                         + "; ".join(errors or [logger.last_errors()]))
    return parser


def _input_profile(network, requested, summary: OnnxSummary) -> ShapeProfile:
    """`requested`: a ShapeProfile, a function of the model metadata giving one, or None."""
    if network.num_inputs != 1:
        raise ModelError("dbrt builds engines with one input (one optimisation profile); "
                         f"{summary.path.name} has {network.num_inputs}")
    dims = tuple(int(d) for d in network.get_input(0).shape)
    if all(d >= 0 for d in dims):
        # a loader's profile (the metadata's resize rule) does not apply to a static input
        if requested is not None and not callable(requested) and (
                requested.min != dims or requested.max != dims):
            raise ShapeError(f"{summary.path.name} has a static input {dims}; it cannot take "
                             f"the profile {requested.describe()}")
        return ShapeProfile.static(dims)
    if callable(requested):  # a loader: the profile follows from the model's metadata (and
        requested = requested(summary.metadata)  # keeps the axes the model fixes)
        requested = requested.pinned(dims) if requested is not None else None
    if requested is None:
        raise ShapeError(f"{summary.path.name} has a dynamic input {dims}: give an optimisation "
                         "profile (min / opt / max shapes)")
    requested.validate()
    for axis, (dim, lo, hi) in enumerate(zip(dims, requested.min, requested.max)):
        if dim >= 0 and not lo == hi == dim:
            raise ShapeError(f"profile {requested.describe()} disagrees with the model input "
                             f"{dims} in axis {axis}")
    return requested


def _add_profile(builder, config, name: str, profile: ShapeProfile, calibrate: bool) -> None:
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    # implicit INT8 calibration at the opt shape (deprecated since 10.1: only when calibrating)
    if calibrate and hasattr(config, "set_calibration_profile"):
        if not config.set_calibration_profile(trt_profile):
            raise ModelError(f"TensorRT refused the calibration profile {profile.describe()}")


def _use_timing_cache(config, path: Optional[Path]):
    if path is None:
        return None
    blob = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(blob)
    except (RuntimeError, TypeError, ValueError):  # a damaged file: TensorRT refuses to read it
        cache = None
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("timing cache %s is damaged or from another TensorRT / GPU; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config, path: Optional[Path]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, bytes(config.get_timing_cache().serialize()))


def _configure(trt, config, options: BuildOptions, plan: PrecisionPlan) -> None:
    if options.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace))
    if options.opt_level is not None:
        if not 0 <= options.opt_level <= 5:
            raise ModelError(f"builder optimisation level must be 0..5, got {options.opt_level}")
        config.builder_optimization_level = int(options.opt_level)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = _ampere_plus(trt)


def _ampere_plus(trt):
    level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), "AMPERE_PLUS", None)
    if level is None:
        raise ModelError(f"TensorRT {trt.__version__} cannot build hardware-compatible engines")
    return level


def _attach_calibrator(trt, config, options: BuildOptions, profile: ShapeProfile, backend, stop):
    cache = options.calibration_cache
    if options.calibration is None and not (cache and os.path.isfile(cache)):
        raise ModelError(f"INT8 from an FP32 ONNX on TensorRT {trt.__version__} needs calibration "
                         "images (dbrt build --calib DIR), an existing calibration cache "
                         "(--calib-cache FILE) or a Q/DQ ONNX (dbrt export --precision int8)")
    from .calibrator import entropy_calibrator

    # a cache alone: TensorRT takes its ranges and asks for no batch (a Jetson building from the
    # cache a server calibrated needs no images)
    batches = None if options.calibration is None else options.calibration(profile.opt)
    calibrator = entropy_calibrator(trt, batches, backend, cache, stop)
    config.int8_calibrator = calibrator
    return calibrator


def _file_sha256(path) -> Optional[str]:
    return sha256_file(path) if path and os.path.isfile(path) else None


def _run_build(trt, builder, network, config, progress: Optional[BuildProgress],
               signals: BuildSignals):
    monitor = progress_monitor(trt, progress, signals.cancel)
    if monitor is not None:
        config.progress_monitor = monitor
    quiet = progress is not None and monitor is None
    with Heartbeat(progress) if quiet else nullcontext():
        serialized = builder.build_serialized_network(network, config)
    if progress is not None:
        progress.done(serialized is not None)
    return serialized


def _built(trt, serialized, progress: Optional[BuildProgress], logger, name, signals,
           calibrator=None) -> bytes:
    if signals.signum is not None:  # asked to stop: whether or not the build got to its end
        raise interrupt(signals.signum)
    failed = getattr(calibrator, "error", None)  # TensorRT went on as if calibration had ended
    if isinstance(failed, DbrtError):
        raise failed
    if failed is not None:
        raise ModelError(f"INT8 calibration failed: {type(failed).__name__}: {failed}") from failed
    if serialized is None:
        if progress is not None and progress.cancelled:
            raise DbrtError("engine build cancelled")
        raise ModelError(f"TensorRT {trt.__version__} could not build an engine from {name}: "
                         f"{logger.last_errors()}")
    return bytes(serialized)


def build_engine(onnx_path: os.PathLike, options: BuildOptions = BuildOptions(),
                 progress: Optional[BuildProgress] = None, backend=None) -> Tuple[bytes, EngineRecord]:
    """Build a serialized engine and its record (nothing is written except the timing cache)."""
    trt = require_tensorrt()
    backend = backend or _cuda.require_backend("building a TensorRT engine")
    summary = summarize_onnx(onnx_path)
    plan = plan_precision(has_weak_typing(trt), options.precision, summary.precision,
                          options.strongly_typed, has_strongly_typed_flag(trt), trt.__version__)
    if not plan.calibrate and (options.calibration is not None or options.calibration_cache):
        raise ModelError(f"calibration images or a calibration cache were given, but a "
                         f"{plan.precision} build of this {summary.precision} ONNX does not "
                         "calibrate (TensorRT 8.6 / 10.x calibrate an FP32 ONNX built as int8)")
    device = backend.device_info()
    if options.hardware_compatible and float(device.compute_capability) < 8.0:
        raise ModelError(f"hardware-compatible engines must be built on an Ampere or newer GPU; "
                         f"this one is {device}")
    if options.hardware_compatible and device.integrated:
        raise ModelError(f"hardware-compatible engines are for discrete GPUs: TensorRT has no "
                         f"hardware compatibility on JetPack or DRIVE OS ({device}); build a "
                         "plain engine on the board")
    logger = capturing_logger(trt)
    init_plugins(trt)  # the parser finds DeformConv's plugin there
    builder = trt.Builder(logger)
    if options.dla_core is not None:
        check_dla_core(options.dla_core, dla_core_count(trt, builder), trt.__version__)
    network = builder.create_network(_network_flags(trt, plan.strongly_typed))
    parser = parse_onnx(trt, network, logger, summary)  # owns the weights until the build
    profile = _input_profile(network, options.profile, summary)
    if options.dla_core is not None:
        check_dla_build(plan.precision, profile)
    config = builder.create_builder_config()
    _configure(trt, config, options, plan)
    dla = configure_dla(trt, network, config, options.dla_core) if options.dla_core is not None else None
    if any(d < 0 for d in network.get_input(0).shape):  # a dynamic input needs a profile,
        _add_profile(builder, config, network.get_input(0).name, profile, plan.calibrate)  # fixed or not
    if options.version_compatible and hasattr(parser, "get_used_vc_plugin_libraries"):
        config.plugins_to_serialize = parser.get_used_vc_plugin_libraries()  # DCN's plugin
    _use_timing_cache(config, options.timing_cache)
    # Ctrl-C / SIGTERM cancel the calibration and the build (engine.tensorrt.cancel)
    with BuildSignals(cancellable=hasattr(trt, "IProgressMonitor")) as signals:
        calibrator = (_attach_calibrator(trt, config, options, profile, backend, signals.cancel)
                      if plan.calibrate else None)
        serialized = _run_build(trt, builder, network, config, progress, signals)
    data = _built(trt, serialized, progress, logger, summary.path.name, signals, calibrator)
    _save_timing_cache(config, options.timing_cache)
    builder_info = {"workspace": options.workspace, "opt_level": options.opt_level,
                    "flags": list(plan.flags), "timing_cache": options.timing_cache is not None,
                    "calibration_batches": getattr(calibrator, "batches_used", None),
                    # the ranges it was built from: the engine cache rebuilds when the file changes
                    "calibration_cache_sha256": _file_sha256(options.calibration_cache) if calibrator else None,
                    "version_compatible": options.version_compatible,
                    "hardware_compatible": options.hardware_compatible, "dla": dla}
    record = EngineRecord(
        onnx_sha256=summary.sha256, onnx_name=summary.path.name, precision=plan.precision,
        strongly_typed=plan.strongly_typed, input_name=network.get_input(0).name, profile=profile,
        tensorrt_version=trt.__version__, gpu_name=device.name,
        compute_capability=device.compute_capability, metadata=dict(summary.metadata),
        builder=builder_info)
    return data, record


def build_engine_file(onnx_path: os.PathLike, engine_path: os.PathLike,
                      options: BuildOptions = BuildOptions(), progress: Optional[BuildProgress] = None,
                      backend=None) -> EngineRecord:
    """Build and write `engine_path` plus its `.json` record; returns the record."""
    data, record = build_engine(onnx_path, options, progress, backend)
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    # an earlier build's record must never sit beside this engine (its precision, ONNX and
    # metadata would be taken for this one's): it goes first, the new one once the engine is
    # whole; a run killed in between leaves an engine without a record, which the engine
    # cache rebuilds
    sidecar_path(engine_path).unlink(missing_ok=True)
    write_whole(engine_path, data)
    record.save(engine_path)
    return EngineRecord.load(engine_path)
