"""Presets for foreign DB-family models (PP-OCR via RapidOCR, MMOCR) and the model checks that
catch a wrong preset. Tests comparing with RapidOCR itself skip when it is not installed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dbnet.model_check import check_io, check_spec_source, probability_map, suggest_preset
from dbnet.spec import MAX_INPUT_SIDE, PRESETS, ModelSpec, preset, resolve_spec, target_size
from engine.base import TensorInfo
from engine.errors import ModelError, ShapeError
from engine.loader import RunnerOptions
from pipeline.preprocess import preprocess

ONE_THREAD = RunnerOptions(threads=1)


def _rapidocr():
    return pytest.importorskip("rapidocr", reason="rapidocr not installed (benchmark-only "
                                                  "dependency: pip install rapidocr)")


def _rapidocr_det_config():
    import yaml

    root = Path(_rapidocr().__file__).parent
    return yaml.safe_load((root / "config.yaml").read_text())["Det"]


def _rapidocr_det_model() -> Path:
    root = Path(_rapidocr().__file__).parent
    models = sorted((root / "models").glob("*det*.onnx"))
    if not models:
        pytest.skip(f"no det ONNX inside the rapidocr package ({root / 'models'})")
    return models[0]


# -- presets ---------------------------------------------------------------------------------
def test_ppocr_preset_matches_rapidocr_config():
    det = _rapidocr_det_config()
    spec = preset("ppocr")
    assert spec.color == "BGR"  # RapidOCR's LoadImage hands the detector BGR images
    np.testing.assert_allclose(spec.mean, np.array(det["mean"]) * 255.0)
    np.testing.assert_allclose(spec.std, np.array(det["std"]) * 255.0)
    assert spec.resize.limit_side == det["limit_side_len"]
    assert (det["limit_type"], spec.resize.limit_type) == ("min", "min_at_least")
    assert (spec.post.thresh, spec.post.box_thresh, spec.post.unclip_ratio) == (
        det["thresh"], det["box_thresh"], det["unclip_ratio"])
    for key in ("use_dilation", "max_candidates", "score_mode"):
        assert getattr(spec.post, key) == det[key]


def test_mmocr_preset_is_imagenet_rgb_with_aspect_kept():
    spec = preset("mmocr")
    assert spec.color == "RGB" and spec.mean == (123.675, 116.28, 103.53)
    assert spec.std == (58.395, 57.12, 57.375)
    assert (spec.post.thresh, spec.post.box_thresh, spec.post.unclip_ratio) == (0.3, 0.3, 1.5)
    assert spec.resize.keep_aspect is True and spec.post.max_candidates == 3000


def test_preset_wins_over_metadata_and_changes_are_typed():
    ours = ModelSpec(arch="dbnet_resnet18").replace(thresh=0.2).to_json()
    spec = resolve_spec({"dbrt": ours}, "ppocr").replace(box_thresh=0.7)
    assert spec.arch == "ppocr-det" and spec.post.box_thresh == 0.7 and spec.post.thresh == 0.3
    assert spec.post.use_dilation is True  # the rest of the preset's post-processing is kept
    with pytest.raises(ModelError, match="unknown model option.*threshold"):
        spec.replace(threshold=0.2)
    assert resolve_spec({}, None) == PRESETS["db"]
    with pytest.raises(ModelError, match="unknown preset 'paddle'.*mmocr, ppocr"):
        resolve_spec({}, "paddle")
    with pytest.raises(ModelError, match="limit_type must be one of min, max, min_at_least"):
        ModelSpec().replace(limit_type="short")


@pytest.mark.parametrize("h,w,expected", [
    (720, 1280, (736, 1312)),     # ICDAR 2015 frames: raised to 736
    (506, 960, (736, 1408)),      # the lightbox video
    (1920, 1080, (1920, 1088)),   # the portrait street video: big enough, kept
    (1200, 1600, (1216, 1600)),
    (30, 400, (288, 4000)),       # RapidOCR would ask for 736x9824: capped at 4000 a side
])
def test_target_size_min_at_least(h, w, expected):
    assert target_size(h, w, 736, "min_at_least") == expected


def test_resize_rule_matches_rapidocr_on_many_sizes(rng, monkeypatch):
    _rapidocr()
    from rapidocr.ch_ppocr_det import utils

    # only the size RapidOCR picks matters: skip the pixel work of its cv2.resize call
    monkeypatch.setattr(utils.cv2, "resize", lambda img, wh: np.empty((wh[1], wh[0], 3), np.uint8))
    theirs = utils.DetPreProcess(736, "min")
    capped = 0
    for h, w in rng.integers(20, 4000, size=(300, 2)):
        resized = theirs.resize(np.empty((h, w, 3), np.uint8))
        ours = target_size(int(h), int(w), 736, "min_at_least")
        if max(resized.shape[:2]) <= MAX_INPUT_SIDE:
            assert ours == resized.shape[:2], (h, w)
        else:  # RapidOCR has no cap; dbrt keeps PaddleOCR's 4000-pixel limit
            capped += 1
            assert max(ours) <= MAX_INPUT_SIDE, (h, w)
    assert capped < 100  # most sizes were compared exactly


def test_ppocr_normalisation_matches_rapidocr(rng):
    _rapidocr()
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    frame = rng.integers(0, 256, size=(90, 170, 3), dtype=np.uint8)
    spec = preset("ppocr")
    ours, _ = preprocess(frame, spec)
    det = _rapidocr_det_config()
    theirs = DetPreProcess(spec.resize.limit_side, det["limit_type"], det["mean"], det["std"])(frame)
    assert theirs.shape[1:] == ours.shape
    np.testing.assert_allclose(ours, theirs[0], atol=1e-5)


# -- model checks ----------------------------------------------------------------------------
IMAGE = TensorInfo("images", ("batch", 3, "h", "w"), "float32")
PROB = TensorInfo("prob", ("batch", 1, "h", "w"), "float32")


@pytest.mark.parametrize("inputs,outputs,spec,message", [
    ((IMAGE, IMAGE), (PROB,), ModelSpec(), "one image input, this model has 2"),
    ((TensorInfo("x", (1, 1, 64, 64), "float32"),), (PROB,), ModelSpec(),
     r"takes \(N, 3, H, W\) images; it looks like a ppocr-det model: try --preset ppocr"),
    ((TensorInfo("images", (1, 3, 720, 1280), "float32"),), (PROB,), ModelSpec(),
     "fixed size .*not a multiple of the stride 32"),
    ((IMAGE,), (PROB,), ModelSpec(output="maps"), r"no output 'maps'; its outputs are \['prob'\]"),
    ((IMAGE,), (TensorInfo("maps", ("n", 3, "h", "w"), "float32"),), ModelSpec(),
     "training-mode head also returns threshold maps"),
    ((IMAGE,), (TensorInfo("flat", ("n", 100), "float32"),), ModelSpec(), "probability map"),
])
def test_check_io_rejects_non_db_models(inputs, outputs, spec, message):
    with pytest.raises(ModelError, match=message):
        check_io(inputs, outputs, spec)


def test_check_io_picks_the_named_output():
    outputs = (TensorInfo("thresh", ("n", 1, "h", "w"), "float32"), PROB)
    assert check_io((IMAGE,), outputs, ModelSpec(output="prob")) == "prob"
    assert check_io((IMAGE,), (TensorInfo("p", (None, "h", "w"), "float32"),), ModelSpec()) == "p"


def test_probability_map_layouts_and_sigmoid(rng):
    prob = rng.random((2, 1, 64, 96), dtype=np.float32)
    np.testing.assert_array_equal(probability_map(prob, ModelSpec(), (64, 96)), prob[:, 0])
    np.testing.assert_array_equal(probability_map(prob[:, 0], ModelSpec(), (64, 96)), prob[:, 0])
    logits = np.array([[[-30.0, 0.0, 30.0]]], np.float32)
    out = probability_map(logits, ModelSpec(output_is_prob=False), (1, 3))
    np.testing.assert_allclose(out, [[[0.0, 0.5, 1.0]]], atol=1e-6)


@pytest.mark.parametrize("raw,spec,hw,error,message", [
    (np.full((1, 1, 32, 32), 4.0, np.float32), preset("ppocr"), (32, 32), ModelError,
     r"spans \[4, 4\], outside \[0, 1\].*returns logits"),
    (np.zeros((1, 1, 16, 24), np.float32), ModelSpec(), (64, 96), ShapeError,
     r"map is 16x24 for a 64x96 input.*1/4 resolution"),
    (np.zeros((1, 2, 64, 96), np.float32), ModelSpec(), (64, 96), ShapeError,
     "multi-channel output is not a DB probability map"),
])
def test_probability_map_rejects_wrong_outputs(raw, spec, hw, error, message):
    with pytest.raises(error, match=message):
        probability_map(raw, spec, hw)


def test_fp16_rounding_above_one_is_accepted():
    raw = np.array([[[0.0, 1.0004]]], np.float32)
    assert probability_map(raw, ModelSpec(), (1, 2)).shape == (1, 1, 2)


def test_foreign_model_without_metadata_needs_a_preset():
    paddle_in = (TensorInfo("x", (None, 3, None, None), "float32"),)
    paddle_out = (TensorInfo("fetch_name_0", (None, 1, None, None), "float32"),)
    assert suggest_preset(paddle_in, paddle_out) == "ppocr"
    assert suggest_preset((IMAGE,), (PROB,)) is None
    with pytest.raises(ModelError, match="looks like a ppocr-det model: pass --preset ppocr"):
        check_spec_source({}, None, paddle_in, paddle_out)
    check_spec_source({}, "ppocr", paddle_in, paddle_out)
    check_spec_source({"dbrt": ModelSpec().to_json()}, None, paddle_in, paddle_out)
    check_spec_source({}, None, (IMAGE,), (PROB,))  # unknown origin: DB defaults apply


@pytest.mark.parametrize("preset_name", [None, "ppocr"])
def test_a_text_recognizer_given_as_the_detector_is_named(preset_name):
    """PP-OCR rec as --model was taken for a PP-OCR detector ('pass --preset ppocr'), which
    then failed on its fixed height of 48."""
    rec_in = (TensorInfo("x", (None, 3, 48, "width"), "float32"),)
    rec_out = (TensorInfo("fetch_name_0", (None, "steps", 18385), "float32"),)
    with pytest.raises(ModelError, match="looks like a text recognizer .* --rec-model"):
        check_spec_source({}, preset_name, rec_in, rec_out)


# -- wrong presets on real ONNX graphs -------------------------------------------------------
def _logit_onnx(path: Path, pool: int = 1) -> Path:
    """A tiny detector-shaped graph whose output is a logit map (optionally pooled down)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "k"], ["logit"])]
    if pool > 1:
        nodes.append(helper.make_node("AveragePool", ["logit"], ["out"],
                                      kernel_shape=[pool, pool], strides=[pool, pool]))
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [20.0])
    graph = helper.make_graph(
        nodes, "logits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("out" if pool > 1 else "logit", TensorProto.FLOAT,
                                       ["n", 1, "oh", "ow"])], [k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path


def _run(path: Path, spec: ModelSpec, frame: np.ndarray):
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    chw, _ = preprocess(frame, spec)
    with OnnxRuntimeRunner(path, device="cpu", threads=1) as runner:
        name = check_io(runner.inputs, runner.outputs, spec)
        raw = runner.infer(chw[None])[name]
    return probability_map(raw, spec, chw.shape[1:])


def test_logit_model_with_a_probability_preset_fails_clearly(tmp_path):
    path = _logit_onnx(tmp_path / "logits.onnx")
    frame = np.full((40, 60, 3), 250, np.uint8)
    spec = preset("ppocr").replace(limit_side=64)
    with pytest.raises(ModelError, match="returns logits"):
        _run(path, spec, frame)
    prob = _run(path, spec.replace(output_is_prob=False), frame)
    assert prob.min() >= 0.0 and prob.max() <= 1.0 and prob.shape == (1, 64, 96)


def test_quarter_resolution_model_fails_clearly(tmp_path):
    path = _logit_onnx(tmp_path / "quarter.onnx", pool=4)
    spec = preset("db").replace(limit_side=64, output_is_prob=False)
    with pytest.raises(ShapeError, match="1/4 resolution"):
        _run(path, spec, np.zeros((64, 64, 3), np.uint8))


def test_rapidocr_det_model_passes_the_checks_with_the_ppocr_preset():
    path = _rapidocr_det_model()
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, device="cpu", threads=1) as runner:
        with pytest.raises(ModelError, match="--preset ppocr"):
            check_spec_source(runner.metadata, None, runner.inputs, runner.outputs)
        assert check_io(runner.inputs, runner.outputs, preset("ppocr")) == runner.outputs[0].name
    frame = np.full((96, 128, 3), 255, np.uint8)
    frame[40:56, 20:108] = 0  # a black bar: text-like stroke
    prob = _run(path, preset("ppocr").replace(limit_side=128), frame)
    assert prob.shape == (1, 128, 160) and 0.0 <= prob.min() and prob.max() <= 1.0


