"""Engine cache: running an .onnx on a GPU builds a TensorRT engine once and reuses it.

Engines are keyed by everything that makes a plan valid: the ONNX content (sha256 of the file
and of its external weight files), precision,
profile, TensorRT version and GPU (name + compute capability), and for INT8 calibration the
calibration data's content and the calibration method (an engine built from a calibration cache
file that now holds other ranges is built again). They live in
`$DBRT_ENGINE_CACHE` (default `~/.cache/dbrt/engines`) with their JSON records, next to one
timing cache per TensorRT version and GPU, which makes rebuilds after a model change faster.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from .. import cuda as _cuda
from ..cuda import DeviceInfo
from ..errors import ModelError
from . import require_tensorrt
from ..onnx_info import sha256_file, summarize_onnx
from ..shapes import ShapeProfile
from .build import (BuildOptions, build_engine_file, has_strongly_typed_flag,
                             has_weak_typing, plan_precision)
from .record import EngineRecord
from .runner import TensorRTRunner

ENV = "DBRT_ENGINE_CACHE"


def cache_dir() -> Path:
    """Where cached engines live: $DBRT_ENGINE_CACHE, else ~/.cache/dbrt/engines."""
    override = os.environ.get(ENV)
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dbrt" / "engines"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def timing_cache_path(tensorrt_version: str, device: DeviceInfo) -> Path:
    """The shared timing cache for one TensorRT version on one GPU model."""
    return cache_dir() / f"timing-trt{_slug(tensorrt_version)}-{device.sm}-{_slug(device.name)}.cache"


def cache_key(onnx_sha256: str, precision: str, profile: Optional[ShapeProfile],
              tensorrt_version: str, device: DeviceInfo, strongly_typed: bool = False,
              build: Optional[dict] = None) -> str:
    """`build`: the other build settings that change the engine (compatibility, optimisation
    level, workspace, calibration data), so that a cached engine is reused only for the same."""
    fields = {"onnx": onnx_sha256, "precision": precision, "strongly_typed": strongly_typed,
              "profile": profile.to_dict() if profile else None, "tensorrt": tensorrt_version,
              "gpu": device.name, "cc": device.compute_capability, **(build or {})}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


# the calibration method: TensorRT's entropy calibrator (calibrator.py); another one calibrates
# the same data into other ranges
CALIBRATION_METHOD = "entropy2"


def calibration_digest(calibration, shape) -> str:
    """What calibration data is, for the cache key. A source that names its content with a
    `digest` attribute (a string) is not read; any other is read once here, a sha256 of the
    batches it yields for `shape` (the build reads it again when no engine is cached)."""
    declared = getattr(calibration, "digest", None)
    if isinstance(declared, str) and declared:
        return "declared:" + declared
    digest = hashlib.sha256()
    for batch in calibration(tuple(shape)):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        digest.update(repr(batch.shape).encode())
        digest.update(memoryview(batch).cast("B"))
    return digest.hexdigest()


def _calibration_settings(options: BuildOptions, summary, calibrates: bool) -> dict:
    if options.calibration is None or not calibrates:
        return {"calibration": None}
    profile = options.profile
    shape = profile.opt if profile is not None else summary.inputs[0].shape
    if not all(isinstance(d, int) and d > 0 for d in shape):  # no profile: the build refuses it
        return {"calibration": {"data": None, "method": CALIBRATION_METHOD}}
    return {"calibration": {"data": calibration_digest(options.calibration, shape),
                            "method": CALIBRATION_METHOD}}


def _build_settings(options: BuildOptions) -> dict:
    settings = {"version_compatible": options.version_compatible,
                "hardware_compatible": options.hardware_compatible, "opt_level": options.opt_level,
                "workspace": options.workspace,
                "calibration_cache": options.calibration_cache is not None}
    # only for the DLA: the keys of GPU engines cached before stay; not its core, which the
    # runtime picks when it loads the engine (one build serves every core)
    if options.dla_core is not None:
        settings["dla"] = True
    return settings


def calibration_cache_sha256(path: Optional[os.PathLike]) -> Optional[str]:
    """The content of a calibration cache file, None when there is none (yet)."""
    if not path or not os.path.exists(path):
        return None
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ModelError(f"the calibration cache {path} cannot be read "
                         f"({exc.strerror or exc})") from None


def _calibrated_from_another_cache(engine: Path, options: BuildOptions) -> bool:
    """TensorRT takes the INT8 ranges from an existing calibration cache file instead of the
    images, so a cached engine is stale when that file now holds other ranges than the ones it
    was built from (its record says which). Checked, not keyed: keyed by the content, the file
    the first build writes would make the next run build again."""
    current = calibration_cache_sha256(options.calibration_cache)
    return current is not None and current != EngineRecord.load(engine).builder.get(
        "calibration_cache_sha256")


def cached_engine_path(onnx_path: os.PathLike, options: BuildOptions = BuildOptions(),
                       backend=None) -> Path:
    """Where the engine for (onnx, options, this TensorRT, this GPU) is or will be cached."""
    trt = require_tensorrt()
    backend = backend or _cuda.require_backend("the TensorRT engine cache")
    summary = summarize_onnx(onnx_path)
    if callable(options.profile):  # a loader: the same profile a build would use
        profile = options.profile(summary.metadata)
        fixed = summary.inputs[0].shape if summary.inputs else ()
        options = replace(options, profile=profile.pinned(fixed) if profile is not None else None)
    plan = plan_precision(has_weak_typing(trt), options.precision, summary.precision,
                          options.strongly_typed, has_strongly_typed_flag(trt), trt.__version__)
    build = {**_build_settings(options), **_calibration_settings(options, summary, plan.calibrate)}
    key = cache_key(summary.sha256, plan.precision, options.profile, trt.__version__,
                    backend.device_info(), plan.strongly_typed, build)
    return cache_dir() / f"{_slug(Path(onnx_path).stem)}-{plan.precision}-{key}.engine"


def _complete(path: Path) -> bool:
    """A cached engine with a readable record; anything less (a run killed while writing them)
    is built again, never an error the user must clear out of the cache by hand."""
    try:
        return path.is_file() and EngineRecord.load(path) is not None
    except ModelError:
        return False


def _check_writable(folder: Path) -> None:
    """The cache folder made and tried before a build of minutes: it failed only after the
    build, naming neither the folder's purpose nor ${ENV}."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ModelError(f"the engine cache folder {folder} cannot be written "
                         f"({exc.strerror or exc}); set ${ENV} to a folder that can") from None


