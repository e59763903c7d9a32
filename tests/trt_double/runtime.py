"""Runtime side of the fake TensorRT: Runtime, ICudaEngine, IExecutionContext (tensor API).

`execute_async_v3` reads the inputs from the device addresses given to `set_tensor_address`,
runs the embedded ONNX with ONNX Runtime and writes the outputs to their addresses, in stream
order (recorded instead when the stream is capturing a CUDA graph)."""
from __future__ import annotations

import threading
from typing import Dict, List, Optional

import numpy as np

from . import fake_cuda
from .plan import Plan, ort_session


class Runtime:
    """The module assembly subclasses it with `trt` bound to the fake module."""

    __slots__ = ("logger", "engine_host_code_allowed", "DLA_core")

    def __init__(self, logger):
        self.logger = logger
        self.engine_host_code_allowed = False
        self.DLA_core = -1

    @property
    def num_DLA_cores(self) -> int:  # noqa: N802 - TensorRT's name
        return self.trt._double.dla_cores

    def deserialize_cuda_engine(self, serialized_engine) -> Optional["CudaEngine"]:
        trt = self.trt
        try:
            plan = Plan.from_bytes(bytes(serialized_engine))
        except Exception as exc:  # noqa: BLE001 - TensorRT logs and returns None
            return self._refuse(str(exc))
        version_compatible = "VERSION_COMPATIBLE" in plan.flags
        built, here = _release(plan.version), _release(trt.__version__)
        # a later release of the same major, or major 8 -> 9 / 10, 9 -> 10 and 10 -> 11
        runs = here >= built and (here[0] == built[0] or (built[0], here[0]) in {
            (8, 9), (8, 10), (9, 10), (10, 11)})
        if plan.version != trt.__version__ and not (version_compatible and runs):
            return self._refuse(
                "The engine plan file is not compatible with this version of TensorRT, expecting "
                f"library version {trt.__version__} got {plan.version}, please rebuild.")
        if version_compatible and not self.engine_host_code_allowed:
            return self._refuse("Cannot deserialize engine with lean runtime since "
                                "IRuntime::getEngineHostCodeAllowed() is false.")
        here = fake_cuda.DEVICE.compute_capability
        if plan.compute_capability != here and not (
                plan.hardware_level == "AMPERE_PLUS" and _release(here) >= (8,)):
            return self._refuse("The engine plan file is generated on an incompatible device, "
                                f"expecting compute {here} got compute {plan.compute_capability}")
        if plan.dla_core >= 0 and not 0 <= self._dla_core(plan) < trt._double.dla_cores:
            return self._refuse(f"Cannot deserialize a DLA engine: DLA core "
                                f"{self._dla_core(plan)} is not available")
        engine = trt._double.engine_class(trt, plan, self.logger)
        engine.dla_core = self._dla_core(plan) if plan.dla_core >= 0 else -1
        return engine

    def _dla_core(self, plan) -> int:
        return self.DLA_core if self.DLA_core >= 0 else plan.dla_core

    def _refuse(self, message: str) -> None:
        self.logger.log(self.trt.ILogger.Severity.ERROR, message)
        return None


def _release(version: str) -> tuple:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


class CudaEngine:
    __slots__ = ("trt", "plan", "logger", "_tensors", "_session", "_shape_cache", "_lock",
                 "dla_core", "in_flight")  # dla_core: the core it runs on (double only, for tests)

    def __init__(self, trt, plan: Plan, logger):
        self.trt, self.plan, self.logger = trt, plan, logger
        self._tensors = {t.name: t for t in plan.tensors}
        self._session = None
        self._shape_cache: Dict[tuple, Dict[str, tuple]] = {}
        self._lock = threading.Lock()
        # profile -> the context whose enqueued work has not run yet: "each execution context
        # in concurrent use must use a separate optimization profile" (NvInferRuntime.h)
        self.in_flight: Dict[int, "ExecutionContext"] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self.plan.tensors)

    @property
    def dynamic(self) -> bool:
        """Whether an input has a dynamic dimension (its contexts then need profiles)."""
        return any(-1 in tuple(t.shape) for t in self.plan.tensors if t.mode == "INPUT")

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.plan.profiles)

    def get_tensor_name(self, index: int) -> str:
        return self.plan.tensors[index].name

    def get_tensor_mode(self, name: str):
        tensor = self._tensors.get(name)
        return getattr(self.trt.TensorIOMode, tensor.mode if tensor else "NONE")

    def get_tensor_dtype(self, name: str):
        return getattr(self.trt.DataType, self._tensors[name].dtype)

    def get_tensor_shape(self, name: str) -> tuple:
        return tuple(self._tensors[name].shape)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[tuple]:
        return [tuple(s) for s in self.plan.profiles[profile_index][name]]

    def create_execution_context(self) -> "ExecutionContext":
        return ExecutionContext(self)

    def serialize(self):
        from .builder import HostMemory

        return HostMemory(self.plan.to_bytes())

    # -- used by contexts -------------------------------------------------------------------
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = ort_session(self.plan.onnx_bytes)
            return self._session

    def output_shapes(self, input_shapes: Dict[str, tuple]) -> Dict[str, tuple]:
        """Output shapes for these input shapes (TensorRT's shape inference; here: one run)."""
        key = tuple(sorted(input_shapes.items()))
        if key not in self._shape_cache:
            feed = {n: np.zeros(s, np.dtype(_NP[self._tensors[n].dtype])) for n, s in input_shapes.items()}
            outs = self.session().run(None, feed)
            names = [o.name for o in self.session().get_outputs()]
            self._shape_cache[key] = {n: tuple(v.shape) for n, v in zip(names, outs)}
        return self._shape_cache[key]