def test_preset_post_processing_options_reach_the_postprocessor():
    from pipeline.postprocess import PostprocessConfig

    config = preset("ppocr").post
    assert isinstance(config, PostprocessConfig)
    assert (config.use_dilation, config.max_candidates, config.score_mode) == (True, 1000, "fast")
    assert (config.thresh, config.box_thresh, config.unclip_ratio) == (0.3, 0.5, 1.6)
    assert preset("ppocr").replace(use_dilation=False).post.use_dilation is False
    assert preset("db").post.use_dilation is False


# -- through the Detector --------------------------------------------------------------------
def test_detector_refuses_a_ppocr_model_without_preset_and_runs_it_with_one():
    from pipeline.detector import Detector

    path = _rapidocr_det_model()
    with pytest.raises(ModelError, match="pass --preset ppocr"):
        Detector(path, backend="onnxruntime", device="cpu", options=ONE_THREAD)
    frame = np.full((96, 128, 3), 255, np.uint8)
    with Detector(path, lambda spec: spec.replace(limit_side=128), preset="ppocr",
                  backend="onnxruntime", device="cpu", options=ONE_THREAD) as det:
        assert det.post.config.use_dilation and det.spec.arch == "ppocr-det"
        assert det.infer(det.prepare([frame])[0]).shape == (1, 128, 160)


