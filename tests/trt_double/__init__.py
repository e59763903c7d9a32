"""A test double of the `tensorrt` Python package: exactly the API subset dbrt uses, in three
flavours, computing real outputs with ONNX Runtime on the memory behind the given addresses.

- "8.6":  weak typing, EXPLICIT_BATCH required, no progress monitor, parser errors without
          node names, ONNX opset <= 17 (JetPack 6.0).
- "10.x": weak typing (FP16 / INT8 flags, IInt8EntropyCalibrator2), EXPLICIT_BATCH accepted and
          ignored, opt-in STRONGLY_TYPED, IProgressMonitor, named parser errors.
- "11.x": strongly typed only (STRONGLY_TYPED still accepted). The names TensorRT 11 removed
          (BuilderFlag.FP16 / INT8 / ..., calibrators, config.int8_calibrator,
          set_calibration_profile, EXPLICIT_BATCH, device_memory_size) are absent, so using them
          fails with AttributeError as it would on the real package.

The names of the 10.x and 11.x flavours were checked against the strings of the real binding
libraries (tensorrt_cu12_bindings 10.3.0 and 11.4.0.106 wheels: `strings tensorrt.so`), and all
three against the binding sources (NVIDIA/TensorRT python/src at v8.6.1, v10.3.0, v11.1):
enum members per version, `nptype`, and the trampolines that catch an exception raised in a
Python calibrator or progress monitor (trt_double.plan.python_override).

    trt = install(monkeypatch, "11.x")   # sys.modules["tensorrt"] + fake device memory
"""
from __future__ import annotations

import enum
import sys
import types
import weakref
from dataclasses import dataclass, field

from . import builder as _builder
from . import fake_cuda
from . import runtime as _runtime

FLAVOURS = ("8.6", "10.x", "11.x")


@dataclass
class Features:
    version: str
    weak: bool                      # precision builder flags + calibrators
    needs_explicit_batch: bool      # networks are implicit-batch unless EXPLICIT_BATCH is set
    explicit_batch_flag: bool
    strongly_typed_flag: bool
    progress_monitor: bool
    parser_node_names: bool
    max_opset: int
    extra_ops: frozenset = frozenset()
    builds: int = 0                 # build_serialized_network calls (for cache tests)
    dla_cores: int = 0              # DLA cores of the device (a Jetson AGX Orin has 2)
    config_class: type = None
    engine_class: type = None
    logs: list = field(default_factory=list)


def _features(flavour: str) -> Features:
    deform = frozenset({"DeformConv"})
    return {
        "8.6": Features("8.6.1", True, True, True, False, False, False, 17),
        "10.x": Features("10.3.0", True, False, True, True, True, True, 20, deform),
        "11.x": Features("11.4.0", False, False, False, True, True, True, 25, deform),
    }[flavour]