class WeakEngine(CudaEngine):
    __slots__ = ()

    @property
    def device_memory_size(self) -> int:
        return 1 << 20


class EngineV2(CudaEngine):
    __slots__ = ()

    @property
    def device_memory_size_v2(self) -> int:
        return 1 << 20


_NP = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32",
       "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


class ExecutionContext:
    __slots__ = ("engine", "_shapes", "_addresses", "_profile", "_epoch")

    def __init__(self, engine: CudaEngine):
        self.engine = engine
        self._shapes: Dict[str, tuple] = {}
        self._epoch = 0  # counts input shape changes
        self._addresses: Dict[str, int] = {}
        self._profile = 0

    def _error(self, message: str) -> bool:
        self.engine.logger.log(self.engine.trt.ILogger.Severity.ERROR, message)
        return False

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return self._error(f"profile index {profile_index} out of range")
        self._profile = profile_index
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        tensor = self.engine._tensors.get(name)
        if tensor is None or tensor.mode != "INPUT":
            return self._error(f"setInputShape: {name} is not an input tensor")
        shape = tuple(int(d) for d in shape)
        lo, _, hi = self.engine.plan.profiles[self._profile][name]
        if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            return self._error(
                f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                f"failed, condition: satisfyProfile. Set dimension {shape} for tensor {name} does "
                f"not satisfy any optimization profiles. Valid range: {lo} .. {hi})")
        if self._shapes.get(name) != shape:
            self._epoch += 1  # shape-dependent state changes: graphs captured before are stale
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        tensor = self.engine._tensors[name]
        if tensor.mode == "INPUT":
            return self._shapes.get(name, tuple(tensor.shape))
        inputs = [t.name for t in self.engine.plan.tensors if t.mode == "INPUT"]
        if any(n not in self._shapes for n in inputs):
            return tuple(tensor.shape)   # still symbolic (-1) until every input shape is set
        return self.engine.output_shapes({n: self._shapes[n] for n in inputs})[name]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine._tensors:
            return self._error(f"setTensorAddress: no tensor named {name}")
        if int(memory) % 256:
            return self._error(f"setTensorAddress: {name} address {int(memory):#x} is not "
                               "256-byte aligned")
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        tensors = self.engine.plan.tensors
        missing = [t.name for t in tensors if t.name not in self._addresses]
        unset = [t.name for t in tensors if t.mode == "INPUT" and t.name not in self._shapes]
        if missing or unset:
            return self._error(f"enqueueV3: tensors without address {missing}, inputs without "
                               f"shape {unset}")
        shapes = {t.name: self.get_tensor_shape(t.name) for t in tensors}
        addresses = dict(self._addresses)
        try:  # validate now, as TensorRT's enqueue checks its bindings
            for t in tensors:
                fake_cuda.resolve(addresses[t.name], shapes[t.name], _NP[t.dtype])
        except fake_cuda.IllegalAddress as exc:
            return self._error(f"Cuda Runtime ({exc})")
        epoch = self._epoch
        if fake_cuda.capturing(stream_handle):  # a graph: its launches run at once
            fake_cuda.enqueue(stream_handle, lambda: self._run(shapes, addresses, epoch))
            return True
        busy = self.engine.in_flight.setdefault(self._profile, self)
        if busy is not self and self.engine.dynamic:  # TensorRT's results would be garbage
            return self._error(f"two execution contexts in concurrent use on optimization "
                               f"profile {self._profile} (each needs a profile of its own)")

        def run():
            self.engine.in_flight.pop(self._profile, None)
            self._run(shapes, addresses, epoch)
        fake_cuda.enqueue(stream_handle, run)
        return True

    def _run(self, shapes: Dict[str, tuple], addresses: Dict[str, int], epoch: int) -> None:
        tensors = self.engine.plan.tensors
        if epoch != self._epoch:
            # TensorRT keeps shape-dependent state in the context: a graph captured before an
            # input shape change (even one changed back since) runs on state that is gone
            raise RuntimeError(f"a graph captured at input shapes {shapes} was replayed after "
                               "the context's input shapes changed (re-capture, or one context "
                               "per captured graph)")
        view = {t.name: fake_cuda.resolve(addresses[t.name], shapes[t.name], _NP[t.dtype])
                for t in tensors}
        feed = {t.name: view[t.name].copy() for t in tensors if t.mode == "INPUT"}
        session = self.engine.session()
        outputs = session.run(None, feed)
        for out, value in zip(session.get_outputs(), outputs):
            view[out.name][...] = value
