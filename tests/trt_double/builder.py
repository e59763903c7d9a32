"""Build side of the fake TensorRT: Builder, network, ONNX parser, builder config, profiles,
timing cache. Objects use __slots__ so that, like the pybind11 originals, assigning an attribute
the flavour does not have (e.g. `config.int8_calibrator` on 11.x) raises AttributeError."""
from __future__ import annotations

import json
from typing import Dict, List, Optional

import numpy as np
import onnx

from . import fake_cuda
from .dla import DLA_OPS, Layer, check_dla, dla_core
from .plan import SUPPORTED_OPS, Plan, PlanTensor, calibrate, run_build_phases

_ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}


class HostMemory:
    """IHostMemory: bytes(mem) gives the data."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes):
        self._data = bytes(data)

    def __bytes__(self) -> bytes:
        return self._data

    @property
    def nbytes(self) -> int:
        return len(self._data)


class Tensor:
    __slots__ = ("name", "shape", "dtype")

    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype


class NetworkDefinition:
    __slots__ = ("trt", "flags", "strongly_typed", "explicit_batch", "_inputs", "_outputs",
                 "onnx_bytes", "has_qdq", "node_count", "_layers")

    def __init__(self, trt, flags: int):
        kinds = trt.NetworkDefinitionCreationFlag
        self.trt, self.flags = trt, flags
        strong_bit = getattr(kinds, "STRONGLY_TYPED", None)
        self.strongly_typed = (not trt._double.weak) or (
            strong_bit is not None and bool(flags & (1 << int(strong_bit))))
        batch_bit = getattr(kinds, "EXPLICIT_BATCH", None)
        # 8.x: explicit batch only when asked for; 10.x / 11.x: always.
        self.explicit_batch = not trt._double.needs_explicit_batch or (
            batch_bit is not None and bool(flags & (1 << int(batch_bit))))
        self._inputs: List[Tensor] = []
        self._outputs: List[Tensor] = []
        self.onnx_bytes = b""
        self.has_qdq = False
        self.node_count = 0
        self._layers: List[Layer] = []

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> Layer:
        return self._layers[index]

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> Tensor:
        return self._inputs[index]

    def get_output(self, index: int) -> Tensor:
        return self._outputs[index]


class ParserError:
    __slots__ = ("_code", "_desc", "_node", "_name", "_op")

    def __init__(self, code, desc, node=-1, name="", op=""):
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, name, op

    def code(self):
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return f"In node {self._node} ({self._op}): {self._desc}"


class NamedParserError(ParserError):
    """TensorRT 10.0+ errors also carry the node's name and operator."""

    __slots__ = ()

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op


class OnnxParser:
    __slots__ = ("trt", "network", "logger", "_errors")

    def __init__(self, network, logger):
        self.trt, self.network, self.logger, self._errors = network.trt, network, logger, []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int):
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors = []

    def parse_from_file(self, model: str) -> bool:
        try:
            proto = onnx.load(model)          # resolves external weight files, like TensorRT
        except Exception as exc:  # noqa: BLE001
            return self._fail("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model: {exc}")
        return self._import(proto)

    def parse(self, model, path: Optional[str] = None) -> bool:
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:  # noqa: BLE001
            return self._fail("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model: {exc}")
        return self._import(proto)

    def _fail(self, code, desc, node=-1, name="", op="") -> bool:
        error_type = NamedParserError if self.trt._double.parser_node_names else ParserError
        self._errors.append(error_type(getattr(self.trt.ErrorCode, code), desc, node, name, op))
        self.logger.log(self.trt.ILogger.Severity.ERROR, f"ModelImporter: {desc}")
        return False

    def _import(self, proto) -> bool:
        features = self.trt._double
        if not self.network.explicit_batch:
            return self._fail("INVALID_GRAPH", "This version of the ONNX parser only supports "
                              "TensorRT INetworkDefinitions with an explicit batch dimension")
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset > features.max_opset:
            return self._fail("UNSUPPORTED_GRAPH", f"Unsupported ONNX opset {opset} "
                              f"(this parser supports up to {features.max_opset})")
        ok = True
        for index, node in enumerate(proto.graph.node):
            if node.op_type not in SUPPORTED_OPS | features.extra_ops:
                ok = self._fail("UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}",
                                index, node.name, node.op_type)
            elif node.op_type in PLUGIN_OPS and not self.trt._plugin_registry["initialised"]:
                ok = self._fail("UNSUPPORTED_NODE", f"{PLUGIN_OPS[node.op_type]} plugin was not "
                                "found in the plugin registry!", index, node.name, node.op_type)
            elif node.op_type in PLUGIN_OPS and self.trt._plugin_registry["logger"]() is None:
                # the real library would log through a freed object: undefined behaviour
                raise RuntimeError("the plugin library's logger was freed after "
                                   "init_libnvinfer_plugins (use after free)")
        if not ok:
            return False
        self._fill_network(proto)
        return True

    def _fill_network(self, proto) -> None:
        weights = {t.name for t in proto.graph.initializer}
        dtype = self.trt.DataType
        self.network._inputs = [_tensor(v, dtype) for v in proto.graph.input if v.name not in weights]
        self.network._outputs = [_tensor(v, dtype) for v in proto.graph.output]
        self.network.onnx_bytes = proto.SerializeToString()
        self.network.has_qdq = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
        self.network.node_count = len(proto.graph.node)
        self.network._layers = [Layer(n.name or f"node{i}", n.op_type)
                                for i, n in enumerate(proto.graph.node)]


