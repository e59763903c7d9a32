"""Helpers shared by the TensorRT tests (double fixtures, small ONNX variants)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import trt_double
from engine.onnxruntime.runner import OnnxRuntimeRunner
from engine.shapes import ShapeProfile

# A small profile keeps the double's ONNX Runtime runs cheap.
SMALL = ShapeProfile.from_hw((32, 32), (64, 64), (128, 128), batch=(1, 1, 2))


@pytest.fixture(params=trt_double.FLAVOURS)
def trt(request, monkeypatch):
    """Each test runs once per TensorRT flavour (8.6, 10.x, 11.x)."""
    return trt_double.install(monkeypatch, request.param)


def ort_prob(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    with OnnxRuntimeRunner(onnx_path, device="cpu", threads=1) as runner:
        return runner.infer(batch)["prob"]


def fp16_copy(onnx_path: Path, out: Path) -> Path:
    """An FP16 ONNX (FP32 inputs / outputs), as `dbrt export --precision fp16` makes."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def with_unsupported_node(onnx_path: Path, out: Path, name: str = "weird_op_17") -> Path:
    """The model with one extra node of an operator TensorRT has no importer for."""
    model = onnx.load(str(onnx_path))
    graph = model.graph
    last = graph.output[0].name
    node = onnx.helper.make_node("Einsum", [last], [f"{last}_e"], name=name, equation="nchw->nchw")
    graph.node.append(node)
    graph.output[0].name = f"{last}_e"
    onnx.save(model, str(out))
    return out


def qdq_copy(onnx_path: Path, out: Path, seed: int = 0) -> Path:
    """A Q/DQ INT8 ONNX (symmetric, per-channel), as `dbrt export --precision int8` makes."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Batches(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.batches = iter([{"images": rng.random((1, 3, 64, 64), dtype=np.float32)}] * 2)

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(onnx_path), str(out), Batches(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=["Conv", "ConvTranspose", "Add"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False, "AddQDQPairToWeight": True,
                                   "DedicatedQDQPair": False})
    return out


def with_static_input(onnx_path: Path, out: Path, shape=(1, 3, 64, 64)) -> Path:
    """The model with a fixed input shape (as exported without dynamic axes)."""
    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape):
        dim.Clear()
        dim.dim_value = size
    onnx.save(model, str(out))
    return out
