"""Which CPUs make ONNX Runtime's INT8 kernels saturate, checked against ONNX Runtime itself, and
what dbrt's INT8 checks and detector do on such CPUs."""
from __future__ import annotations

import numpy as np
import pytest

from engine.onnxruntime.int8_cpu import FLOAT_OPS_CONFIG, exact_int8_config, int8_kernels_saturate, saturates
from export.synth import synthetic_images

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


# What dbrt's INT8 checks do on such CPUs: run the Q/DQ graph as float ops, and say so.
def _int8_dark_text(tmp_path):
    """The one-Conv dark-text model and its INT8 copy (min-max calibration)."""
    pytest.importorskip("onnx")
    from export import quantize
    from quantize_models import dark_text_calibration, dark_text_model

    ref = dark_text_model(tmp_path / "ref.onnx")
    return ref, quantize.to_int8(ref, tmp_path / "ref8.onnx", dark_text_calibration(), "minmax")


@pytest.mark.skipif(int8_kernels_saturate(),
                    reason="this CPU has no VNNI: ONNX Runtime's integer kernels saturate here")
def test_int8_noise_floor_runs_the_same_graph_two_ways(tmp_path):
    from pipeline.accuracy import int8_noise_floor

    ref, int8 = _int8_dark_text(tmp_path)
    images = synthetic_images(3, 192, 256, first_seed=5)
    floor = int8_noise_floor(int8, images)
    assert floor.reference_boxes > 0 and floor.precision == "int8"
    assert floor.hmean >= 0.9 and floor.max_abs < 0.05  # a one-conv model: only rounding ties differ
    plain = int8_noise_floor(ref, images)  # no Q/DQ: both runs are the same FP32 arithmetic
    assert plain.hmean == 1.0 and plain.max_abs < 1e-6


def _pretend_kernels_saturate(monkeypatch, value: bool) -> None:
    """Make every dbrt module see a CPU whose ONNX Runtime integer kernels do (x86 without VNNI)
    or do not saturate, whatever CPU runs the test."""
    import engine.onnxruntime.int8_cpu as int8_cpu
    import pipeline.accuracy as accuracy
    import pipeline.detector as detector

    for module in (int8_cpu, accuracy, detector):
        monkeypatch.setattr(module, "int8_kernels_saturate", lambda: value)


@pytest.fixture
def saturating_cpu(monkeypatch):
    _pretend_kernels_saturate(monkeypatch, True)


def test_int8_checks_run_float_ops_where_integer_kernels_saturate(tmp_path, saturating_cpu):
    pytest.importorskip("onnxconverter_common", reason="the FP16 model needs onnxconverter-common")
    from pipeline.accuracy import compare_many, int8_execution, int8_noise_floor

    ref, int8 = _int8_dark_text(tmp_path)
    images = synthetic_images(3, 192, 256, first_seed=5)
    from export.quantize import to_fp16

    fp16 = to_fp16(ref, tmp_path / "ref16.onnx")
    auto, half = compare_many(ref, [int8, fp16], images)
    forced = compare_many(ref, [int8], images, candidate_config=FLOAT_OPS_CONFIG)[0]
    assert auto.int8_as_float and not half.int8_as_float  # only INT8 results carry the note
    assert (auto.matched, auto.candidate_boxes, auto.max_abs) == (forced.matched, forced.candidate_boxes,
                                                                  forced.max_abs)
    assert "float ops on dequantized values: this CPU's ONNX Runtime integer kernels saturate" in str(auto)
    assert auto.to_dict()["int8_as_float"] is True
    assert int8_noise_floor(int8, images) is None  # no valid second INT8 execution here
    assert "not measurable" in int8_execution()


def test_int8_checks_use_integer_kernels_where_they_are_exact(tmp_path, monkeypatch):
    import pipeline.accuracy as accuracy

    _pretend_kernels_saturate(monkeypatch, False)
    ref, int8 = _int8_dark_text(tmp_path)
    result = accuracy.compare_many(ref, [int8], synthetic_images(2, 192, 256, first_seed=5))[0]
    assert not result.int8_as_float and "float ops" not in str(result)
    assert accuracy.int8_execution() == "ONNX Runtime's integer kernels"


def test_detector_warns_about_int8_on_a_saturating_cpu(tmp_path, saturating_cpu):
    import warnings

    from engine.errors import DbrtWarning
    from pipeline.detector import Detector

    ref, int8 = _int8_dark_text(tmp_path)
    with pytest.warns(DbrtWarning, match="INT8 model on the CPU: this CPU has no VNNI"):
        Detector(int8, backend="onnxruntime", device="cpu").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DbrtWarning)
        Detector(ref, backend="onnxruntime", device="cpu").close()  # FP32: nothing to say