PLUGIN_OPS = {"DeformConv": "ModulatedDeformConv2d"}  # ops the parser imports as plugins


def _tensor(value, dtype_enum) -> Tensor:
    ttype = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim)
    name = _ONNX_DTYPES[ttype.elem_type]  # INT64 on 8.6, which lacks it: its parser casts it
    return Tensor(value.name, shape, getattr(dtype_enum, name, dtype_enum.INT32))


class OptimizationProfile:
    __slots__ = ("shapes",)

    def __init__(self):
        self.shapes: Dict[str, tuple] = {}

    def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - TensorRT's names
        self.shapes[input] = tuple(tuple(int(d) for d in s) for s in (min, opt, max))

    def get_shape(self, input: str):  # noqa: A002
        return [tuple(s) for s in self.shapes.get(input, ())]


class TimingCache:
    __slots__ = ("version", "cc", "entries")

    MAGIC = "fake-trt-timing-cache"

    def __init__(self, version, cc, entries=None):
        self.version, self.cc, self.entries = version, cc, dict(entries or {})

    def serialize(self) -> HostMemory:
        return HostMemory(json.dumps({"magic": self.MAGIC, "version": self.version, "cc": self.cc,
                                      "entries": self.entries}).encode())

    def combine(self, other, ignore_mismatch: bool) -> bool:
        self.entries.update(other.entries)
        return True


class BuilderConfig:
    """IBuilderConfig; flavour mixins add progress_monitor / int8_calibrator."""

    __slots__ = ("trt", "flags", "pools", "_opt_level", "profiles", "timing_cache",
                 "_monitor", "_calibrator", "calibration_profile", "hardware_compatibility_level",
                 "default_device_type", "DLA_core")

    def __init__(self, trt):
        self.trt, self.flags, self.pools, self._opt_level = trt, set(), {}, 3
        self.default_device_type, self.DLA_core = trt.DeviceType.GPU, -1
        self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
        self.profiles: List[OptimizationProfile] = []
        self.timing_cache = None
        self._monitor = self._calibrator = self.calibration_profile = None

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag)

    def get_flag(self, flag) -> bool:
        return flag in self.flags

    def can_run_on_DLA(self, layer) -> bool:  # noqa: N802 - TensorRT's name
        return layer.op_type in DLA_OPS

    def set_memory_pool_limit(self, pool, pool_size: int) -> None:
        self.pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool) -> int:
        return self.pools.get(pool, fake_cuda.DEVICE.total_memory)

    @property
    def builder_optimization_level(self) -> int:
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        self._opt_level = int(level)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def create_timing_cache(self, serialized_timing_cache) -> Optional[TimingCache]:
        blob = bytes(serialized_timing_cache)
        if not blob:
            return TimingCache(self.trt.__version__, fake_cuda.DEVICE.compute_capability)
        try:
            data = json.loads(blob)
            assert data["magic"] == TimingCache.MAGIC
        except Exception:  # noqa: BLE001
            return None
        return TimingCache(data["version"], data["cc"], data["entries"])

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        here = (self.trt.__version__, fake_cuda.DEVICE.compute_capability)
        if (cache.version, cache.cc) != here and not ignore_mismatch:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> Optional[TimingCache]:
        return self.timing_cache


