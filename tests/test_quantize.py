"""FP16 / INT8 ONNX: TensorRT-ready structure, metadata, calibration inputs, accuracy report."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")
from onnx import TensorProto  # noqa: E402

from engine.errors import ModelError, SourceError  # noqa: E402
from engine.onnxruntime.int8_cpu import int8_kernels_saturate  # noqa: E402
from dbnet.spec import ModelSpec  # noqa: E402
from export import quantize  # noqa: E402
from export.synth import synthetic_images  # noqa: E402
from pipeline.accuracy import compare_models  # noqa: E402
from pipeline.sampling import calibration_inputs  # noqa: E402
from export.onnx_graph import get_metadata  # noqa: E402
from export.trt_compat import check_onnx  # noqa: E402
from pipeline.preprocess import preprocess  # noqa: E402
from quantize_models import SPEC, dark_text_model, initializers  # noqa: E402
from quantize_models import calibration, fp32_model, image_dir  # noqa: E402,F401 (fixtures)


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


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


def test_images_read_from_a_video_are_spread_over_it(tmp_path):
    """`dbrt build --calib clip.mp4` (and --accuracy) took the clip's first frames, much alike,
    where `dbrt export --calib` spreads them over the whole clip."""
    from media import index_of, write_video
    from pipeline.sampling import read_images

    video = write_video(tmp_path / "clip.mp4", frames=12)
    assert [index_of(image) for image in read_images(video, 3)] == [0, 4, 8]
    assert [index_of(image) for image in read_images(video)] == list(range(12))


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
    consts = initializers(proto)
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
    consts, producers = initializers(int8), {o: n for n in int8.graph.node for o in n.output}
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


def test_accuracy_report_measures_box_agreement(tmp_path):
    ref = dark_text_model(tmp_path / "ref.onnx")
    images = synthetic_images(3, 192, 256, first_seed=5)
    fp16 = quantize.to_fp16(ref, tmp_path / "ref16.onnx")
    same = compare_models(ref, fp16, images)
    assert same.reference_boxes > 0 and same.precision == "fp16"
    assert same.hmean >= 0.99 and same.max_abs < 1e-2
    shifted = dark_text_model(tmp_path / "shifted.onnx", bias=9.0)  # a visibly different model
    worse = compare_models(ref, shifted, images)
    assert worse.hmean < same.hmean and worse.mean_abs > same.mean_abs
    row = worse.to_dict()
    assert {"box_precision", "box_recall", "box_hmean", "max_abs"} <= set(row)


def test_entropy_calibration_clips_where_minmax_does_not(fp32_model, tmp_path, calibration):
    scales = {}
    for method in ("minmax", "entropy"):
        proto = onnx.load(str(quantize.to_int8(fp32_model, tmp_path / f"{method}.onnx", calibration, method)))
        consts = initializers(proto)
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


def test_cli_export_warns_when_no_convolution_is_left_in_int8(image_dir, tmp_path, capsys):
    """--keep-fp32-sensitive 1000 wrote an 'INT8' model with 0% of its convolutions in INT8,
    saying only '0% of conv MACs INT8'."""
    from pipeline.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", "--random-init", "--arch", "resnet18", "--width", "0.25", "-o", str(out),
                 "--precision", "int8", "--calib", str(image_dir), "--calib-count", "2",
                 "--calib-side", "64", "--keep-fp32-sensitive", "1000"]) == 0
    text = capsys.readouterr().out
    assert "0% of conv MACs INT8" in text
    assert "WARNING: no convolution of m_int8.onnx runs in INT8" in text


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


@pytest.mark.parametrize("kept, hint", [
    (0, "images, or --keep-fp32-sensitive 10\n"),
    (5, "images, or --keep-fp32-sensitive 10 (more than the 5 kept now)\n"),
    (20, "images, or --keep-fp32-sensitive 40 (more than the 20 kept now)\n"),
    (40, "images (already 40 sensitive layers kept in FP32)\n"),
])
def test_the_int8_warning_suggests_keeping_more_layers_than_were_kept(capsys, kept, hint):
    """With --keep-fp32-sensitive 20 the warning said to try --keep-fp32-sensitive 10."""
    from pipeline.accuracy import PrecisionComparison
    from pipeline.commands.export import _report

    _report(PrecisionComparison("m_int8.onnx", "int8", 4, 0.6, 0.01, reference_boxes=20,
                                candidate_boxes=9, matched=6), kept)
    text = capsys.readouterr().out
    assert "WARNING: the INT8 model's boxes agree with FP32 at only 0.41" in text
    assert text.endswith(hint), text


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


def test_precision_benchmark_subset_on_own_images(tmp_path, monkeypatch, image_dir):
    pytest.importorskip("torch")
    import json

    from benchmarks import precision_accuracy

    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path))
    assert precision_accuracy.main(["--random-init", "--width", "0.25", "--side", "64", "--synthetic", "1",
                                    "--calib-count", "2", "--name", "p", "--images", str(image_dir),
                                    "--variants", "int8-entropy,fp16"]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert [(r["variant"], r["images"]) for r in payload["rows"] if r["images"] != "realdev"] == [
        ("int8-entropy", "synthetic"), ("fp16", "synthetic"),
        ("int8-entropy", image_dir.name), ("fp16", image_dir.name)]
    assert payload["sensitivity"] == []  # no sensitive-K variant asked for, so no ranking
    assert "Not ranked" in (tmp_path / "p.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--variants", "int8-foo"], "--variants: unknown variant(s) int8-foo"),
    (["--images", "no/such/dir"], "--images: no such folder: no/such/dir"),
])
def test_precision_benchmark_flag_errors(flags, message, capsys):
    from benchmarks import precision_accuracy

    with pytest.raises(SystemExit) as exit_info:
        precision_accuracy.main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_export_takes_the_calibration_method_the_model_record_chose(image_dir, tmp_path, capsys):
    """A checkpoint whose NAME.json chose a method on validation is calibrated with it by default;
    --calib-method still wins."""
    torch = pytest.importorskip("torch")
    import json

    from export.model import DBNet
    from pipeline.cli import main

    checkpoint = tmp_path / "m.pt"
    torch.save(DBNet("resnet18", width=0.25).state_dict(), checkpoint)
    checkpoint.with_suffix(".json").write_text(json.dumps({"int8_calibration": {"method": "minmax"}}))
    common = ["export", str(checkpoint), "--precision", "int8", "--calib", str(image_dir),
              "--calib-count", "2", "--calib-side", "64", "--no-parity"]
    assert main(common + ["-o", str(tmp_path / "a.onnx")]) == 0
    text = capsys.readouterr().out
    assert "INT8 calibration: minmax, chosen for this model on validation (m.json" in text
    assert "minmax calibration on 2 inputs" in text
    assert main(common + ["-o", str(tmp_path / "b.onnx"), "--calib-method", "mse"]) == 0
    text = capsys.readouterr().out
    assert "mse calibration on 2 inputs" in text and "chosen for this model" not in text
    checkpoint.with_suffix(".json").write_text(json.dumps({"int8_calibration": {"method": "kl"}}))
    assert main(common + ["-o", str(tmp_path / "c.onnx")]) != 0
    captured = capsys.readouterr()
    assert "m.json: int8_calibration method 'kl' is not one of" in captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "c.onnx").exists()  # failed before the export