def test_detector_catches_a_logit_model_run_as_probabilities(tmp_path):
    from pipeline.detector import Detector

    path = _logit_onnx(tmp_path / "logits.onnx")
    frame = np.full((40, 60, 3), 250, np.uint8)
    with Detector(path, lambda spec: spec.replace(limit_side=64), preset="mmocr",
                  backend="onnxruntime", device="cpu", options=ONE_THREAD) as det:
        with pytest.raises(ModelError, match="returns logits"):
            det.detect(frame)
    with Detector(path, lambda spec: spec.replace(limit_side=64, output_is_prob=False),
                  preset="mmocr", backend="onnxruntime", device="cpu", options=ONE_THREAD) as det:
        dets = det.detect(frame)  # the uniform bright frame is all "text" for this toy model
        assert len(dets) == 1 and (dets.boxes_xyxy[0, 2:] <= [60, 40]).all()


@pytest.mark.slow
def test_detector_agrees_with_rapidocr_on_a_real_image(shared_data):
    """Same model, same settings: dbrt's boxes match RapidOCR's own (the benchmark's claim)."""
    import cv2

    from benchmarks.peer_rapidocr import RapidOcrDetector
    from pipeline.detector import Detector
    from pipeline.evaluate import evaluate_image

    path = _rapidocr_det_model()
    image = cv2.imread(str(shared_data / "realdev" / "images" / "ic15_train_img_1.jpg"))

    theirs = RapidOcrDetector(path, threads=1)(image)
    with Detector(path, preset="ppocr", backend="onnxruntime", device="cpu", options=ONE_THREAD) as det:
        ours = det.detect(image)
    result = evaluate_image(theirs, [False] * len(theirs), ours.polygons)
    assert len(theirs) >= 3 and result.hmean == 1.0
