"""INT8 with layers kept in FP32: the stem and head, the decoder, named nodes, and the layers a
one-layer-at-a-time sensitivity ranking finds most sensitive (with the conv MACs that stay INT8)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engine.errors import ModelError  # noqa: E402
from engine.onnxruntime.int8_cpu import FLOAT_OPS_CONFIG  # noqa: E402
from export import quantize  # noqa: E402
from quantize_models import initializers  # noqa: E402
from quantize_models import calibration, fp32_model, image_dir  # noqa: E402,F401 (fixtures)


def _weight_quantized(proto, node):
    producers = {o: n for n in proto.graph.node for o in n.output}
    weight = producers.get(node.input[1]) if len(node.input) > 1 else None
    return weight is not None and weight.op_type == "DequantizeLinear"


def test_keep_fp32_ends_leaves_stem_and_head_unquantized(fp32_model, tmp_path, calibration):
    out = quantize.to_int8(fp32_model, tmp_path / "ends.onnx", calibration, "minmax",
                           keep_fp32_head=True, keep_fp32_stem=True)
    proto = onnx.load(str(out))
    producers = {o: n for n in proto.graph.node for o in n.output}
    by_name = {n.name: n for n in proto.graph.node}
    kept = quantize.stem_nodes(proto) + quantize.head_nodes(proto)
    assert kept[0] == "/backbone/conv1/Conv" and "/decoder/binarize/binarize.0/Conv" in kept
    for name in kept:
        node = by_name[name]
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                   for i in node.input), name
    assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) > 20  # the rest is INT8


def test_keep_fp32_decoder_quantizes_the_backbone_only(fp32_model, tmp_path, calibration):
    out = quantize.to_int8(fp32_model, tmp_path / "dec.onnx", calibration, "minmax",
                           keep_fp32_decoder=True)
    proto = onnx.load(str(out))
    producers = {o: n for n in proto.graph.node for o in n.output}

    def quantized(node):  # INT8 weights (its input may still come through a backbone DQ)
        weight = producers.get(node.input[1])
        return weight is not None and weight.op_type == "DequantizeLinear"

    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert not any(quantized(n) for n in convs if n.name.startswith("/decoder/"))
    assert all(quantized(n) for n in convs if n.name.startswith("/backbone/"))
    plain = onnx.load(str(fp32_model))
    for node in plain.graph.node:
        node.name = node.name.replace("/decoder/", "/neck/")
    with pytest.raises(ModelError, match="no '/decoder/' nodes"):
        quantize.to_int8(plain, tmp_path / "x.onnx", calibration, keep_fp32_decoder=True)


def test_sensitivity_ranks_layers_by_the_int8_arithmetic_where_kernels_saturate(
        fp32_model, calibration, monkeypatch):
    """Where ONNX Runtime's integer kernels saturate, the one-layer INT8 probes run as float ops,
    so the ranking (what --keep-fp32-sensitive keeps) measures INT8, not the kernels' overflow."""
    import export.sensitivity as sensitivity

    seen = []
    real = ort.InferenceSession

    def spy(path, sess_options=None, **kwargs):
        try:
            seen.append(sess_options.get_session_config_entry("session.disable_quant_qdq"))
        except (AttributeError, RuntimeError):  # no options, or no such entry
            seen.append("")
        return real(path, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(sensitivity, "exact_int8_config", lambda: dict(FLOAT_OPS_CONFIG))
    monkeypatch.setattr(ort, "InferenceSession", spy)
    ranked = quantize.int8_layer_ranking(fp32_model, calibration[:1], "minmax")
    probes, before = seen[-len(ranked):], seen[:-len(ranked)]
    assert probes == ["1"] * len(ranked)  # one per layer
    assert before and set(before) == {""}  # calibration and the FP32 reference run as they are


def test_keep_fp32_sensitive_leaves_the_top_ranked_layers_unquantized(fp32_model, tmp_path, calibration):
    ranked = quantize.int8_layer_ranking(fp32_model, calibration, "minmax")
    proto = onnx.load(str(fp32_model))
    quantizable = [n.name for n in proto.graph.node if n.op_type in quantize.INT8_OPS]
    assert sorted(r.name for r in ranked) == sorted(quantizable)
    assert [r.mse for r in ranked] == sorted((r.mse for r in ranked), reverse=True)
    assert ranked[0].mse > 0 and all(r.macs > 0 for r in ranked if r.op_type != "Add")

    out = quantize.to_int8(fp32_model, tmp_path / "sens.onnx", calibration, "minmax", keep_fp32_sensitive=3)
    notes = quantize.model_spec(out).int8
    assert list(notes.fp32_layers) == [r.name for r in ranked[:3]]  # deterministic ranking
    # the recorded share is the conv MACs outside the kept layers (conv_macs is tested below)
    from export.sensitivity import conv_macs

    macs = conv_macs(proto, calibration[0].shape)
    kept = sum(macs.get(name, 0) for name in notes.fp32_layers)
    assert notes.mac_share == pytest.approx(1 - kept / sum(macs.values()), abs=1e-4)
    int8 = onnx.load(str(out))
    by_name = {n.name: n for n in int8.graph.node}
    for layer in ranked:
        if layer.op_type in ("Conv", "ConvTranspose"):
            assert _weight_quantized(int8, by_name[layer.name]) == (layer.name not in notes.fp32_layers)


def test_conv_macs_count_output_elements_times_kernel(fp32_model):
    from export.sensitivity import conv_macs, int8_mac_share

    proto = onnx.load(str(fp32_model))
    macs = conv_macs(proto, (1, 3, 64, 96))
    stem = [n for n in proto.graph.node if n.name == "/backbone/conv1/Conv"][0]
    weight = initializers(proto)[stem.input[1]]  # 7x7 stride-2 conv: output 32x48
    assert macs[stem.name] == weight.shape[0] * 32 * 48 * int(np.prod(weight.shape[1:]))
    assert set(macs) == {n.name for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    assert int8_mac_share(proto, (1, 3, 64, 96), []) == 1.0
    assert int8_mac_share(proto, (1, 3, 64, 96), [stem.name]) == pytest.approx(
        1 - macs[stem.name] / sum(macs.values()))


def test_conv_macs_see_through_fp16_weight_storage(fp32_model):
    """The shipped model's weights are fp16 initializers read through Cast(to=FLOAT): conv_macs
    found no weight initializer behind its convolutions, so int8_mac_share of it was 0.0."""
    from export.sensitivity import conv_macs, int8_mac_share
    from export.train.ship import store_initializers_fp16

    stored = onnx.load(str(fp32_model))
    assert store_initializers_fp16(stored) > 0
    plain = onnx.load(str(fp32_model))
    assert conv_macs(stored, (1, 3, 64, 96)) == conv_macs(plain, (1, 3, 64, 96))
    assert int8_mac_share(stored, (1, 3, 64, 96), ["/backbone/conv1/Conv"]) == pytest.approx(
        int8_mac_share(plain, (1, 3, 64, 96), ["/backbone/conv1/Conv"]))


def test_keep_fp32_nodes_are_checked(fp32_model, tmp_path, calibration):
    with pytest.raises(ModelError, match="no such nodes in the model: /nope"):
        quantize.to_int8(fp32_model, tmp_path / "x.onnx", calibration, keep_fp32_nodes=["/nope"])
    with pytest.raises(ModelError, match=">= 0"):
        quantize.to_int8(fp32_model, tmp_path / "x.onnx", calibration, keep_fp32_sensitive=-1)
    out = quantize.to_int8(fp32_model, tmp_path / "n.onnx", calibration, "minmax",
                           keep_fp32_nodes=["/backbone/conv1/Conv"])
    stem = [n for n in onnx.load(str(out)).graph.node if n.name == "/backbone/conv1/Conv"][0]
    assert not _weight_quantized(onnx.load(str(out)), stem)
    assert quantize.model_spec(out).int8.fp32_layers == ("/backbone/conv1/Conv",)


def test_cli_export_keep_fp32_sensitive(image_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    from pipeline.cli import main

    out = tmp_path / "cli" / "m.onnx"
    code = main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o", str(out),
                 "--precision", "int8", "--calib", str(image_dir), "--calib-count", "2",
                 "--calib-side", "64", "--keep-fp32-sensitive", "2", "--no-parity"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "FP32 2 most sensitive layers" in text and "of conv MACs INT8" in text
    assert text.count("FP32 layers: ") == 1


def test_keep_fp32_sensitive_counts_layers_beyond_the_other_exclusions(fp32_model, tmp_path, calibration):
    ranked = quantize.int8_layer_ranking(fp32_model, calibration, "minmax")
    stem = quantize.stem_nodes(onnx.load(str(fp32_model)))
    out = quantize.to_int8(fp32_model, tmp_path / "both.onnx", calibration, "minmax",
                           keep_fp32_stem=True, keep_fp32_sensitive=2)
    kept = list(quantize.model_spec(out).int8.fp32_layers)
    assert kept == stem + [r.name for r in ranked if r.name not in stem][:2]


def test_deformable_convolutions_count_as_float_in_the_int8_share(tmp_path):
    """DeformConv stays float in INT8 exports, yet a DCN model's full INT8 export said "100% of
    conv MACs INT8" (a DCN-R18 at 736x1312: 79%)."""
    torch = pytest.importorskip("torch")
    from export.model import DBNet
    from export.onnx_export import export_onnx
    from export.sensitivity import conv_macs, int8_mac_share

    torch.manual_seed(0)
    model = DBNet("resnet18", dcn=True, width=0.25).eval()
    export_onnx(model, tmp_path / "dcn.onnx", opset=19, example_shape=(1, 3, 64, 96))
    proto = onnx.load(str(tmp_path / "dcn.onnx"))
    macs = conv_macs(proto, (1, 3, 64, 96))
    deform = [n.name for n in proto.graph.node if n.op_type == "DeformConv"]
    assert deform and all(macs[name] > 0 for name in deform)
    share = int8_mac_share(proto, (1, 3, 64, 96), [])
    assert share == pytest.approx(1 - sum(macs[n] for n in deform) / sum(macs.values()))
    assert 0.5 < share < 0.99
