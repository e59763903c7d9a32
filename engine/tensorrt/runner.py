"""TensorRT backend: runs a serialized engine with CuPy device buffers and streams.

    with TensorRTRunner("model.engine") as runner:
        prob = runner.infer(cupy_batch)["prob"]       # stays on the GPU (CuPy)

- inputs may be CuPy arrays already on the GPU (used in place, no copy) or NumPy arrays;
- outputs are CuPy arrays (`output_device == "cuda"`) for the GPU post-processor;
- the engine is shared, and each calling thread gets its own execution context, stream and
  CUDA graphs, freed when the thread ends; on an engine with dynamic shapes the threads take
  turns (TensorRT lets one context at a time use an optimization profile; all use profile 0);
- `cuda_graph=True` captures one CUDA graph per input shape and replays it afterwards.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .. import cuda as _cuda
from ..base import Runner, TensorInfo
from ..errors import DbrtError, ModelError, ShapeError
from . import require_tensorrt
from .dla import use_dla_core
from .record import EngineRecord
from ..shapes import ShapeProfile, check_in_profile
from .logger import capturing_logger, init_plugins, log


# captured shapes kept per thread: each holds an execution context, whose activation memory is
# the profile's largest, so a folder of photos of many sizes must not keep one per size
MAX_GRAPHS = 8


@dataclass
class _Graph:
    """One captured shape: TensorRT keeps shape-dependent state in the execution context, so a
    graph is replayed only on the context it was captured on, which keeps that shape for good."""

    graph: object
    context: object               # this shape's own execution context
    inputs: Dict[str, object]     # fixed device buffers the graph reads
    outputs: Dict[str, object]    # fixed device buffers the graph writes


@dataclass
class _ThreadState:
    """What one thread needs to run the shared engine: TensorRT contexts are not thread-safe."""

    context: object  # None in CUDA-graph mode: each captured shape has a context of its own
    stream: object
    shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    graphs: "OrderedDict[Tuple, _Graph]" = field(default_factory=OrderedDict)


class TensorRTRunner(Runner):
    """Runs a TensorRT engine behind the Runner interface: `engine` is a path, serialized bytes,
    a deserialized engine, or a loader (a function returning any of these, called on activation).

    A version-compatible engine carries a lean TensorRT runtime (host code) that runs in this
    process: allowed only when `host_code` is given, for an engine the caller trusts. The
    record beside an engine file proves nothing (whoever hands over a file can write one);
    dbrt's engine cache passes `host_code` for the version-compatible engines it built.

    `dla_core`: the Jetson DLA core that runs an engine built for the DLA (default: the one
    its record names)."""

    name = "tensorrt"
    output_device = "cuda"

    def __init__(self, engine, record: Optional[EngineRecord] = None, cuda_graph: bool = False,
                 backend=None, host_code: bool = False, dla_core: Optional[int] = None):
        super().__init__()
        if isinstance(engine, (str, os.PathLike)):
            if not os.path.isfile(engine):
                raise ModelError(f"engine file not found: {engine}")
            record = record or EngineRecord.load(engine)
        self._source = engine
        self.record = record
        self.cuda_graph = cuda_graph
        self.host_code = host_code
        self.dla_core = dla_core
        self._backend = backend
        self._engine = None
        self._runtime = None
        self._logger = None
        self._local = threading.local()
        # per calling thread, released with it (a thread that ended frees its context, whose
        # activation memory is the profile's largest), or all together on deactivate()
        self._states: "weakref.WeakKeyDictionary[threading.Thread, _ThreadState]" = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        # TensorRT: "each execution context in concurrent use must use a separate optimization
        # profile" (dynamic shapes); every thread's context is on profile 0, so they take turns
        self._profile_in_use = threading.Lock()
        self._inputs: Tuple[TensorInfo, ...] = ()
        self._outputs: Tuple[TensorInfo, ...] = ()
        self._profiles: Dict[str, ShapeProfile] = {}
        self._dynamic = False

    # -- lifecycle ------------------------------------------------------------------------
    def _describe(self) -> str:
        if isinstance(self._source, (str, os.PathLike)):
            return Path(self._source).name
        if isinstance(self._source, (bytes, bytearray)):
            return "<bytes>"
        return f"<{type(self._source).__name__}>"

    def _activate(self) -> None:
        trt = require_tensorrt()
        self.backend = self._backend or _cuda.require_backend("the TensorRT runner")
        if self.record is not None:  # refuse early, with a useful message, instead of a None engine
            self.record.check_runtime(self._describe(), trt.__version__, self.backend.device_info())
        self._logger = capturing_logger(trt)
        self._engine = self._deserialize(trt)
        self._read_io(trt)

    def _deserialize(self, trt):
        init_plugins(trt)  # DeformConv and other plugin layers
        self._runtime = trt.Runtime(self._logger)
        if self.host_code:
            self._runtime.engine_host_code_allowed = True
        source = self._source() if callable(self._source) else self._source
        if hasattr(source, "num_io_tensors"):  # deserialized elsewhere
            return source
        self.dla_core = use_dla_core(trt, self._runtime, self.dla_core, self.record, self._describe())
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            errors = self._logger.last_errors()
            lean = "lean runtime" in errors.lower()  # a version-compatible plan, host code refused
            hint = ("a version-compatible engine runs the TensorRT runtime it carries only with "
                    "--trust-engine-code (engine_host_code): only for a file you trust" if lean
                    else "engines only run on the TensorRT version and GPU that built them; "
                         "rebuild with dbrt build")
            raise ModelError(f"TensorRT {trt.__version__} cannot load engine {self._describe()}: "
                             f"{errors} ({hint})")
        return engine

    def _read_io(self, trt) -> None:
        engine = self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dims = tuple(None if int(d) < 0 else int(d) for d in engine.get_tensor_shape(name))
            info = TensorInfo(name, dims, self._numpy_dtype(trt, name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(info)
                lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
                self._profiles[name] = ShapeProfile(tuple(lo), tuple(opt), tuple(hi))
            else:
                outputs.append(info)
        self._inputs, self._outputs = tuple(inputs), tuple(outputs)
        self._dynamic = any(None in t.shape for t in self._inputs)

    def _numpy_dtype(self, trt, name: str) -> str:
        """The tensor's NumPy / CuPy dtype; one clear error for the TensorRT types NumPy has
        none for (trt.nptype raises TypeError for BF16, FP8, INT4, FP4)."""
        dtype = self._engine.get_tensor_dtype(name)
        try:
            return np.dtype(trt.nptype(dtype)).name
        except TypeError:
            raise ModelError(f"engine {self._describe()}: tensor {name!r} is "
                             f"{getattr(dtype, 'name', dtype)}, which NumPy and CuPy have no type "
                             "for; dbrt feeds and reads float32, float16 or integer tensors "
                             "(build the engine with FP32 or FP16 inputs and outputs)") from None

    def _deactivate(self) -> None:
        with self._lock:
            self._states.clear()
        self._local = threading.local()
        self._engine = None
        self._runtime = None

    def _thread_state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            context = None if self.cuda_graph else self._new_context()
            with self._lock:
                state = _ThreadState(context, self.backend.stream())
                self._states[threading.current_thread()] = state
            self._local.state = state
        return state

    def _thread_states(self) -> list:
        """The states of the threads that called and still exist."""
        with self._lock:
            return list(self._states.values())

    def _new_context(self):
        """An execution context (its activation memory is the profile's largest): None from
        TensorRT, e.g. out of GPU memory, is one clear error, not a later AttributeError."""
        with self._lock:  # contexts are created one at a time, then used without the lock
            context = self._engine.create_execution_context()
        if context is None:
            raise DbrtError(f"TensorRT could not create an execution context for "
                            f"{self._describe()} (out of GPU memory?): "
                            f"{self._logger.last_errors()}")
        return context

    # -- inference ------------------------------------------------------------------------
    def _check_feed(self, feed: Mapping[str, object]) -> None:
        super()._check_feed(feed)
        for name, array in feed.items():
            check_in_profile(name, tuple(array.shape), self._profiles[name])

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, object]:
        state = self._thread_state()
        backend = self.backend
        backend.wait_for_caller(state.stream)  # inputs may come from the caller's stream
        shapes = {t.name: tuple(int(d) for d in feed[t.name].shape) for t in self._inputs}
        with self._profile_in_use if self._dynamic else contextlib.nullcontext():
            try:
                if self.cuda_graph:
                    return self._infer_graph(state, feed, shapes)
                self._set_shapes(state, shapes)
                inputs = {t.name: self._device_input(t, feed[t.name], state.stream)
                          for t in self._inputs}
                outputs = self._new_outputs(state.context)
                self._bind(state.context, inputs, outputs)
                self._execute(state.context, state.stream)
                return outputs
            finally:  # outputs are complete when returned; after an error, no copy is left in
                backend.synchronize(state.stream)  # flight into a buffer this call lets go of

    def _set_shapes(self, state: _ThreadState, shapes: Dict[str, Tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            if state.shapes.get(name) != shape:
                self._set_shape(state.context, name, shape)
                state.shapes[name] = shape

    def _set_shape(self, context, name: str, shape: Tuple[int, ...]) -> None:
        if not context.set_input_shape(name, shape):
            raise ShapeError(f"TensorRT rejected input {name!r} shape {shape}: "
                             f"{self._logger.last_errors()}")

    def _device_input(self, info: TensorInfo, array, stream):
        """The device buffer TensorRT reads: the caller's CuPy array itself when it already has
        the right dtype and layout (zero copy), else a copy made on our stream."""
        backend = self.backend
        if (backend.is_device_array(array) and array.dtype == np.dtype(info.dtype)
                and array.flags.c_contiguous and backend.pointer(array) % 256 == 0):
            return array  # a view into a larger buffer may be unaligned: copied then
        buffer = backend.empty(array.shape, info.dtype)
        backend.copy_into(buffer, array, stream)
        return buffer

    def _new_outputs(self, context) -> Dict[str, object]:
        return {t.name: self.backend.empty(tuple(context.get_tensor_shape(t.name)), t.dtype)
                for t in self._outputs}

    def _bind(self, context, inputs: Mapping, outputs: Mapping) -> None:
        for name, array in list(inputs.items()) + list(outputs.items()):
            pointer = self.backend.pointer(array)
            if pointer % 256:  # TensorRT's documented alignment for every I/O address
                raise DbrtError(f"TensorRT needs 256-byte aligned buffers; {name!r} is at "
                                f"{pointer:#x}")
            if context.set_tensor_address(name, pointer) is False:
                raise DbrtError(f"TensorRT refused the address of {name!r}: "
                                f"{self._logger.last_errors()}")

    def _execute(self, context, stream) -> bool:
        ok = context.execute_async_v3(self.backend.stream_handle(stream))
        if not ok:
            raise DbrtError(f"TensorRT execution failed: {self._logger.last_errors()}")
        return ok

    # -- CUDA graphs ----------------------------------------------------------------------
    def _infer_graph(self, state: _ThreadState, feed: Mapping, shapes) -> Dict[str, object]:
        key = tuple(sorted(shapes.items()))
        entry = state.graphs.get(key)
        if entry is None:
            if len(state.graphs) >= MAX_GRAPHS:  # the least recently used shape lets go of its
                state.graphs.popitem(last=False)  # context (profile-sized memory) and buffers
            entry = self._capture(state, shapes)
            state.graphs[key] = entry
        state.graphs.move_to_end(key)
        for name, buffer in entry.inputs.items():
            self.backend.copy_into(buffer, feed[name], state.stream)
        if entry.graph is not None:
            self.backend.launch(entry.graph, state.stream)
        else:  # capture failed once for this shape: plain enqueue on the fixed buffers
            self._execute(entry.context, state.stream)
        return {name: self.backend.copy(buf, state.stream) for name, buf in entry.outputs.items()}

    def _capture(self, state: _ThreadState, shapes) -> _Graph:
        """trtexec's recipe, on a context of this shape's own: set the shape, bind fixed
        buffers, enqueue once (lets TensorRT finish lazy setup), then capture one enqueue into a
        graph. Falls back to plain enqueue on that context if the capture fails."""
        backend = self.backend
        context = self._new_context()
        for name, shape in shapes.items():
            self._set_shape(context, name, shape)
        inputs = {t.name: backend.empty(shapes[t.name], t.dtype) for t in self._inputs}
        outputs = self._new_outputs(context)
        self._bind(context, inputs, outputs)
        self._execute(context, state.stream)
        backend.synchronize(state.stream)
        backend.begin_capture(state.stream)
        ok = context.execute_async_v3(backend.stream_handle(state.stream))
        try:  # an enqueue that broke the capture invalidates it: end_capture raises then
            graph = backend.end_capture(state.stream)
        except Exception as exc:  # noqa: BLE001 - CuPy's CUDARuntimeError, or the backend's
            log.warning("CUDA graph capture failed for shapes %s (%s); running without a graph",
                        shapes, exc)
            return _Graph(None, context, inputs, outputs)
        if not ok:
            log.warning("CUDA graph capture failed for shapes %s; running without a graph", shapes)
            graph = None
        return _Graph(graph, context, inputs, outputs)

    # -- description ----------------------------------------------------------------------
    @property
    def profiles(self) -> Dict[str, ShapeProfile]:
        """Input name -> the shape range of optimisation profile 0."""
        return dict(self._profiles)

    @property
    def max_batch(self) -> int:
        """The most frames one call takes (the profile's largest batch; 0 before activation),
        so that the pipeline and `detect_batch` never send more."""
        return min((int(p.max[0]) for p in self._profiles.values()), default=0)

    @property
    def min_batch(self) -> int:
        """The fewest frames one call takes: the profile's smallest batch (an engine built with
        static shapes, e.g. trtexec's batch 4, takes exactly that many); shorter batches are
        padded by the caller."""
        return max([int(p.min[0]) for p in self._profiles.values()] + [super().min_batch])

    @property
    def metadata(self) -> Dict[str, str]:
        return dict(self.record.metadata) if self.record is not None else {}
