"""FP16 / INT8 ONNX: TensorRT-ready structure, metadata, calibration inputs, accuracy report."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engine.errors import ModelError, SourceError  # noqa: E402
from engine.onnxruntime.int8_cpu import FLOAT_OPS_CONFIG, int8_kernels_saturate  # noqa: E402
from dbnet.spec import METADATA_KEY, ModelSpec  # noqa: E402
from export import quantize  # noqa: E402
from export.synth import synthetic_images  # noqa: E402
from pipeline.accuracy import compare_models  # noqa: E402
from pipeline.sampling import calibration_inputs  # noqa: E402
from export.onnx_graph import get_metadata, set_metadata  # noqa: E402
from export.trt_compat import check_onnx  # noqa: E402
from pipeline.preprocess import preprocess  # noqa: E402

SPEC = ModelSpec(arch="test").replace(limit_side=64)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from export.model import DBNet
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("q") / "m.onnx"
    export_onnx(DBNet("resnet18", width=0.25).eval(), path, opset=17, spec=SPEC,
                example_shape=(1, 3, 64, 64), parity_shapes=None)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, image in enumerate(synthetic_images(4, 96, 128, first_seed=0)):
        cv2.imwrite(str(folder / f"img{i}.png"), image)
    return folder


@pytest.fixture(scope="module")
def calibration(image_dir):
    return calibration_inputs(image_dir, SPEC, count=3)


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def _consts(proto):
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_calibration_inputs_match_runtime_preprocessing(image_dir):
    inputs = calibration_inputs(image_dir, SPEC, count=2, exclude=["img0.png"])
    assert len(inputs) == 2 and inputs[0].shape == (1, 3, 64, 96)
    expected, _ = preprocess(cv2.imread(str(image_dir / "img1.png")), SPEC)
    np.testing.assert_array_equal(inputs[0][0], expected)
    with pytest.raises(SourceError):
        calibration_inputs(image_dir / "absent", SPEC)


def test_calibration_from_video_frames(shared_data):
    video = shared_data / "video" / "pexels_lightbox_text_960x506.mp4"
    inputs = calibration_inputs(video, SPEC, count=2, limit_side=64)
    assert len(inputs) == 2 and inputs[0].shape == (1, 3, 64, 128)
    assert not np.array_equal(inputs[0], inputs[1])  # frames spread over the video


def test_fp16_keeps_fp32_io_and_metadata(fp32_model, tmp_path, calibration):
    out = quantize.to_fp16(fp32_model, tmp_path / "m16.onnx", backend="onnxconverter")
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_weights = [proto.graph.initializer[i] for i, t in enumerate(proto.graph.initializer)
                    if t.name.endswith("weight")]
    assert conv_weights and all(t.data_type == TensorProto.FLOAT16 for t in conv_weights)
    assert sum(n.op_type == "Cast" for n in proto.graph.node) == 2  # only at the I/O
    assert ModelSpec.from_metadata(get_metadata(proto)) == SPEC.replace(precision="fp16")
    x = calibration[0]
    assert np.abs(_run(out, x) - _run(fp32_model, x)).max() < 1e-2
    assert check_onnx(out, "8.6").ok


@pytest.mark.parametrize("method,head", [("mse", False), ("entropy", False), ("minmax", True)])
def test_int8_is_symmetric_per_channel_qdq(fp32_model, tmp_path, calibration, method, head):
    out = quantize.to_int8(fp32_model, tmp_path / "m8.onnx", calibration, method, keep_fp32_head=head)
    proto = onnx.load(str(out))
    consts = _consts(proto)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and proto.opset_import[0].version == 17
    for node in qdq:
        zero = consts[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()
    producers = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    weight_dq = producers[convs[0].input[1]]
    assert weight_dq.op_type == "DequantizeLinear"
    assert consts[weight_dq.input[1]].shape == (consts[producers[weight_dq.input[0]].input[0]].shape[0],)
    head_nodes = [n for n in proto.graph.node if n.op_type == "ConvTranspose"]
    head_quantized = [producers.get(n.input[0]) is not None and producers[n.input[0]].op_type ==
                      "DequantizeLinear" for n in head_nodes]
    assert head_quantized == [not head] * len(head_nodes)
    assert ModelSpec.from_metadata(get_metadata(proto)).precision == "int8"
    x = calibration[1]
    assert np.abs(_run(out, x) - _run(fp32_model, x)).max() < 0.5
    assert check_onnx(out, "8.6").ok and check_onnx(out, "11").ok


def test_fp16_weight_storage_converts_like_the_fp32_model(fp32_model, tmp_path, calibration):
    """The shipped model stores its weights as fp16 behind Cast(to=FLOAT): FP16 conversion used
    to refuse it as already converted, and INT8 quantized the Casts' outputs per tensor like
    activations. Both now see the FP32 model those weights stand for."""
    from engine.onnx_info import expand_fp16_storage
    from export.train.ship import store_initializers_fp16

    stored = onnx.load(str(fp32_model))
    assert store_initializers_fp16(stored) > 0
    path = tmp_path / "stored.onnx"
    onnx.save_model(stored, str(path))
    expanded = onnx.load(str(path))
    assert expand_fp16_storage(expanded) > 0
    assert not any(n.op_type == "Cast" for n in expanded.graph.node)
    assert all(t.data_type == TensorProto.FLOAT for t in expanded.graph.initializer)
    x = calibration[1]
    expanded_path = tmp_path / "expanded.onnx"
    onnx.save_model(expanded, str(expanded_path))
    np.testing.assert_array_equal(_run(expanded_path, x), _run(path, x))  # the same values

    fp16 = quantize.to_fp16(path, tmp_path / "m16.onnx", backend="onnxconverter")
    assert np.abs(_run(fp16, x) - _run(path, x)).max() < 1e-2
    int8 = onnx.load(str(quantize.to_int8(path, tmp_path / "m8.onnx", calibration, "minmax")))
    consts, producers = _consts(int8), {o: n for n in int8.graph.node for o in n.output}
    for conv in (n for n in int8.graph.node if n.op_type == "Conv"):
        weight_q = producers[producers[conv.input[1]].input[0]]
        assert weight_q.input[0] in consts  # the weight itself, quantized per output channel
        assert consts[weight_q.input[1]].shape == (consts[weight_q.input[0]].shape[0],)
    assert onnx.load(str(path)).graph.node[0].op_type == "Cast"  # the caller's file is untouched


def test_int8_input_errors(fp32_model, tmp_path, calibration):
    with pytest.raises(SourceError):
        quantize.to_int8(fp32_model, tmp_path / "x.onnx", [])
    with pytest.raises(ModelError, match="calibration method"):
        quantize.to_int8(fp32_model, tmp_path / "x.onnx", calibration, method="kl")
    with pytest.raises(ModelError, match="FP16 converter"):
        quantize.to_fp16(fp32_model, tmp_path / "x.onnx", backend="tensorrt")


def _dark_text_model(path, bias=12.0):
    """A one-Conv 'detector' (probability = sigmoid(bias - k * grey)): real boxes on scene text
    without training, so box agreement is measured on something non-empty."""
    w = np.full((1, 3, 3, 3), -60.0 / 27, np.float32)  # inputs are DB-normalised (about +-0.5)
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["logit"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid")]
    graph = helper.make_graph(
        nodes, "dark", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array([bias - 12.0], np.float32), "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    set_metadata(proto, METADATA_KEY, SPEC.replace(limit_side=256, box_thresh=0.5).to_json())
    onnx.save(proto, str(path))
    return path


def test_accuracy_report_measures_box_agreement(tmp_path):
    ref = _dark_text_model(tmp_path / "ref.onnx")
    images = synthetic_images(3, 192, 256, first_seed=5)
    fp16 = quantize.to_fp16(ref, tmp_path / "ref16.onnx")
    same = compare_models(ref, fp16, images)
    assert same.reference_boxes > 0 and same.precision == "fp16"
    assert same.hmean >= 0.99 and same.max_abs < 1e-2
    shifted = _dark_text_model(tmp_path / "shifted.onnx", bias=9.0)  # a visibly different model
    worse = compare_models(ref, shifted, images)
    assert worse.hmean < same.hmean and worse.mean_abs > same.mean_abs
    row = worse.to_dict()
    assert {"box_precision", "box_recall", "box_hmean", "max_abs"} <= set(row)


def test_entropy_calibration_clips_where_minmax_does_not(fp32_model, tmp_path, calibration):
    scales = {}
    for method in ("minmax", "entropy"):
        proto = onnx.load(str(quantize.to_int8(fp32_model, tmp_path / f"{method}.onnx", calibration, method)))
        consts = _consts(proto)
        scales[method] = {n.input[1]: float(consts[n.input[1]]) for n in proto.graph.node
                          if n.op_type == "QuantizeLinear" and consts[n.input[1]].ndim == 0}
    shared = set(scales["minmax"]) & set(scales["entropy"])
    assert len(shared) > 10
    clipped = [k for k in shared if scales["entropy"][k] < 0.99 * scales["minmax"][k]]
    assert clipped  # entropy chose thresholds below the observed maxima for some tensors


def test_cli_export_all_precisions(image_dir, tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "cli" / "m.onnx"
    code = main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o", str(out),
                 "--precision", "fp16", "int8", "--calib", str(image_dir), "--calib-count", "2",
                 "--calib-side", "64", "--keep-fp32-head", "--accuracy", str(image_dir),
                 "--accuracy-count", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m_fp16.onnx", "m_int8.onnx"]
    assert "UNTRAINED" in text and "parity PASSED" in text and text.count("compatible") == 3
    assert "int8 vs fp32 on 2 images" in text and "percentile calibration" in text  # default
    meta = ModelSpec.from_metadata(get_metadata(onnx.load(str(out))))
    assert meta.untrained is True and meta.int8 is None


def _drifted_int8(monkeypatch) -> list:
    """compare_many replaced by one that finds INT8 keeping 6 of 20 FP32 boxes (hmean 0.41);
    returns the (candidates, image count) of each call."""
    from pipeline import accuracy
    from pipeline.accuracy import PrecisionComparison

    seen = []

    def drifted(reference, candidates, images, **kwargs):
        seen.append((list(candidates), len(images)))
        return [PrecisionComparison(str(c), "int8", len(images), 0.6, 0.01, reference_boxes=20,
                                    candidate_boxes=9, matched=6) for c in candidates]

    monkeypatch.setattr(accuracy, "compare_many", drifted)
    return seen


def test_cli_export_warns_when_int8_boxes_drift(image_dir, tmp_path, capsys, monkeypatch):
    """A calibration that clipped a range far too short shows as low INT8 agreement: say so."""
    from pipeline.cli import main

    _drifted_int8(monkeypatch)
    code = main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o",
                 str(tmp_path / "m.onnx"), "--precision", "int8", "--calib", str(image_dir),
                 "--calib-count", "2", "--calib-side", "64", "--no-parity", "--accuracy", str(image_dir),
                 "--accuracy-count", "2"])
    text = capsys.readouterr().out
    assert code == 0
    assert "WARNING: the INT8 model's boxes agree with FP32 at only 0.41" in text and "--calib-method" in text


def test_cli_export_checks_int8_on_calibration_images_without_accuracy(image_dir, tmp_path, capsys,
                                                                       monkeypatch):
    from pipeline.cli import main

    seen = _drifted_int8(monkeypatch)
    code = main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o",
                 str(tmp_path / "m.onnx"), "--precision", "fp16", "int8", "--calib", str(image_dir),
                 "--calib-count", "2", "--calib-side", "64", "--no-parity"])
    text = capsys.readouterr().out
    assert code == 0
    assert seen == [([tmp_path / "m_int8.onnx"], 2)]  # the INT8 file only, on the --calib-count images
    assert "quick INT8 check on 2 images from --calib" in text and "WARNING: the INT8 model" in text


def test_cli_export_errors(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o",
                 str(tmp_path / "m.onnx"), "--precision", "int8", "--no-parity"]) == 2
    assert "--calib" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "absent.pth"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


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


@pytest.mark.parametrize("method", ["mse", "entropy", "percentile", "minmax"])
def test_calibration_on_images_of_different_sizes(fp32_model, tmp_path, image_dir, method):
    """A user's folder holds images of many sizes: every method must cope (ORT alone cannot)."""
    mixed = [np.concatenate([c, c], axis=3) for c in calibration_inputs(image_dir, SPEC, 1)]
    mixed += calibration_inputs(image_dir, SPEC.replace(limit_side=96), 1)
    assert len({m.shape for m in mixed}) == 2
    out = quantize.to_int8(fp32_model, tmp_path / f"mixed_{method}.onnx", mixed, method)
    assert ModelSpec.from_metadata(get_metadata(onnx.load(str(out)))).precision == "int8"


