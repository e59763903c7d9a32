"""Pick and load a runner for a model file: .onnx -> ONNX Runtime (or TensorRT via the engine
cache when a GPU and TensorRT are present), .engine / .plan / .trt -> TensorRT; a
triton://HOST[:PORT]/NAME URL -> a Triton Inference Server client."""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from . import cuda as _cuda
from .base import Runner
from .errors import ModelError
from .lazy import optional
from .triton.options import is_triton_url

BACKENDS = ("auto", "onnxruntime", "tensorrt")
# a prebuilt TensorRT engine, by its file name: what every dbrt command and message takes as one
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ENGINE_FILE_KINDS = ", ".join(ENGINE_SUFFIXES[:-1]) + " or " + ENGINE_SUFFIXES[-1]
MODEL_FILE_KINDS = f".onnx, {ENGINE_FILE_KINDS}"         # ".onnx, .engine, .plan or .trt"
DEVICES = ("auto", "cpu", "cuda", "tensorrt")  # tensorrt: ONNX Runtime's TensorRT provider


@dataclass(frozen=True)
class RunnerOptions:
    """How to run a model. The first three are ONNX Runtime's, the rest TensorRT's (building an
    engine from an .onnx through the engine cache); a value left at its default is not asked
    for, and asking a backend for an option it cannot honour is an error, never ignored.

    threads:  ONNX Runtime intra-op threads (0: ONNX Runtime's default)
    sessions: ONNX Runtime on the CPU: that many sessions share each batch (engine.onnxruntime.parallel)
    spin:     ONNX Runtime: whether idle intra-op threads busy-wait (None: ONNX Runtime's default)
    precision, profile, cuda_graph, workspace, opt_level, calibration, strongly_typed, progress:
              TensorRT build / run options (engine.tensorrt.build.BuildOptions, TensorRTRunner);
              a `profile` function (model metadata -> profile) is the default used only when
              an engine is built; `calibration` (fn(shape) -> float32 batches) keys the cached
              engine by the batches' content, or by its `digest` attribute (a string naming the
              data) when it has one, which spares reading the data for the key
    engine_host_code: a prebuilt version-compatible engine may run the lean TensorRT runtime
              it carries (code from the file: only for engines you trust; the record beside
              it is no proof, anyone can write one)
    dla_core: Jetson DLA core: an engine built from an .onnx puts its layers there (FP16 /
              INT8, one input shape: the profile must be static); a prebuilt DLA engine runs
              on this core instead of the one it was built for
    """

    threads: int = 0
    sessions: int = 1
    spin: Optional[bool] = None
    precision: Optional[str] = None
    profile: object = None
    cuda_graph: bool = False
    workspace: Optional[int] = None
    opt_level: Optional[int] = None
    calibration: object = None
    strongly_typed: Optional[bool] = None
    progress: object = None
    engine_host_code: bool = False
    dla_core: Optional[int] = None
    triton: object = None

    def __post_init__(self):
        whole = all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                    for v in (self.threads, self.sessions))
        if not whole or self.spin not in (None, True, False):  # spin="off" would be truthy: on
            raise ModelError(f"threads and sessions take whole numbers, spin True, False or None; "
                             f"got threads={self.threads!r}, sessions={self.sessions!r}, "
                             f"spin={self.spin!r}")
        if self.sessions < 1 or self.threads < 0:
            raise ModelError(f"sessions must be >= 1 and threads >= 0, "
                             f"got {self.sessions} / {self.threads}")

    def asked(self, names) -> dict:
        """The options among `names` set to something other than their default."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in names and getattr(self, f.name) != f.default}


ALL_OPTIONS = tuple(f.name for f in fields(RunnerOptions))
ORT_OPTIONS = ("threads", "sessions", "spin")
TRITON_OPTIONS = ("triton",)
ENGINE_OPTIONS = ("cuda_graph", "engine_host_code", "dla_core")  # all a prebuilt .engine takes


def tensorrt_usable() -> bool:
    """A supported TensorRT (8.6+) is importable and a CUDA GPU is usable through CuPy."""
    from .tensorrt import supported

    trt = optional("tensorrt")
    return (trt is not None and supported(getattr(trt, "__version__", ""))
            and _cuda.default_backend() is not None)


def _refuse(options: RunnerOptions, allowed, backend: str) -> None:
    """An option the chosen backend cannot honour is an error naming it."""
    refused = {k: v for k, v in options.asked(ALL_OPTIONS).items() if k not in allowed
               and not (k == "profile" and callable(v))}  # a default profile is no request
    if refused:
        names = ", ".join(f"{k}={v!r}" for k, v in sorted(refused.items()))
        raise ModelError(f"{backend} cannot honour the option(s) {names}")


def load_runner(model: os.PathLike, backend: str = "auto", device: str = "auto",
                options: Optional[RunnerOptions] = None) -> Runner:
    """A (not yet activated) runner for the model file `model` (.onnx, .engine, .plan, .trt).

    backend "auto" runs an .onnx with TensorRT through the engine cache when TensorRT and a GPU
    are usable (and device is not "cpu"), else with ONNX Runtime; `options` (RunnerOptions) must
    suit the backend chosen.
    """
    options = options or RunnerOptions()
    if not isinstance(options, RunnerOptions):  # a dict failed on a missing attribute
        raise TypeError(f"options: expected an engine.loader.RunnerOptions, got {options!r}")
    if is_triton_url(model):
        return _triton_runner(str(model), backend, device, options)
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:  # never fall back silently: 'gpu0' must not run on the CPU
        raise ModelError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    path = Path(model)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, expected an .onnx or .engine file: {path}")
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        if backend == "onnxruntime":
            raise ModelError(f"{path} is a TensorRT engine; onnxruntime cannot run it")
        from .tensorrt.runner import TensorRTRunner  # noqa: WPS433 - lazy: imports tensorrt

        _refuse(options, ENGINE_OPTIONS, f"the prebuilt engine {path.name}")
        return TensorRTRunner(path, cuda_graph=options.cuda_graph,
                              host_code=options.engine_host_code, dla_core=options.dla_core)
    if suffix != ".onnx":
        raise ModelError(f"unsupported model file {path.name}: expected {MODEL_FILE_KINDS}")
    if options.engine_host_code:  # an ONNX has no host code; the engine cache trusts what it builds
        raise ModelError(f"engine_host_code (--trust-engine-code) applies to a prebuilt .engine "
                         f"only, not {path.name}")
    if backend == "tensorrt" or (backend == "auto" and device != "cpu" and tensorrt_usable()):
        if options.sessions > 1:
            raise ModelError("sessions > 1 is for ONNX Runtime on the CPU; a TensorRT engine "
                             "takes whole batches (use --batch)")
        _refuse(options, set(ALL_OPTIONS) - set(ORT_OPTIONS) - set(TRITON_OPTIONS), "TensorRT")
        from .tensorrt.cache import cached_engine_runner  # builds once, then reuses the cached engine

        return cached_engine_runner(path, **options.asked(ALL_OPTIONS))
    from .onnxruntime.runner import OnnxRuntimeRunner

    _refuse(options, ORT_OPTIONS, "ONNX Runtime")
    threads, spin, sessions = options.threads, options.spin, options.sessions
    if sessions > 1:
        from .onnxruntime.parallel import ParallelRunner

        return ParallelRunner.onnxruntime(path, sessions, threads=threads or 1,
                                          device=device, spin=spin)
    return OnnxRuntimeRunner(path, device=device, threads=threads, spin=spin)


def _triton_runner(url: str, backend: str, device: str, options: RunnerOptions) -> Runner:
    """A client of the model a Triton server serves: the server picks backend and device."""
    if backend != "auto" or device != "auto":
        raise ModelError(f"{url} runs on the Triton server, which picks its backend and device: "
                         f"leave backend / device at auto (got {backend} / {device})")
    _refuse(options, TRITON_OPTIONS, f"the Triton model {url}")
    from .triton.runner import TritonRunner  # tritonclient is imported on activation

    return TritonRunner(url, options.triton)
