"""The text-direction classifier (pipeline/reading/direction.py): upside-down text read right
with it and wrong without, upright text unchanged, its input and the turned crops' pixels (on
the CPU path and on the GPU crop path's batches, emulated with NumPy), and the --rec-cls flags."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from engine.base import Runner, TensorInfo
from engine.errors import ModelError
from pipeline.detections import Detections
from pipeline.reading import Recognizer, RecSpec
from pipeline.reading.crops import crop_batches, cut_crop, plan_crops, reading_quads
from pipeline.reading.direction import DirectionClassifier, classifier_input, turn_half
from pipeline.reading.gpu_crops import crop_geometry, emulate
from pipeline.reading.recognizer import _normalise

from test_reading import runners_the_flags_ask_for

needs_rapidocr = pytest.mark.skipif(
    __import__("importlib").util.find_spec("rapidocr") is None,
    reason="the PP-OCR rec and direction models come with the rapidocr wheel")
WORDS = {"HELLO 42": (20, 20), "Exit": (40, 130), "WORLD": (330, 120)}


def _words(turned: bool):
    """A synthetic frame of three words (as test_reading draws them) and their quads; turned:
    the whole frame turned 180 degrees, its quads with it."""
    from PIL import Image, ImageDraw

    from export.synth.fonts import font_paths, load_font

    font = load_font(([p for p in font_paths() if "DejaVuSans.ttf" in p] or font_paths()[-1:])[0], 44)
    canvas = Image.new("RGB", (600, 220), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    quads = []
    for word, (x, y) in WORDS.items():
        x0, y0, x1, y1 = draw.textbbox((x, y), word, font=font)
        draw.text((x, y), word, font=font, fill=(20, 20, 60))
        quads.append([[x0 - 6, y0 - 6], [x1 + 6, y0 - 6], [x1 + 6, y1 + 6], [x0 - 6, y1 + 6]])
    image, quads = np.ascontiguousarray(np.asarray(canvas)[:, :, ::-1]), np.float32(quads)
    if turned:
        image = np.ascontiguousarray(image[::-1, ::-1])
        quads = np.float32([image.shape[1], image.shape[0]]) - quads
    return image, Detections.from_quads(quads, np.ones(len(quads)))


class ChosenRunner(Runner):
    """A stand-in classifier: row k of `probs` for crop k of each call."""

    name = "chosen"
    inputs = (TensorInfo("x", (None, 3, None, None), "float32"),)
    outputs = (TensorInfo("p", (None, 2), "float32"),)
    metadata: dict = {}

    def __init__(self, probs):
        super().__init__()
        self.probs, self.shapes = np.float32(probs), []

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _infer(self, feed):
        self.shapes.append(feed["x"].shape)
        return {"p": self.probs[:len(feed["x"])]}


def _batch(widths, height=48, seed=0):
    """A normalised batch of random crops of these widths, zero-padded to the widest."""
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (height, w, 3), dtype=np.uint8) for w in widths]
    return _normalise(crops, RecSpec(height=height))


# -- reading ----------------------------------------------------------------------------------
@needs_rapidocr
def test_upside_down_text_reads_wrong_without_the_classifier_and_right_with_it():
    image, detections = _words(turned=True)
    with Recognizer(device="cpu") as rec:
        plain = rec.read(image, detections).texts
    with Recognizer(device="cpu", direction=True) as rec:
        read = rec.read(image, detections)
        direction = rec.describe()["direction"]
    assert plain[0] != "HELLO 42"  # read as garbage ("HH42")
    assert read.texts == list(WORDS) and np.all(read.text_scores > 0.8)
    assert direction["crops_classified"] == 3 and direction["crops_turned"] == 3


@needs_rapidocr
def test_upright_text_reads_the_same_with_the_classifier():
    image, detections = _words(turned=False)
    with Recognizer(device="cpu") as rec:
        plain = rec.read(image, detections)
    with Recognizer(device="cpu", direction=True) as rec:
        read = rec.read(image, detections)
        assert rec.describe()["direction"]["crops_turned"] == 0
    assert read.texts == plain.texts == list(WORDS)
    assert np.array_equal(read.text_scores, plain.text_scores)


@needs_rapidocr
def test_crops_given_to_recognize_are_turned_too():
    image, detections = _words(turned=True)
    x0, y0 = detections.polygons[0].min(0).astype(int)
    x1, y1 = detections.polygons[0].max(0).astype(int)
    with Recognizer(device="cpu", direction=True) as rec:
        texts, _ = rec.recognize([image[y0:y1, x0:x1]])
    assert texts == ["HELLO 42"]


@needs_rapidocr
@pytest.mark.parametrize("turned", [False, True])
def test_a_crop_the_classifier_turns_wrongly_is_read_upright(turned):
    """The classifier turns a few short upright words; a turned crop is read upright too and the
    more confident reading kept: with a classifier that says "180" for every crop, upright words
    still read right (all three turns undone) and upside-down ones are read turned."""
    image, detections = _words(turned=turned)
    classifier = DirectionClassifier(ChosenRunner([[0.01, 0.99]] * 3))
    with Recognizer(device="cpu", direction=classifier) as rec:
        read = rec.read(image, detections)
        direction = rec.describe()["direction"]
    assert read.texts == list(WORDS) and np.all(read.text_scores > 0.8)
    assert direction["crops_turned"] == 3 and direction["turns_undone"] == (0 if turned else 3)


@needs_rapidocr
def test_the_shipped_classifier_tells_upside_down_crops_apart():
    spec = RecSpec()
    upright, _ = _words(turned=False)
    turned, detections = _words(turned=True)
    quads = reading_quads(detections.polygons)
    plan = plan_crops(quads, spec.height, spec.min_width, spec.max_width)
    crops = [cut_crop(turned, plan.corners[i], int(plan.widths[i]), spec.height) for i in range(3)]
    crops += [np.ascontiguousarray(c[::-1, ::-1]) for c in crops]  # the same, upright
    classifier = DirectionClassifier(device="cpu")
    try:
        found = classifier.upside_down(_normalise(crops, spec), [c.shape[1] for c in crops], spec)
    finally:
        classifier.close()
    assert found.tolist() == [True] * 3 + [False] * 3


# -- the classifier's input and the turned pixels ----------------------------------------------
def test_the_classifier_input_is_the_crop_at_height_48_up_to_width_192_zero_padded():
    spec = RecSpec()
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (48, w, 3), dtype=np.uint8) for w in (40, 192, 500)]
    inputs = classifier_input(_normalise(crops, spec), [40, 192, 500], spec)
    assert inputs.shape == (3, 3, 48, 192) and inputs.dtype == np.float32
    reference = [crops[0], crops[1], cv2.resize(crops[2], (192, 48), interpolation=cv2.INTER_LINEAR)]
    for k, crop in enumerate(reference):
        expected = (crop.astype(np.float32) / 255 - 0.5) / 0.5
        got = inputs[k, :, :, :crop.shape[1]].transpose(1, 2, 0)
        assert np.abs(got - expected).max() * 127.5 <= 1.0  # within a grey level of OpenCV's
    assert not inputs[0, :, :, 40:].any()  # the rest is zero, as PaddleOCR pads


def test_a_recognizer_of_another_normalisation_gives_the_classifier_its_own():
    spec = RecSpec(bgr=False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), height=32)
    crop = np.random.default_rng(2).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    inputs = classifier_input(_normalise([crop], spec), [64], spec)
    expected = (crop.astype(np.float32) / 255 - 0.5) / 0.5  # BGR, at height 48: 96 wide
    expected = cv2.resize(expected, (96, 48), interpolation=cv2.INTER_LINEAR)
    assert np.abs(inputs[0, :, :, :96].transpose(1, 2, 0) - expected).max() < 1e-4
    assert not inputs[0, :, :, 96:].any()


def test_a_turned_crop_is_its_own_width_reversed_and_the_padding_stays():
    batch = _batch([30, 70])
    before = batch.copy()
    turn_half(batch, 0, 30)
    assert np.array_equal(batch[0, :, :, :30], before[0, :, ::-1, 29::-1])
    assert not batch[0, :, :, 30:].any()
    assert np.array_equal(batch[1], before[1])


def test_only_confident_180_crops_of_the_candidates_are_turned():
    spec = RecSpec()
    batch = _batch([20, 50, 64, 40])
    before = batch.copy()
    probs = [[0.05, 0.95], [0.2, 0.8], [0.99, 0.01]]  # the last crop is not a candidate
    classifier = DirectionClassifier(ChosenRunner(probs))
    classifier.turn_upside_down(batch, [20, 50, 64, 40], spec, candidates=[True, True, True, False])
    assert np.array_equal(batch[0, :, :, :20], before[0, :, ::-1, 19::-1])
    assert np.array_equal(batch[1:], before[1:])
    assert classifier.describe()["crops_turned"] == 1
    assert classifier.describe()["crops_classified"] == 3  # nor is it classified
    assert classifier.runner.shapes == [(3, 3, 48, 192)]


def test_logits_are_taken_as_logits_and_the_threshold_is_the_callers():
    spec = RecSpec()
    classifier = DirectionClassifier(ChosenRunner([[0.0, 3.0], [0.0, 1.0]]), thresh=0.8)
    found = classifier.upside_down(_batch([20, 20]), [20, 20], spec)
    assert found.tolist() == [True, False]  # softmax: 0.95, 0.73


def test_a_model_that_is_not_a_direction_classifier_is_refused(tmp_path):
    from test_reading import _tiny_ctc_model

    from engine.loader import load_runner

    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    with pytest.raises(ModelError, match="not a text-direction classifier"):
        DirectionClassifier(model, device="cpu")
    runner = load_runner(model, device="cpu")  # refused, it let its session (GPU memory) go
    with pytest.raises(ModelError, match="not a text-direction classifier"):
        DirectionClassifier(runner)
    assert not runner.is_active


# -- the GPU crop path (its NumPy twin) ----------------------------------------------------------
@needs_rapidocr
def test_gpu_cut_batches_are_turned_within_each_crops_width(monkeypatch):
    """The GPU path's batch (one kernel: crops of several widths, zero-padded to the widest)
    emulated with NumPy: the upside-down words read right, each turned within its own width."""
    from pipeline.reading import recognizer

    image, detections = _words(turned=True)
    spec, seen = RecSpec(), []

    def emulated_cropper(frame, plan, members):
        batch = emulate(frame, crop_geometry(plan, members, spec), spec)
        seen.append((batch.copy(), plan.widths[members]))
        return batch

    monkeypatch.setattr(recognizer, "array_module", lambda array: None)  # "on the GPU"
    with Recognizer(device="cpu", direction=True) as rec:
        rec._cropper = emulated_cropper
        batches = []
        monkeypatch.setattr(rec, "_infer_decode", _recording(rec._infer_decode, batches))
        read = rec.read(image, detections)
    assert read.texts == list(WORDS)
    (cut, widths), = seen
    turned = batches[0]
    assert len(set(widths.tolist())) == 3 and cut.shape == turned.shape
    for k, width in enumerate(widths):
        assert np.array_equal(turned[k, :, :, :width], cut[k, :, ::-1, width - 1::-1])
        assert not turned[k, :, :, width:].any()


def _recording(infer_decode, batches):
    def recorded(batch):
        batches.append(np.array(batch))
        return infer_decode(batch)
    return recorded


def test_the_classifier_input_from_a_gpu_cut_batch_matches_the_cpu_paths():
    spec = RecSpec()
    image, detections = _words(turned=True)
    plan = plan_crops(reading_quads(detections.polygons), spec.height, spec.min_width, spec.max_width)
    members, = crop_batches(plan, spec.batch_size)
    gpu = classifier_input(emulate(image, crop_geometry(plan, members, spec), spec),
                           plan.widths[members], spec)
    cpu = classifier_input(_normalise([cut_crop(image, plan.corners[i], int(plan.widths[i]),
                                                spec.height) for i in members], spec),
                           plan.widths[members], spec)
    assert np.abs(gpu - cpu).max() * 127.5 <= 1.0 + 1e-3


# -- the flags ------------------------------------------------------------------------------------
@needs_rapidocr
def test_dbrt_run_rec_cls_turns_and_reports_it(tmp_path):
    from pipeline.cli import main

    image, _ = _words(turned=True)
    cv2.imwrite(str(tmp_path / "words.png"), image)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "words.png"), "--rec-cls", "--device", "cpu", "--quiet",
                 "--output", str(out)]) == 0
    line = json.loads((out / "detections.jsonl").read_text().splitlines()[0])
    assert {"HELLO", "42", "WORLD", "Exit"} <= {det["text"] for det in line["detections"]}
    direction = json.loads((out / "report.json").read_text())["model"]["reader"]["direction"]
    assert direction["crops_turned"] >= 1 and direction["thresh"] == 0.9


def test_the_flags_errors_are_one_line_naming_the_flag(tmp_path, capsys):
    from pipeline.cli import main

    from test_reading import _tiny_ctc_model

    image = tmp_path / "blank.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    out = str(tmp_path / "out")
    tiny = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    for argv, message in (
            (["--rec-cls-model", str(tmp_path / "none.onnx")], "--rec-cls-model .*none.onnx: file not found"),
            (["--rec-cls-model", str(tmp_path)], "--rec-cls-model .* is a folder"),
            (["--rec-cls-model", str(tiny), "--rec-model", str(tiny), "--device", "cpu"],
             "--rec-cls-model .*tiny.onnx: .* is not a text-direction classifier")):
        capsys.readouterr()
        assert main(["run", str(image), "--output", out] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert main(["run", str(image), "--output", out, "--rec-cls-thresh", "2"]) == 2
    assert "--rec-cls-thresh" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(tmp_path), "--rec-cls"]) == 2
    assert "add --e2e" in capsys.readouterr().err


@needs_rapidocr
def test_each_cls_flag_implies_reading_with_the_classifier(monkeypatch):
    from pipeline.commands import eval as eval_cmd, run as run_cmd
    from pipeline.reading import direction

    asked = runners_the_flags_ask_for(monkeypatch, direction, (
        (run_cmd, ["--rec-cls"]), (run_cmd, ["--rec-cls-thresh", "0.5"]),
        (run_cmd, ["--rec-cls-model", __file__]),
        (eval_cmd, ["--dataset", "x", "--e2e", "--rec-cls"])))
    assert [backend for _, backend, _ in asked] == ["onnxruntime"] * 4
    assert asked[2][0] == __file__


@needs_rapidocr
def test_vertical_text_is_left_to_its_reading_both_ways_round():
    """A tall crop is read both ways round and the more confident reading kept: the classifier
    does not turn it first (the second reading would then be the first one again)."""
    image, detections = _words(turned=False)
    x0, y0 = detections.polygons[1].min(0).astype(int)
    x1, y1 = detections.polygons[1].max(0).astype(int)
    tall = cv2.copyMakeBorder(cv2.rotate(np.ascontiguousarray(image[y0:y1, x0:x1]),
                                         cv2.ROTATE_90_CLOCKWISE), 10, 10, 10, 10,
                              cv2.BORDER_CONSTANT, value=(235, 235, 235))
    h, w = tall.shape[:2]
    quad = np.float32([[[10, 10], [w - 10, 10], [w - 10, h - 10], [10, h - 10]]])
    with Recognizer(device="cpu", direction=True) as rec:
        assert rec.read(tall, Detections.from_quads(quad, [1.0])).texts == ["Exit"]
        assert rec.describe()["direction"]["crops_classified"] == 0