@pytest.mark.slow
def test_precision_benchmark_writes_results(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import json

    from benchmarks import precision_accuracy

    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path))
    assert precision_accuracy.main(["--random-init", "--width", "0.25", "--side", "64",
                                    "--synthetic", "1", "--calib-count", "2", "--name", "p"]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert payload["parity_passed"] and "UNTRAINED" in payload["model"]
    variants = {r["variant"] for r in payload["rows"]}
    assert variants == {"fp16", "int8-mse", "int8-entropy", "int8-minmax", "int8-percentile",
                        "int8-entropy-ends-fp32", "int8-percentile-ends-fp32",
                        "int8-entropy-decoder-fp32", "int8-percentile-decoder-fp32",
                        *(f"int8-percentile-sensitive-{k}-fp32" for k in precision_accuracy.SENSITIVE_K)}
    assert all(r["trt8.6"] for r in payload["rows"])
    shares = {r["variant"]: r["int8_macs"] for r in payload["rows"]}
    assert shares["fp16"] is None and shares["int8-entropy"] == 1.0
    assert shares["int8-percentile-sensitive-30-fp32"] < shares["int8-percentile-sensitive-10-fp32"] < 1.0
    assert len(payload["sensitivity"]) > 30
    assert all(r["int8_self"] is None for r in payload["rows"] if r["variant"] == "fp16")
    int8_rows = [r for r in payload["rows"] if r["variant"] != "fp16"]
    if int8_kernels_saturate():  # no second valid INT8 execution on this CPU
        assert all(r["int8_self"] is None for r in int8_rows) and "not measurable" in payload["int8_execution"]
    else:
        assert all(0 <= r["int8_self"] <= 1 for r in int8_rows)
    text = (tmp_path / "p.md").read_text()
    assert "## Summary" in text and "## INT8 layer sensitivity" in text


@pytest.mark.slow
def test_int8_calibration_benchmark_compares_methods_and_sources(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import json

    from benchmarks import int8_calibration

    val, calib = tmp_path / "val", tmp_path / "calib"
    for folder, seed in ((val, 7), (calib, 70)):
        folder.mkdir()
        for i, image in enumerate(synthetic_images(2, 96, 128, first_seed=seed)):
            cv2.imwrite(str(folder / f"{i}.png"), image)
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "out"))
    assert int8_calibration.main(["--random-init", "--width", "0.25", "--side", "64", "--val", str(val),
                                  "--calib", f"mine={calib}", "--count", "2", "--name", "c"]) == 0
    payload = json.loads((tmp_path / "out" / "c.json").read_text())
    assert {(r["method"], r["calibration"]) for r in payload["rows"]} == {
        (m, s) for m in int8_calibration.METHODS for s in ("default", "mine")}
    assert payload["calibration"]["mine"] == f"2 images spread over {calib}"
    summary = int8_calibration.method_summary(payload["rows"])
    assert {r["method"] for r in summary} == set(int8_calibration.METHODS)
    assert all(r["worst_hmean"] <= r["mean_hmean"] <= r["best_hmean"] for r in summary)
    assert all(r["mean_calibrate_s"] > 0 for r in summary)
    assert "## Per method over the calibration sources" in (tmp_path / "out" / "c.md").read_text()


