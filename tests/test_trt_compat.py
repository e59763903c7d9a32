"""TensorRT ONNX-compatibility check: passes our exports, fails planted bad graphs by node name."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engine.errors import ModelError  # noqa: E402
from export.trt_compat import TrtTarget, check_onnx  # noqa: E402
from pipeline.cli import main  # noqa: E402


def _model(nodes, inits=(), opset=17, inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])]
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _deform_model(pads=(1, 1, 1, 1)):
    nodes = [helper.make_node("DeformConv", ["x", "w", "off"], ["y"], name="dcn",
                              kernel_shape=[3, 3], pads=list(pads))]
    return _model(nodes, [_const("w", np.zeros((4, 4, 3, 3), np.float32)),
                          _const("off", np.zeros((1, 18, 8, 8), np.float32))], opset=19)


@pytest.mark.parametrize("target", ["8.6", "10.3", "11"])
def test_exported_model_is_compatible(tiny_onnx, target):
    report = check_onnx(tiny_onnx, target)
    assert report.ok, str(report)
    assert report.op_counts["Conv"] > 10 and "compatible" in str(report)


@pytest.mark.parametrize("target,ok", [("8.6", False), ("10", False), ("10.1", True), ("11.4", True)])
def test_deform_conv_needs_10_1(target, ok):
    report = check_onnx(_deform_model(), target)
    assert report.ok == ok
    if not ok:
        assert any(i.node == "dcn" and "10.1" in i.message for i in report.issues)


def test_deform_conv_asymmetric_pads():
    report = check_onnx(_deform_model(pads=(0, 0, 1, 1)), "10.3")
    assert [i.node for i in report.issues] == ["dcn"]


@pytest.mark.parametrize("target", ["8.5", "8.6", "10.3"])
def test_conv_weights_computed_in_the_graph_parse_from_8_5(target):
    """onnx-tensorrt parses Conv / ConvTranspose with tensor weights from 8.5 on (8.4 required
    initializers), e.g. weights behind a Cast or a Mul of a scale."""
    nodes = [helper.make_node("Mul", ["w", "scale"], ["ws"], name="scale_w"),
             helper.make_node("Conv", ["x", "ws"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c", "ws"], ["y"], name="deconv", strides=[2, 2])]
    inits = [_const("w", np.ones((4, 4, 3, 3), np.float32)), _const("scale", np.float32(0.5))]
    report = check_onnx(_model(nodes, inits), target)
    assert report.ok, str(report)


def test_planted_bad_graph_names_every_offender():
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r1"], name="cubic_resize", mode="cubic"),
        helper.make_node("Resize", ["r1", "", "scales"], ["r2"], name="aa_resize", mode="linear",
                         antialias=1),
        helper.make_node("QuantizeLinear", ["r2", "s", "zp"], ["q"], name="asym_q"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="asym_dq"),
        helper.make_node("Unique", ["dq"], ["u"], name="unique"),
        helper.make_node("FusedGemm", ["u"], ["y"], name="ms_op", domain="com.microsoft"),
    ]
    inits = [_const("scales", np.array([1, 1, 2, 2], np.float32)), _const("s", np.float32(0.1)),
             _const("zp", np.int8(5))]
    report = check_onnx(_model(nodes, inits), "8.6")
    offenders = {i.node for i in report.issues}
    assert offenders == {"cubic_resize", "aa_resize", "asym_q", "asym_dq", "unique", "ms_op"}
    assert any("zero point must be 0" in i.message for i in report.issues)
    with pytest.raises(ModelError, match="offending nodes: aa_resize, asym_dq, asym_q, cubic_resize"):
        report.raise_for_issues()


def test_opset_range_per_target():
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    assert not check_onnx(_model(relu, opset=18), "8.6").ok
    assert check_onnx(_model(relu, opset=18), "10.0").ok
    assert not check_onnx(_model(relu, opset=21), "10.3").ok
    assert check_onnx(_model(relu, opset=21), "10.13").ok


def test_fp8_quantization_only_from_10():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q8"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq8")]
    zp = helper.make_tensor("zp", TensorProto.FLOAT8E4M3FN, [], [0.0])
    model = _model(nodes, [_const("s", np.float32(0.1)), zp], opset=19)
    assert {i.node for i in check_onnx(model, "8.6").issues} >= {"q8", "dq8"}
    assert check_onnx(model, "10.3").ok


@pytest.mark.parametrize("text,version", [("8.6", (8, 6)), ("10", (10, 0)), ("10.13.1", (10, 13)),
                                          (11, (11, 0))])
def test_target_parsing(text, version):
    assert TrtTarget.parse(text).version == version


@pytest.mark.parametrize("bad", ["7.2", "abc", "12", "9.0", "8.7"])
def test_bad_targets(bad):
    with pytest.raises(ModelError):
        TrtTarget.parse(bad)


def test_cli_check_exit_codes(tiny_onnx, tmp_path, capsys):
    assert main(["check", str(tiny_onnx), "--target", "8.6", "11"]) == 0
    bad = tmp_path / "dcn.onnx"
    onnx.save(_deform_model(), str(bad))
    assert main(["check", str(bad), "--target", "8.6"]) == 1
    assert "dcn (DeformConv)" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "absent.onnx")]) == 2
    capsys.readouterr()
    # every target is checked before any report: a bad one came after the good ones' reports
    assert main(["check", str(tiny_onnx), "--target", "10.3", "9.0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "argument --target: TensorRT target 9.0 is not covered" in captured.err
