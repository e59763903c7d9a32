"""Host memory posing as GPU memory, for the TensorRT test double.

`HostBackend` has the methods of `engine.cuda.CupyBackend`, so the TensorRT runner, builder and
calibrator run unchanged on it. "Device" arrays are NumPy arrays (`DeviceArray`) registered in an
allocation table; the fake TensorRT reads and writes them through the raw addresses it is given,
exactly as TensorRT does with `set_tensor_address`, and rejects addresses outside any live
allocation (CUDA's "illegal memory access"). Work on a stream waits in its queue until the
stream is synchronised, as on a GPU, where it runs later than the call that enqueued it: a
buffer freed before then is an illegal address when the work runs, and work a caller leaves
unsynchronised shows in `FakeStream.queue`. CUDA graphs are recorded, so a graph replays the
captured work on the current buffer contents.
"""
from __future__ import annotations

import ctypes
import itertools
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from engine.cuda import DeviceInfo

DEVICE = DeviceInfo("Fake GPU (dbrt test double)", "8.9", 1 << 30)


class IllegalAddress(RuntimeError):
    """A kernel touched memory outside every live device allocation."""


class DeviceArray(np.ndarray):
    """A NumPy array that the fake backend treats as device memory."""


_allocations: Dict[int, Tuple[int, "weakref.ref"]] = {}


def _register(array: DeviceArray) -> DeviceArray:
    _allocations[array.ctypes.data] = (array.nbytes, weakref.ref(array))
    return array


def device_empty(shape, dtype) -> DeviceArray:
    """Like cudaMalloc: 256-byte aligned (TensorRT requires it of every I/O address)."""
    dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 256, np.uint8)
    start = -raw.ctypes.data % 256
    return _register(raw[start:start + nbytes].view(dtype).reshape(shape).view(DeviceArray))


def to_device(array) -> DeviceArray:
    """Copy a NumPy array into fake device memory (like cupy.asarray)."""
    out = device_empty(np.shape(array), np.asarray(array).dtype)
    out[...] = array
    return out


def resolve(ptr: int, shape, dtype) -> np.ndarray:
    """The (shape, dtype) array at device address `ptr`; IllegalAddress if not allocated."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    for start, (size, ref) in list(_allocations.items()):
        if ref() is None:
            del _allocations[start]
            continue
        if start <= ptr and ptr + nbytes <= start + size:
            raw = (ctypes.c_byte * max(nbytes, 1)).from_address(ptr)
            return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
    raise IllegalAddress(f"an illegal memory access was encountered (address {ptr:#x}, "
                         f"{nbytes} bytes)")


class FakeStream:
    _handles = itertools.count(0x5000, 0x10)

    def __init__(self):
        self.ptr = next(self._handles)
        self.capture: Optional[List[Callable[[], None]]] = None
        self.queue: List[Callable[[], None]] = []  # enqueued, not yet run
        _streams[self.ptr] = weakref.ref(self)

    def run_queue(self) -> None:
        while self.queue:
            self.queue.pop(0)()


_streams: Dict[int, "weakref.ref"] = {}


class FakeGraph:
    def __init__(self, ops: List[Callable[[], None]]):
        self.ops = ops
        self.launches = 0

    def launch(self, stream=None) -> None:
        self.launches += 1
        for op in self.ops:
            op()


def capturing(stream_handle: int) -> bool:
    """Whether the stream is capturing a graph."""
    ref = _streams.get(int(stream_handle))
    stream = ref() if ref is not None else None
    return stream is not None and stream.capture is not None


def enqueue(stream_handle: int, op: Callable[[], None]) -> None:
    """Queue `op` on the stream (it runs when the stream is synchronised), record it when the
    stream is capturing a graph, or run it now on a handle that is no FakeStream (0: CUDA's
    legacy default stream, as synchronous as a test needs)."""
    ref = _streams.get(int(stream_handle))
    stream = ref() if ref is not None else None
    if stream is not None and stream.capture is not None:
        stream.capture.append(op)
    elif stream is not None:
        stream.queue.append(op)
    else:
        op()


class HostBackend:
    """engine.cuda.CupyBackend's interface over host memory."""

    name = "fake-cuda"

    def __init__(self, device: Optional[DeviceInfo] = None):
        self.device = device       # None: the module's DEVICE at call time (tests patch it)
        self.waits = 0

    def is_device_array(self, array) -> bool:
        return isinstance(array, DeviceArray)

    def empty(self, shape, dtype):
        return device_empty(shape, dtype)

    def pointer(self, array) -> int:
        return int(array.ctypes.data)

    def copy_into(self, dst, src, stream) -> None:
        if not self.is_device_array(src):  # CUDA stages pageable host memory at the call
            src = np.array(src, copy=True)
        enqueue(stream.ptr, lambda: np.copyto(dst, np.asarray(src), casting="same_kind"))

    def copy(self, array, stream):
        out = device_empty(array.shape, array.dtype)
        enqueue(stream.ptr, lambda: np.copyto(out, array))
        return out

    def to_host(self, array) -> np.ndarray:
        return np.array(array, copy=True).view(np.ndarray)

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def stream(self) -> FakeStream:
        return FakeStream()

    def stream_handle(self, stream) -> int:
        return stream.ptr

    def wait_for_caller(self, stream) -> None:
        self.waits += 1

    def synchronize(self, stream) -> None:
        if stream.capture is not None:
            raise RuntimeError("operation not permitted when stream is capturing")
        stream.run_queue()

    def begin_capture(self, stream) -> None:
        stream.capture = []

    fail_capture = False  # a test sets it: the capture is invalidated, as CUDA reports it

    def end_capture(self, stream) -> FakeGraph:
        ops, stream.capture = stream.capture, None
        if self.fail_capture:
            raise RuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a "
                               "previous error during capture")
        return FakeGraph(ops)

    def launch(self, graph, stream) -> None:
        graph.launches += 1
        for op in graph.ops:
            enqueue(stream.ptr, op)

    def device_info(self) -> DeviceInfo:
        return self.device or DEVICE