_COMMON_FLAGS = ["DEBUG", "GPU_FALLBACK", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS", "TF32",
                 "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]
_WEAK_FLAGS = ["FP16", "INT8", "FP8", "REFIT", "OBEY_PRECISION_CONSTRAINTS",
               "PREFER_PRECISION_CONSTRAINTS"]


def _enum(name: str, members) -> type:
    return enum.IntEnum(name, [(m, i) for i, m in enumerate(members)])


def _builder_flags(flavour: str) -> type:
    flags = list(_COMMON_FLAGS)
    if flavour != "11.x":
        flags += _WEAK_FLAGS
    if flavour != "8.6":
        flags += ["STRIP_PLAN"] + (["BF16", "INT4", "WEIGHTLESS"] if flavour == "10.x" else [])
    return _enum("BuilderFlag", flags)


def _logger_classes():
    severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    class ILogger:
        Severity = severity

        def __init__(self):
            pass

        def log(self, severity, msg):
            raise NotImplementedError("ILogger.log must be overridden")

    for member in severity:
        setattr(ILogger, member.name, member)

    class Logger(ILogger):
        def __init__(self, min_severity=severity.WARNING):
            super().__init__()
            self.min_severity = min_severity
            self.messages = []

        def log(self, severity, msg):
            self.messages.append((severity, msg))

    return ILogger, Logger


class _Interface:
    """Base of the Python-subclassable TensorRT interfaces (pybind11 trampolines)."""

    def __init__(self):
        pass


def _nptype(dtype):
    """tensorrt.nptype (python/packaging/bindings_wheel/tensorrt/__init__.py): the types NumPy
    has; FP8, BF16, INT4, FP4 and E8M0 raise TypeError."""
    import numpy as np

    if dtype.name not in _runtime._NP:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return np.dtype(_runtime._NP[dtype.name]).type


# trt.DataType per version (python/src/infer/pyFoundationalTypes.cpp): INT64, BF16 and INT4
# came with 10.0, FP4 with 10.8, E8M0 with 11.0
_DATA_TYPES = {"8.6": ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"],
               "10.x": ["FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8", "FP8",
                        "INT4"],
               "11.x": ["FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8", "FP8",
                        "INT4", "FP4", "E8M0"]}


def make_tensorrt(flavour: str) -> types.ModuleType:
    """A fresh fake `tensorrt` module of the given flavour."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; one of {FLAVOURS}")
    features = _features(flavour)
    mod = types.ModuleType("tensorrt", f"fake tensorrt {features.version} (dbrt test double)")
    mod.__version__ = features.version
    mod._double = features
    mod.ILogger, mod.Logger = _logger_classes()
    mod.BuilderFlag = _builder_flags(flavour)
    mod.DataType = _enum("DataType", _DATA_TYPES[flavour])
    mod.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    mod.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM",
                                                  "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM",
                                                  "TACTIC_DRAM"])
    mod.ErrorCode = _enum("ErrorCode", ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED",
                                        "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
                                        "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH",
                                        "UNSUPPORTED_NODE"])
    network_flags = (["EXPLICIT_BATCH"] if features.explicit_batch_flag else [])
    network_flags += ["STRONGLY_TYPED"] if features.strongly_typed_flag else []
    mod.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", network_flags or ["PREFER_JIT_PYTHON_PLUGINS"])
    mod.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    # SAME_COMPUTE_CAPABILITY came with 10.x releases after 10.8 (pyCore.cpp of 10.16, 11.1)
    mod.HardwareCompatibilityLevel = _enum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"] + (
        ["SAME_COMPUTE_CAPABILITY"] if flavour == "11.x" else []))
    mod.nptype = _nptype
    # the plugin registry is empty until the plugin library is initialised (the ONNX parser
    # looks DeformConv's ModulatedDeformConv2d plugin up there); like the real library it keeps
    # only a pointer to the logger it was given (the binding does not keep it alive)
    mod._plugin_registry = {"initialised": False, "calls": 0, "logger": None}

    def init_libnvinfer_plugins(logger, namespace):
        mod._plugin_registry.update(initialised=True, calls=mod._plugin_registry["calls"] + 1,
                                    logger=weakref.ref(logger))
        return True

    mod.init_libnvinfer_plugins = init_libnvinfer_plugins
    mod.Builder = type("Builder", (_builder.Builder,), {"__slots__": (), "trt": mod})
    mod.Runtime = type("Runtime", (_runtime.Runtime,), {"__slots__": (), "trt": mod})
    mod.OnnxParser = _builder.OnnxParser
    config_bases = ((_builder.ProgressMonitorConfig,) if features.progress_monitor else ()) + (
        (_builder.WeakTypingConfig,) if features.weak else ()) + (_builder.BuilderConfig,)
    features.config_class = type("IBuilderConfig", config_bases, {"__slots__": ()})
    engine_bases = {"8.6": (_runtime.WeakEngine,), "10.x": (_runtime.WeakEngine, _runtime.EngineV2),
                    "11.x": (_runtime.EngineV2,)}[flavour]
    features.engine_class = type("ICudaEngine", engine_bases, {"__slots__": ()})
    if features.progress_monitor:
        mod.IProgressMonitor = type("IProgressMonitor", (_Interface,), {})
    if features.weak:
        mod.IInt8Calibrator = type("IInt8Calibrator", (_Interface,), {})
        mod.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (mod.IInt8Calibrator,), {})
    return mod


def install(monkeypatch, flavour: str) -> types.ModuleType:
    """Make `import tensorrt` return a fresh double and GPU code use fake device memory."""
    import engine.cuda

    module = make_tensorrt(flavour)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(engine.cuda, "default_backend", lambda: fake_cuda.HostBackend())
    return module


__all__ = ["FLAVOURS", "make_tensorrt", "install", "fake_cuda"]