def _weight_quantized(proto, node):
    producers = {o: n for n in proto.graph.node for o in n.output}
    weight = producers.get(node.input[1]) if len(node.input) > 1 else None
    return weight is not None and weight.op_type == "DequantizeLinear"


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
    weight = _consts(proto)[stem.input[1]]  # 7x7 stride-2 conv: output 32x48
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
    from pipeline.cli import main

    out = tmp_path / "cli" / "m.onnx"
    code = main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o", str(out),
                 "--precision", "int8", "--calib", str(image_dir), "--calib-count", "2",
                 "--calib-side", "64", "--keep-fp32-sensitive", "2", "--no-parity"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "FP32 2 most sensitive layers" in text and "of conv MACs INT8" in text
    assert text.count("FP32 layers: ") == 1


@pytest.mark.skipif(int8_kernels_saturate(),
                    reason="this CPU has no VNNI: ONNX Runtime's integer kernels saturate here")
def test_int8_noise_floor_runs_the_same_graph_two_ways(tmp_path):
    from pipeline.accuracy import int8_noise_floor

    ref = _dark_text_model(tmp_path / "ref.onnx")
    images = synthetic_images(3, 192, 256, first_seed=5)
    calib = [preprocess(im, SPEC.replace(limit_side=256))[0][None] for im in synthetic_images(2, 192, 256, 70)]
    int8 = quantize.to_int8(ref, tmp_path / "ref8.onnx", calib, "minmax")
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
    from pipeline.accuracy import compare_many, int8_execution, int8_noise_floor

    ref = _dark_text_model(tmp_path / "ref.onnx")
    images = synthetic_images(3, 192, 256, first_seed=5)
    calib = [preprocess(im, SPEC.replace(limit_side=256))[0][None] for im in synthetic_images(2, 192, 256, 70)]
    int8 = quantize.to_int8(ref, tmp_path / "ref8.onnx", calib, "minmax")
    fp16 = quantize.to_fp16(ref, tmp_path / "ref16.onnx")
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
    ref = _dark_text_model(tmp_path / "ref.onnx")
    images = synthetic_images(2, 192, 256, first_seed=5)
    calib = [preprocess(im, SPEC.replace(limit_side=256))[0][None] for im in synthetic_images(2, 192, 256, 70)]
    result = accuracy.compare_many(ref, [quantize.to_int8(ref, tmp_path / "ref8.onnx", calib, "minmax")], images)[0]
    assert not result.int8_as_float and "float ops" not in str(result)
    assert accuracy.int8_execution() == "ONNX Runtime's integer kernels"


