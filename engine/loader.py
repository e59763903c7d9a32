"""Pick and load a runner for a model file: .onnx -> ONNX Runtime (or TensorRT via the engine
cache when a GPU and TensorRT are present), .engine / .plan -> TensorRT."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from . import cuda as _cuda
from .base import Runner
from .errors import ModelError
from .lazy import optional

BACKENDS = ("auto", "onnxruntime", "tensorrt")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")  # tensorrt: ONNX Runtime's TensorRT provider
# load_runner options understood by the TensorRT path (engine cache / TensorRTRunner).
TENSORRT_OPTIONS = ("precision", "profile", "cuda_graph", "progress", "workspace", "opt_level",
                    "calibration", "strongly_typed")
# Shipped model and demo video live with the runtime package.
ASSETS = Path(__file__).resolve().parent.parent / "pipeline" / "assets"


def default_model_path() -> Path:
    """The detector shipped with dbrt (pipeline/assets/dbnet_default.onnx)."""
    path = ASSETS / "dbnet_default.onnx"
    if not path.is_file():
        raise ModelError(f"the shipped default model is missing ({path}); pass --model")
    return path


def tensorrt_usable() -> bool:
    """TensorRT is importable and a CUDA GPU is usable through CuPy."""
    return optional("tensorrt") is not None and _cuda.default_backend() is not None


def load_runner(model: Optional[os.PathLike] = None, backend: str = "auto", device: str = "auto",
                **options) -> Runner:
    """A (not yet activated) runner for `model` (default: the shipped model).

    backend "auto" runs an .onnx with TensorRT through the engine cache when TensorRT and a GPU
    are usable (and device is not "cpu"), else with ONNX Runtime. ONNX Runtime options:
    `threads` (intra-op threads, 0: default), `spin` (busy-waiting threads, None: default) and
    `sessions` (> 1: that many sessions share each batch, `engine.parallel_runner`).
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:  # never fall back silently: 'gpu0' must not run on the CPU
        raise ModelError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    sessions = int(options.get("sessions") or 1)
    if sessions < 1:
        raise ModelError(f"sessions must be >= 1, got {sessions}")
    path = Path(model) if model is not None else default_model_path()
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, expected an .onnx or .engine file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan", ".trt"):
        if backend == "onnxruntime":
            raise ModelError(f"{path} is a TensorRT engine; onnxruntime cannot run it")
        from .tensorrt_runner import TensorRTRunner  # noqa: WPS433 - lazy: imports tensorrt

        return TensorRTRunner(path, cuda_graph=bool(options.get("cuda_graph", False)))
    if suffix != ".onnx":
        raise ModelError(f"unsupported model file {path.name}: expected .onnx, .engine or .plan")
    if backend == "tensorrt" or (backend == "auto" and device != "cpu" and tensorrt_usable()):
        if sessions > 1:
            raise ModelError("sessions > 1 is for ONNX Runtime on the CPU; a TensorRT engine "
                             "takes whole batches (use --batch)")
        from .cache import cached_engine_runner  # builds once, then reuses the cached engine

        trt_options = {k: v for k, v in options.items() if k in TENSORRT_OPTIONS and v is not None}
        return cached_engine_runner(path, **trt_options)
    from .onnxruntime_runner import OnnxRuntimeRunner

    threads, spin = options.get("threads") or 0, options.get("spin")
    if sessions > 1:
        from .parallel_runner import ParallelRunner

        return ParallelRunner.onnxruntime(path, sessions, threads=threads or 1,
                                          device=device, spin=spin)
    return OnnxRuntimeRunner(path, device=device, threads=threads, spin=spin)
