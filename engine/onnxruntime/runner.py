"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers when present."""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..base import Runner, TensorInfo, fixed_batch
from ..errors import ModelError, ShapeError
from ..lazy import cupy_or_none, require

_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
    "tensor(int8)": "int8", "tensor(bool)": "bool",
}


def available_providers() -> Tuple[str, ...]:
    return tuple(require("onnxruntime").get_available_providers())


def default_providers(device: str = "auto") -> Tuple[str, ...]:
    """Execution providers for a device: 'cpu', 'cuda', 'tensorrt' or 'auto' (best available)."""
    have = available_providers()
    wanted = {
        "cpu": ("CPUExecutionProvider",),
        "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
        "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        "auto": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    }.get(device)
    if wanted is None:
        raise ModelError(f"unknown onnxruntime device {device!r} (cpu, cuda, tensorrt, auto)")
    chosen = tuple(p for p in wanted if p in have)
    if device in ("cuda", "tensorrt") and chosen[0] == "CPUExecutionProvider":
        raise ModelError(f"onnxruntime has no {device} execution provider here "
                         f"(available: {', '.join(have)}); install onnxruntime-gpu")
    return chosen


def _with_provider_options(providers: Sequence[str]) -> list:
    """ORT's TensorRT provider caches its engines in dbrt's engine cache, so the second start
    is fast there too."""
    out = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            from ..tensorrt.cache import cache_dir

            path = cache_dir() / "onnxruntime"
            path.mkdir(parents=True, exist_ok=True)
            out.append((name, {"trt_engine_cache_enable": True, "trt_timing_cache_enable": True,
                               "trt_engine_cache_path": str(path)}))
        else:
            out.append(name)
    return out


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model with ONNX Runtime.

    `model` is a path, serialized bytes, an `onnxruntime.InferenceSession`, or a loader: a
    function returning any of these, called on activation (Polygraphy style). `threads` sets
    intra-op threads (0: ORT default); like `spin`, `providers` and `config` it applies when this
    runner makes the session.
    `spin` sets whether idle intra-op threads busy-wait for work (None: ORT default, on): off
    leaves the cores to the other pipeline stages between operators. `config`: further ONNX
    Runtime session config entries (e.g. {"session.set_denormal_as_zero": "1"}).
    """

    name = "onnxruntime"

    def __init__(self, model, device: str = "auto", providers: Optional[Sequence[str]] = None,
                 threads: int = 0, spin: Optional[bool] = None,
                 config: Optional[Mapping[str, str]] = None):
        super().__init__()
        if isinstance(model, (str, os.PathLike)) and not os.path.isfile(model):
            raise ModelError(f"model file not found: {model}")
        self._model = model
        self._providers = tuple(providers) if providers else None
        self._device = device
        self._threads = threads
        self._config = dict(config or {})
        if spin is not None:
            self._config["session.intra_op.allow_spinning"] = "1" if spin else "0"
        self._session = None
        self._cupy = None
        self._inputs: Tuple[TensorInfo, ...] = ()
        self._outputs: Tuple[TensorInfo, ...] = ()
        self._meta: Dict[str, str] = {}

    def _activate(self) -> None:
        source = self._model() if callable(self._model) else self._model
        self._session = source if hasattr(source, "get_inputs") else self._make_session(source)
        self._inputs = tuple(self._info(t) for t in self._session.get_inputs())
        self._outputs = tuple(self._info(t) for t in self._session.get_outputs())
        self._meta = dict(self._session.get_modelmeta().custom_metadata_map)
        # On the CUDA provider with CuPy present, inputs and outputs stay on the GPU (I/O binding).
        gpu = "CUDAExecutionProvider" in self._session.get_providers()
        self._cupy = cupy_or_none() if gpu else None
        self.output_device = "cuda" if self._cupy is not None else "cpu"

    def _make_session(self, model):
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        if self._threads:
            opts.intra_op_num_threads = self._threads
        for key, value in self._config.items():
            opts.add_session_config_entry(key, str(value))
        opts.log_severity_level = 3
        providers = _with_provider_options(self._providers or default_providers(self._device))
        model = os.fspath(model) if not isinstance(model, bytes) else model
        try:
            return ort.InferenceSession(model, sess_options=opts, providers=list(providers))
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelError(f"cannot load ONNX model {self._describe()}: {str(exc).splitlines()[0]}") from exc

    def _describe(self) -> str:
        if isinstance(self._model, (str, os.PathLike)):
            return str(self._model)
        return "<bytes>" if isinstance(self._model, bytes) else f"<{type(self._model).__name__}>"

    @staticmethod
    def _info(t) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else (d if isinstance(d, str) else None) for d in t.shape)
        return TensorInfo(t.name, shape, _ORT_DTYPES.get(t.type, t.type))

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        if self._cupy is not None:
            return self._infer_on_gpu(feed)
        cast = {}
        for t in self._inputs:
            arr = feed[t.name]
            if not isinstance(arr, np.ndarray):  # e.g. a CuPy array: ORT CPU needs host memory
                arr = arr.get() if hasattr(arr, "get") else np.asarray(arr)
            cast[t.name] = np.ascontiguousarray(arr, dtype=t.dtype)
        try:
            values = self._session.run(None, cast)
        except Exception as exc:
            raise ShapeError(f"onnxruntime rejected the input "
                             f"{[a.shape for a in cast.values()]}: {str(exc).splitlines()[0]}") from exc
        return {t.name: v for t, v in zip(self._outputs, values)}

    def _infer_on_gpu(self, feed: Mapping[str, object]) -> Dict[str, object]:
        """I/O binding: CuPy inputs are read in place, outputs come back as CuPy arrays."""
        cp = self._cupy
        device_id = cp.cuda.Device().id
        binding = self._session.io_binding()
        keep = []  # the bound input buffers must outlive the run
        for t in self._inputs:
            arr = cp.ascontiguousarray(cp.asarray(feed[t.name]), dtype=t.dtype)
            keep.append(arr)
            binding.bind_input(t.name, "cuda", device_id, np.dtype(t.dtype), tuple(arr.shape),
                               arr.data.ptr)
        for t in self._outputs:
            binding.bind_output(t.name, "cuda", device_id)
        cp.cuda.get_current_stream().synchronize()  # ORT runs on its own stream
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise ShapeError(f"onnxruntime rejected the input "
                             f"{[a.shape for a in keep]}: {str(exc).splitlines()[0]}") from exc
        return {t.name: _ortvalue_as_cupy(cp, value, t.dtype)
                for t, value in zip(self._outputs, binding.get_outputs())}

    @property
    def max_batch(self) -> int:
        """A model exported with a fixed batch size takes exactly that many frames per call
        (0: any number), so that the pipeline and `detect_batch` never send more (and pad a
        shorter batch: `min_batch`)."""
        return fixed_batch(self._inputs)

    @property
    def metadata(self) -> Dict[str, str]:
        return dict(self._meta)

    @property
    def providers(self) -> Tuple[str, ...]:
        return tuple(self._session.get_providers()) if self._session else ()


def _ortvalue_as_cupy(cp, value, dtype: str):
    """A CuPy view of an OrtValue in GPU memory; the view keeps the OrtValue alive."""
    shape = tuple(value.shape())
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    memory = cp.cuda.UnownedMemory(value.data_ptr(), nbytes, value)
    return cp.ndarray(shape, dtype=dtype, memptr=cp.cuda.MemoryPointer(memory, 0))
