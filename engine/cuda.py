"""Thin CuPy helpers: device buffers, streams, pinned host memory, CUDA graphs, device info.

GPU runners (TensorRT, the INT8 calibrator, the PyTorch stand-in) touch device memory only
through a backend object with the methods of `CupyBackend`. Production always uses CuPy; the
TensorRT test double ships a host-memory backend with the same methods (tests/trt_double).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .lazy import cupy_or_none, require


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for / runs on."""

    name: str
    compute_capability: str          # "8.9", "9.0", ...
    total_memory: int = 0            # bytes
    integrated: bool = False         # a Jetson's (or DRIVE's) GPU, sharing the system memory

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")

    def __str__(self) -> str:
        return f"{self.name} ({self.sm})"


class CupyBackend:
    """Device memory and streams on the current CUDA device, via CuPy."""

    name = "cuda"

    def __init__(self, cupy=None):
        self.cp = cupy or require("cupy")

    # -- memory ---------------------------------------------------------------------------
    def is_device_array(self, array) -> bool:
        return isinstance(array, self.cp.ndarray)

    def empty(self, shape, dtype):
        return self.cp.empty(tuple(shape), dtype=dtype)

    def pointer(self, array) -> int:
        return int(array.data.ptr)

    def copy_into(self, dst, src, stream) -> None:
        """Enqueue src (host or device) -> dst (device) on `stream`, casting to dst's dtype."""
        if self.is_device_array(src):
            with stream:
                self.cp.copyto(dst, src, casting="same_kind")
        else:
            dst.set(np.ascontiguousarray(src, dtype=dst.dtype), stream=stream)

    def copy(self, array, stream):
        """A device copy of `array`, enqueued on `stream`."""
        with stream:
            return array.copy()

    def to_host(self, array) -> np.ndarray:
        return self.cp.asnumpy(array)

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        """A page-locked host array (fast, truly asynchronous host<->device copies)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        mem = self.cp.cuda.alloc_pinned_memory(max(1, count * dtype.itemsize))
        return np.frombuffer(mem, dtype, count).reshape(shape)

    # -- streams --------------------------------------------------------------------------
    def stream(self):
        # non_blocking: no implicit sync with the legacy default stream, so workers overlap.
        return self.cp.cuda.Stream(non_blocking=True)

    def stream_handle(self, stream) -> int:
        return int(stream.ptr)

    def wait_for_caller(self, stream) -> None:
        """Order `stream` after the work already queued on the caller's current stream
        (e.g. GPU preprocessing that produced our input), without blocking the host."""
        current = self.cp.cuda.get_current_stream()
        if current.ptr != stream.ptr:
            stream.wait_event(current.record())

    def synchronize(self, stream) -> None:
        stream.synchronize()

    # -- CUDA graphs ----------------------------------------------------------------------
    def begin_capture(self, stream) -> None:
        stream.begin_capture(mode=self.cp.cuda.runtime.streamCaptureModeThreadLocal)

    def end_capture(self, stream):
        """The captured graph; a capture that broke raises CuPy's CUDARuntimeError, whose
        check_status has already reset CUDA's last error (cupy_backends/cuda/api/runtime.pyx)."""
        return stream.end_capture()

    def launch(self, graph, stream) -> None:
        graph.launch(stream)

    # -- device ---------------------------------------------------------------------------
    def device_info(self) -> DeviceInfo:
        device = self.cp.cuda.Device()
        props = self.cp.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        cc = str(device.compute_capability)          # CuPy gives "89"
        return DeviceInfo(name, f"{cc[:-1]}.{cc[-1]}", int(props.get("totalGlobalMem", 0)),
                          bool(props.get("integrated", 0)))


def default_backend() -> Optional[CupyBackend]:
    """CuPy on the current GPU, or None when CuPy or a usable GPU is missing."""
    cp = cupy_or_none()
    return CupyBackend(cp) if cp is not None else None


def require_backend(feature: str = "TensorRT"):
    """The default backend, or a clear error naming what is missing."""
    backend = default_backend()
    if backend is None:
        from .errors import DbrtError

        raise DbrtError(f"{feature} needs an NVIDIA GPU and CuPy (pip install cupy-cuda12x); "
                        "none is usable here - use --backend onnxruntime")
    return backend