class ProgressMonitorConfig:
    __slots__ = ()

    @property
    def progress_monitor(self):
        return self._monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor) -> None:
        self._monitor = monitor


class WeakTypingConfig:
    __slots__ = ()

    @property
    def int8_calibrator(self):
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator) -> None:
        self._calibrator = calibrator

    def set_calibration_profile(self, profile) -> bool:
        self.calibration_profile = profile
        return True


class Builder:
    """The module assembly subclasses it with `trt` bound to the fake module."""

    __slots__ = ("logger",)

    def __init__(self, logger):
        self.logger = logger

    @property
    def num_DLA_cores(self) -> int:  # noqa: N802 - TensorRT's name
        return self.trt._double.dla_cores

    def create_network(self, flags: int = 0) -> NetworkDefinition:
        return NetworkDefinition(self.trt, int(flags))

    def create_builder_config(self):
        return self.trt._double.config_class(self.trt)

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network, config) -> Optional[HostMemory]:
        trt = self.trt
        trt._double.builds += 1
        error = _check_build(trt, network, config)
        if error is None and not run_build_phases(config, network.node_count):
            error = "Engine build was cancelled by the progress monitor"
        if error is None and _needs_calibration(trt, network, config):
            error = calibrate(trt, network, config)
        if error is not None:
            self.logger.log(trt.ILogger.Severity.ERROR, error)
            return None
        if config.timing_cache is None:
            config.timing_cache = config.create_timing_cache(b"")
        config.timing_cache.entries.update({f"node{i}": 1 for i in range(network.node_count)})
        plan = Plan(trt.__version__, fake_cuda.DEVICE.compute_capability,
                    [PlanTensor(t.name, "INPUT", t.dtype.name, t.shape) for t in network._inputs]
                    + [PlanTensor(t.name, "OUTPUT", t.dtype.name, t.shape) for t in network._outputs],
                    _profiles(network, config), sorted(f.name for f in config.flags),
                    network.strongly_typed, network.onnx_bytes,
                    config.hardware_compatibility_level.name, dla_core(trt, config))
        return HostMemory(plan.to_bytes())


def _needs_calibration(trt, network, config) -> bool:
    int8 = getattr(trt.BuilderFlag, "INT8", None)
    return int8 is not None and int8 in config.flags and not network.has_qdq


def _profiles(network, config) -> List[Dict[str, list]]:
    if not config.profiles:  # static network: the only shape is the network's own
        return [{t.name: [list(t.shape)] * 3 for t in network._inputs}]
    return [{name: [list(s) for s in shapes] for name, shapes in p.shapes.items()}
            for p in config.profiles]


def _check_build(trt, network, config) -> Optional[str]:
    """The checks TensorRT makes before building; an error message or None."""
    if not network.num_outputs:
        return "Network must have at least one output"
    dla = check_dla(trt, config)
    if dla:
        return dla
    precision_flags = {getattr(trt.BuilderFlag, n, None) for n in ("FP16", "INT8")} - {None}
    if network.strongly_typed and config.flags & precision_flags:
        return "Builder flags FP16/INT8 are not allowed for a strongly typed network"
    dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
    if dynamic and not config.profiles:
        return ("Network has dynamic or shape inputs, but no optimization profile has been "
                "defined.")
    for profile in config.profiles:
        for tensor in network._inputs:
            shapes = profile.shapes.get(tensor.name)
            if shapes is None:
                return f"Optimization profile is missing values for input {tensor.name}"
            lo, opt, hi = (np.array(s) for s in shapes)
            if not (len(lo) == len(tensor.shape) and np.all(lo <= opt) and np.all(opt <= hi)):
                return f"{tensor.name}: profile needs min <= opt <= max in every dimension"
            fixed = np.array(tensor.shape) >= 0
            if np.any(fixed & ((lo != tensor.shape) | (hi != tensor.shape))):
                return f"{tensor.name}: profile disagrees with static dimensions {tensor.shape}"
    return None