@contextlib.contextmanager
def _building(path: Path):
    """An exclusive lock on the entry while it is built: two runs started together (services
    at a Jetson's boot) built the same engine twice, minutes each, one overwriting the other;
    the second now waits for the first and finds the engine. The lock (flock, on a file beside
    the entry) goes with its process, however that ends."""
    import fcntl

    with open(f"{path}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_engine_runner(onnx_path: os.PathLike, precision: str = "auto",
                         profile: Optional[ShapeProfile] = None, cuda_graph: bool = False,
                         progress=None, backend=None, **build_options) -> TensorRTRunner:
    """A TensorRT runner for `onnx_path`, building and caching the engine on first use.

    `build_options` are further `BuildOptions` fields (workspace, opt_level, calibration...).
    """
    backend = backend or _cuda.require_backend("the TensorRT engine cache")
    options = BuildOptions(precision=precision, profile=profile, **build_options)
    path = cached_engine_path(onnx_path, options, backend)
    stale = lambda: not _complete(path) or _calibrated_from_another_cache(path, options)  # noqa: E731
    if stale():
        _check_writable(path.parent)
        with _building(path):  # another process building it: wait, then take its engine
            if stale():
                trt = require_tensorrt()
                if options.timing_cache is None:
                    device = backend.device_info()
                    options = replace(options, timing_cache=timing_cache_path(trt.__version__, device))
                build_engine_file(onnx_path, path, options, progress, backend)
    # a version-compatible engine built here runs the lean runtime it carries: dbrt wrote it
    return TensorRTRunner(path, cuda_graph=cuda_graph, backend=backend,
                          host_code=options.version_compatible, dla_core=options.dla_core)
