"""The INT8 quantization-aware fine-tuning experiment (benchmarks/int8_qat.py): its PyTorch run of
a Q/DQ graph follows ONNX Runtime, and a fine-tuned graph is written back whole."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from dbnet.spec import ModelSpec  # noqa: E402
from export.synth import synthetic_images  # noqa: E402
from pipeline.sampling import calibration_inputs  # noqa: E402

SPEC = ModelSpec(arch="test").replace(limit_side=64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from export.model import DBNet
    from export.onnx_export import export_onnx
    from export.quantize import to_int8

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qat")
    for i, image in enumerate(synthetic_images(3, 96, 128, first_seed=0)):
        cv2.imwrite(str(folder / f"img{i}.png"), image)
    calib = calibration_inputs(folder, SPEC, count=3)
    fp32 = export_onnx(DBNet("resnet18", width=0.25).eval(), folder / "m.onnx", opset=17, spec=SPEC,
                       example_shape=(1, 3, 64, 64), parity_shapes=None).path
    return fp32, to_int8(fp32, folder / "m8.onnx", calib), calib


def _ort(path, x, as_float=False):
    opts = ort.SessionOptions()
    if as_float:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def test_the_torch_graph_runs_the_fp32_and_the_qdq_onnx_as_onnx_runtime_does(models):
    from benchmarks.int8_qat import qdq_graph, simulation_check

    fp32, int8, calib = models
    x = calib[0]
    with torch.no_grad():
        plain = qdq_graph(onnx.load(str(fp32))).eval()(torch.from_numpy(x)).numpy()
        quantized = qdq_graph(onnx.load(str(int8))).eval()(torch.from_numpy(x)).numpy()
    assert np.abs(plain - _ort(fp32, x)).max() < 1e-5
    # the same Q/DQ graph as float ops: equal but for the odd rounding tie
    assert np.mean(np.abs(quantized - _ort(int8, x, as_float=True)) > 1e-4) < 0.01
    check = simulation_check(fp32, int8, calib)
    assert set(check) == {"torch_vs_qdq_float", "torch_vs_int8", "int8_vs_qdq_float", "int8_vs_fp32"}


def test_fine_tuned_weights_are_written_back_with_their_scales(models, tmp_path):
    from onnx import numpy_helper

    from benchmarks.int8_qat import qat

    fp32, int8, calib = models
    out = tmp_path / "qat.onnx"
    info = qat(fp32, int8, out, calib, steps=3, lr=1e-3, biases_only=False, crop=64, batch=2)
    assert info["trained_parameters"] > 1000 and np.isfinite(info["loss_last_tenth"])
    before, after = onnx.load(str(int8)), onnx.load(str(out))
    assert [n.op_type for n in before.graph.node] == [n.op_type for n in after.graph.node]
    assert before.metadata_props == after.metadata_props
    old = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    weights = [n for n in after.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in new
               and new[n.input[0]].ndim > 1]
    assert weights and any(not np.array_equal(old[n.input[0]], new[n.input[0]]) for n in weights)
    for node in weights:  # each weight's per-channel scale is its largest magnitude x the same ratio
        w, scale = new[node.input[0]], new[node.input[1]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        amax = np.abs(w).max(axis=tuple(d for d in range(w.ndim) if d != axis))
        w0 = old[node.input[0]]
        ratio = old[node.input[1]] / np.abs(w0).max(axis=tuple(d for d in range(w0.ndim) if d != axis))
        np.testing.assert_allclose(scale, amax * ratio, rtol=1e-5)
    assert np.isfinite(_ort(out, calib[0])).all()


def test_biases_only_leaves_the_weights(models, tmp_path):
    from onnx import numpy_helper

    from benchmarks.int8_qat import qat

    fp32, int8, calib = models
    out = tmp_path / "bias.onnx"
    qat(fp32, int8, out, calib, steps=2, lr=1e-3, biases_only=True, crop=64, batch=2)
    old = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(int8)).graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    assert all(np.array_equal(old[k], new[k]) for k in old if old[k].ndim > 1)
    assert any(not np.array_equal(old[k], new[k]) for k in old if old[k].ndim == 1 and old[k].size > 1)


@pytest.mark.slow
def test_the_benchmark_reports_every_variant_on_each_image_set(tmp_path, monkeypatch):
    import json

    from benchmarks import int8_qat

    val = tmp_path / "val"
    val.mkdir()
    for i, image in enumerate(synthetic_images(2, 96, 128, first_seed=7)):
        cv2.imwrite(str(val / f"{i}.png"), image)
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "out"))
    assert int8_qat.main(["--random-init", "--width", "0.25", "--side", "64", "--val", str(val),
                          "--steps", "2", "--count", "2", "--crop", "64"]) == 0
    payload = json.loads((tmp_path / "out" / "int8_qat.json").read_text())
    variants = {r["variant"] for r in payload["rows"]}
    assert len(variants) == 1 + len(int8_qat.VARIANTS)
    assert any(r["images"].startswith("validation") for r in payload["rows"])
    assert "## INT8 vs FP32" in (tmp_path / "out" / "int8_qat.md").read_text()
