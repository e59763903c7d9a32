"""Which CPUs make ONNX Runtime's INT8 kernels saturate, checked against ONNX Runtime itself."""
from __future__ import annotations

import numpy as np
import pytest

from engine.onnxruntime.int8_cpu import FLOAT_OPS_CONFIG, exact_int8_config, int8_kernels_saturate, saturates

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 ssse3 avx avx2 fma bmi2 adx sha_ni\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
ALDER_LAKE = "flags\t\t: fpu avx2 avx_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx512f amx_bf16 amx_int8\n"


@pytest.mark.parametrize("machine, cpuinfo, expected", [
    ("x86_64", ZEN3, True), ("AMD64", ZEN3, True),
    ("x86_64", ZEN4, False), ("x86_64", ALDER_LAKE, False), ("x86_64", SAPPHIRE_RAPIDS, False),
    ("x86_64", "flags\t\t: avx512f avx512bw\n", True),  # Skylake-SP: AVX-512 without VNNI
    ("aarch64", "Features\t: fp asimd\n", False),        # Arm kernels accumulate in 32 bits
    ("x86_64", None, False), ("x86_64", "processor\t: 0\n", False),  # unknown: change nothing
])
def test_saturation_is_read_from_the_cpu_flags(machine, cpuinfo, expected):
    assert saturates(machine, cpuinfo) is expected


def test_exact_config_is_float_ops_only_where_kernels_saturate(monkeypatch):
    import engine.onnxruntime.int8_cpu as int8_cpu

    monkeypatch.setattr(int8_cpu, "int8_kernels_saturate", lambda: True)
    assert int8_cpu.exact_int8_config() == FLOAT_OPS_CONFIG
    monkeypatch.setattr(int8_cpu, "int8_kernels_saturate", lambda: False)
    assert int8_cpu.exact_int8_config() == {}


def _pair_overflowing_conv() -> bytes:
    """One Q/DQ convolution whose uint8 x int8 products, added in pairs, exceed int16 (255 * 127 * 2):
    ONNX Runtime fuses it into an integer convolution."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    consts = dict(xs=np.float32(1 / 255), z=np.uint8(0), ys=np.float32(1.0),
                  wq=np.full((1, 16, 3, 3), 127, np.int8), ws=np.float32(1 / 127), wz=np.int8(0))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _centre_value(model: bytes, config: dict) -> float:
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model, "cpu", threads=1, config=config) as runner:
        return float(runner.infer({"x": np.ones((1, 16, 8, 8), np.float32)})["y"][0, 0, 4, 4])


def test_detection_agrees_with_this_cpu(tmp_path):
    """The flag check predicts what ONNX Runtime's fused kernels do on the machine running the
    test, and the exact config computes the INT8 arithmetic (16 * 9 products of 1 * 1) here."""
    pytest.importorskip("onnxruntime")
    model = _pair_overflowing_conv()
    assert _centre_value(model, FLOAT_OPS_CONFIG) == 144.0
    fused = _centre_value(model, {})
    assert (fused != 144.0) is int8_kernels_saturate(), f"fused integer kernels gave {fused}"
    assert _centre_value(model, exact_int8_config()) == 144.0
