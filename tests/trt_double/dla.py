"""The DLA side of the fake TensorRT: network layers, which of them the DLA runs, and the
builder's DLA rules."""
from __future__ import annotations

from typing import Optional


class Layer:
    __slots__ = ("name", "op_type")

    def __init__(self, name, op_type):
        self.name, self.op_type = name, op_type


# what the fake DLA runs (the real list, with its limits, is TensorRT's "DLA Supported Layers")
DLA_OPS = frozenset({"Conv", "ConvTranspose", "BatchNormalization", "Relu", "Sigmoid", "Add",
                     "Mul", "Concat", "MaxPool", "AveragePool"})


def dla_core(trt, config) -> int:
    return int(config.DLA_core) if config.default_device_type == trt.DeviceType.DLA else -1


def check_dla(trt, config) -> Optional[str]:
    """TensorRT's DLA rules: an existing core, GPU fallback for what the DLA cannot run (all
    of it in FP32, and any layer when the input shape is dynamic)."""
    if dla_core(trt, config) < 0:
        return None
    if not 0 <= config.DLA_core < trt._double.dla_cores:
        return f"DLA core {config.DLA_core} is not available ({trt._double.dla_cores} cores)"
    if trt.BuilderFlag.GPU_FALLBACK not in config.flags:
        return "Layer cannot run on DLA and GPU fallback is not enabled"
    return None