def test_detector_warns_about_int8_on_a_saturating_cpu(tmp_path, saturating_cpu):
    import warnings

    from engine.errors import DbrtWarning
    from pipeline.detector import Detector

    ref = _dark_text_model(tmp_path / "ref.onnx")
    calib = [preprocess(im, SPEC.replace(limit_side=256))[0][None] for im in synthetic_images(2, 192, 256, 70)]
    int8 = quantize.to_int8(ref, tmp_path / "ref8.onnx", calib, "minmax")
    with pytest.warns(DbrtWarning, match="INT8 model on the CPU: this CPU has no VNNI"):
        Detector(int8, backend="onnxruntime", device="cpu").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DbrtWarning)
        Detector(ref, backend="onnxruntime", device="cpu").close()  # FP32: nothing to say


def test_keep_fp32_sensitive_counts_layers_beyond_the_other_exclusions(fp32_model, tmp_path, calibration):
    ranked = quantize.int8_layer_ranking(fp32_model, calibration, "minmax")
    stem = quantize.stem_nodes(onnx.load(str(fp32_model)))
    out = quantize.to_int8(fp32_model, tmp_path / "both.onnx", calibration, "minmax",
                           keep_fp32_stem=True, keep_fp32_sensitive=2)
    kept = list(quantize.model_spec(out).int8.fp32_layers)
    assert kept == stem + [r.name for r in ranked if r.name not in stem][:2]
