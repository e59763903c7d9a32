"""Reading text: CTC decoding on hand-made scores, crops, the recognizer's errors, and the
PP-OCR rec model (as the rapidocr wheel ships it) reading words drawn on a synthetic image."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from pipeline.detections import Detections
from pipeline.reading import Charset, Recognizer, RecSpec, ctc_greedy_decode
from pipeline.reading.crops import crop_batches, cut_crop, pad_quads, plan_crops, reading_quads
from pipeline.shipped import default_model_path

CHARS = Charset(("", "a", "b", " "))


def _onehot(rows, probs=None, classes=4):
    """(N, T, C) scores with class rows[n][t] at probability probs (default 0.9)."""
    rows = np.asarray(rows)
    out = np.full(rows.shape + (classes,), 0.1 / (classes - 1), np.float32)
    p = np.full(rows.shape, 0.9, np.float32) if probs is None else np.asarray(probs, np.float32)
    np.put_along_axis(out, rows[..., None], p[..., None], axis=2)
    return out


# -- decoding ---------------------------------------------------------------------------------
def test_greedy_decoding_merges_repeats_and_drops_blanks_per_row():
    scores = _onehot([[1, 1, 0, 1, 2, 2, 3, 2],     # a a _ a b b ' ' b -> "aab b"
                      [0, 0, 0, 0, 0, 0, 0, 0],     # all blank -> ""
                      [2, 0, 2, 0, 0, 1, 1, 1]])    # b _ b _ _ a a a -> "bba"
    texts, conf = ctc_greedy_decode(scores, CHARS)
    assert texts == ["aab b", "", "bba"]
    assert conf[1] == 0.0 and conf[0] == pytest.approx(0.9) and conf[2] == pytest.approx(0.9)


def test_confidence_is_the_mean_of_the_kept_characters():
    scores = _onehot([[1, 0, 2, 2]], probs=[[0.6, 0.9, 0.8, 0.3]])
    texts, conf = ctc_greedy_decode(scores, CHARS)
    assert texts == ["ab"]
    assert conf[0] == pytest.approx((0.6 + 0.8) / 2)  # a repeat's later steps do not count


def test_logits_are_turned_into_probabilities():
    logits = np.log(_onehot([[1, 2]])) * 3.0 - 7.0  # not probabilities any more
    texts, conf = ctc_greedy_decode(logits, CHARS)
    assert texts == ["ab"] and 0 < conf[0] <= 1


def test_decoding_refuses_scores_of_another_class_count():
    with pytest.raises(ModelError, match="CTC scores"):
        ctc_greedy_decode(np.zeros((1, 5, 7), np.float32), CHARS)


def test_an_fp16_softmax_rounded_past_one_is_still_read_as_probabilities():
    """float16 rounds a sure step to 1.000977: the batch was taken for logits and softmaxed
    again, both crops' confidences collapsing (0.48 here, ~1e-4 with PP-OCR's 18,000 classes)."""
    probs = np.zeros((2, 3, 4), np.float32)
    probs[:, :, 1] = 1.0
    probs[0, 0, 1] = np.float16(1.0) + np.finfo(np.float16).eps  # 1.000977
    texts, conf = ctc_greedy_decode(probs.astype(np.float16).astype(np.float32), CHARS)
    assert texts == ["a", "a"] and conf.min() > 0.99


def test_a_dictionary_is_matched_to_the_class_count():
    assert Charset.from_characters("ab", 4).classes == ("", "a", "b", " ")
    assert Charset.from_characters("ab", 3).classes == ("", "a", "b")
    with pytest.raises(ModelError, match="2 characters but the recognizer has 9 classes"):
        Charset.from_characters("ab", 9)


def test_a_dictionary_saved_with_a_byte_order_mark_reads_its_first_character(tmp_path):
    """The BOM a Windows editor writes became part of the first character ('\\ufeffa')."""
    path = tmp_path / "keys.txt"
    path.write_bytes("a\nb\n".encode("utf-8-sig"))
    assert Charset.from_file(path, 3).classes == ("", "a", "b")


# -- crops ------------------------------------------------------------------------------------
def test_a_rotated_quad_is_rectified_upright():
    image = np.zeros((200, 200, 3), np.uint8)
    image[90:110, 40:160] = 255  # a white bar 120 x 20
    import cv2

    m = cv2.getRotationMatrix2D((100, 100), 30, 1.0)
    rotated = cv2.warpAffine(image, m, (200, 200))
    corners = np.float32([[40, 90], [160, 90], [160, 110], [40, 110]])
    quad = cv2.transform(corners[None], m)[0]
    plan = plan_crops(reading_quads([quad]), 48, 16, 1600)
    assert plan.widths[0] == 48 * 6  # 120 / 20, at height 48
    crop = cut_crop(rotated, plan.corners[0], int(plan.widths[0]), 48)
    assert crop.shape == (48, 288, 3)
    assert crop[4:-4, 8:-8].mean() > 240  # the whole bar, nothing of the black around it


def test_tall_crops_are_turned_and_degenerate_ones_skipped():
    tall = np.float32([[10, 10], [30, 10], [30, 110], [10, 110]])   # 20 wide, 100 high
    flat = np.float32([[0, 0], [50, 0], [50, 0.2], [0, 0.2]])        # rectifies to nothing
    plan = plan_crops(reading_quads([tall, flat]), 48, 16, 1600)
    assert plan.valid.tolist() == [True, False]
    assert plan.widths[0] == 48 * 5  # the long side runs along the crop


def test_a_polygon_far_outside_the_image_is_cut_in_bounded_memory():
    """Its first warp, at the text's own size, asked for terabytes (from the Python API, where
    polygons are not clipped to the frame)."""
    from pipeline.reading.crops import cut_crop

    image = np.full((120, 160, 3), 200, np.uint8)
    huge = np.float32([[0, 0], [4e6, 0], [4e6, 6e5], [0, 6e5]])
    crop = cut_crop(image, huge, 320, 48)
    assert crop.shape == (48, 320, 3) and crop.dtype == np.uint8


def test_polygons_become_their_minimum_area_rectangle():
    octagon = np.float32([[10, 0], [90, 0], [100, 10], [100, 30], [90, 40], [10, 40], [0, 30],
                          [0, 10]])
    quad = reading_quads([octagon])[0]
    np.testing.assert_allclose(quad, [[0, 0], [100, 0], [100, 40], [0, 40]], atol=1e-4)


def test_a_margin_grows_quads_along_their_own_axes_by_their_height():
    flat = np.float32([[10, 10], [110, 10], [110, 30], [10, 30]])  # 100 x 20
    np.testing.assert_allclose(pad_quads(flat, 0.25)[0], [[5, 5], [115, 5], [115, 35], [5, 35]])
    import cv2

    m = cv2.getRotationMatrix2D((60, 20), 30, 1.0)
    grown = pad_quads(cv2.transform(flat[None], m)[0], 0.25)[0]
    np.testing.assert_allclose(grown, cv2.transform(pad_quads(flat, 0.25), m)[0], atol=1e-3)
    tall = np.float32([[0, 0], [20, 0], [20, 100], [0, 100]])  # the short side sets the margin
    np.testing.assert_allclose(pad_quads(tall, 0.5)[0], [[-10, -10], [30, -10], [30, 110], [-10, 110]])
    assert pad_quads(flat, 0.0)[0].tolist() == flat.tolist()


def test_batches_group_similar_widths_and_stay_bounded():
    widths = np.array([300, 40, 900, 50, 310, 45])
    plan = type("Plan", (), {"valid": np.ones(6, bool), "widths": widths})
    batches = crop_batches(plan, 2)
    assert [sorted(widths[b].tolist()) for b in batches] == [[40, 45], [50, 300], [310, 900]]


# -- the recognizer's errors ------------------------------------------------------------------
def _tiny_ctc_model(path, classes=4, metadata=None, batch="N"):
    """A CTC-shaped ONNX: (N, 3, 48, W) -> mean over H -> (N, W, 3) -> first `classes` channels
    (`batch`: a fixed batch size in place of N)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
         helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1])],
        "tiny_ctc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 48, "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, "W", classes])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def test_a_detector_is_refused_as_a_recognizer():
    with pytest.raises(ModelError, match="not CTC-shaped"):
        Recognizer(default_model_path(), device="cpu")


def test_a_dictionary_that_does_not_match_the_classes_is_refused(tmp_path):
    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3)
    words = tmp_path / "dict.txt"
    words.write_text("a\nb\nc\nd\n", encoding="utf-8")
    with pytest.raises(ModelError, match="4 characters but the recognizer has 3 classes"):
        Recognizer(model, words, device="cpu")
    with pytest.raises(ModelError, match="no dictionary; pass --rec-dict"):
        Recognizer(model, device="cpu")


def test_a_recognizer_refused_releases_its_session(tmp_path):
    from engine.loader import load_runner

    runner = load_runner(_tiny_ctc_model(tmp_path / "tiny.onnx", classes=3), device="cpu")
    with pytest.raises(ModelError, match="no dictionary"):  # a session (GPU memory) stayed open
        Recognizer(runner)
    assert not runner.is_active


def _spelling_recognizer(tmp_path):
    """A tiny CTC recognizer reading each crop column's brightest channel (blank / 'a' / space),
    and a crop it reads as "aa a"."""
    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    spec = RecSpec(bgr=True, mean=(0, 0, 0), std=(1, 1, 1), min_width=4, width_step=4)
    steps = [0, 1, 1, 0, 1, 2, 1, 0]  # blank a a blank a space a blank -> "aa a"
    crop = np.zeros((48, 8, 3), np.uint8)
    crop[:, np.arange(8), steps] = 255
    return Recognizer(model, spec=spec, device="cpu"), crop


def test_the_runner_output_is_decoded_per_crop(tmp_path):
    """Crops whose channels spell blank / 'a' / space run through ONNX Runtime and decode."""
    recognizer, crop = _spelling_recognizer(tmp_path)
    with recognizer as rec:
        texts, conf = rec.recognize([crop, np.zeros((48, 4, 3), np.uint8)])
    assert texts[0] == "aa a" and conf[0] == 1.0
    assert texts[1] == ""  # all channels equal: the first (blank) wins


def test_empty_and_greyscale_crops_are_read_not_a_crash(tmp_path):
    """An empty crop stopped recognize() with OpenCV's assertion (warpPerspective), a
    greyscale one with a NumPy broadcasting error."""
    recognizer, crop = _spelling_recognizer(tmp_path)
    with recognizer as rec:
        texts, conf = rec.recognize([np.zeros((0, 10, 3), np.uint8), crop,
                                     np.zeros((12, 0), np.uint8), np.full((48, 8), 9, np.uint8)])
        assert rec.crops_read == 2
    assert texts == ["", "aa a", "", ""] and conf.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_the_margin_reaches_the_recognizers_crops(tmp_path):
    """A 96 x 24 box is a 192-wide crop; with a margin of half its height, 120 x 48: 120 wide."""
    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    dets = Detections((np.float32([[20, 20], [116, 20], [116, 44], [20, 44]]),), np.ones(1))
    widths = []
    for margin in (0.0, 0.5):
        with Recognizer(model, spec=RecSpec(margin=margin), device="cpu") as rec:
            decode = rec._infer_decode
            rec._infer_decode = lambda batch: (widths.append(batch.shape[-1]), decode(batch))[1]
            rec.read(np.zeros((100, 200, 3), np.uint8), dets)
    assert widths == [192, 128]


def test_a_polygon_that_rectifies_to_nothing_is_a_counted_skip(tmp_path):
    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    dets = Detections.from_quads(np.float32([[[0, 0], [50, 0], [50, 0.1], [0, 0.1]],
                                             [[0, 0], [40, 0], [40, 20], [0, 20]]]), [1, 1])
    with Recognizer(model, device="cpu") as rec:
        read = rec.read(np.zeros((30, 60, 3), np.uint8), dets)
        assert rec.describe()["skipped_unreadable"] == 1 and rec.crops_read == 1
    assert read.texts[0] == "" and read.text_scores[0] == 0


def test_a_greyscale_frame_is_read_as_the_detector_takes_it(tmp_path):
    """A Source of one's own giving grey frames ran with read=False and failed with read=True
    (operands could not be broadcast): the detector takes grey, the recognizer did not."""
    from engine.errors import ShapeError

    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    dets = Detections.from_quads(np.float32([[[0, 0], [40, 0], [40, 20], [0, 20]]]), [1])
    with Recognizer(model, device="cpu") as rec:
        colour = rec.read(np.full((30, 60, 3), 80, np.uint8), dets)
        for grey in (np.full((30, 60), 80, np.uint8), np.full((30, 60, 1), 80, np.uint8)):
            read = rec.read(grey, dets)
            assert read.texts == colour.texts and read.text_scores == colour.text_scores
        with pytest.raises(ShapeError, match=r"expected an HxWx3 uint8 BGR image, got \(30, 60, 4\)"):
            rec.read(np.zeros((30, 60, 4), np.uint8), dets)


def runners_the_flags_ask_for(monkeypatch, module, cases):
    """(path, backend, options) that `dbrt <command> <argv> --backend onnxruntime` asks
    `module`'s load_runner for when it builds its recognizer (nothing loaded), per case."""
    import argparse

    from pipeline.commands import _model

    asked = []

    class Asked(Exception):
        pass

    def load_runner(path, backend, device, options):
        asked.append((str(path), backend, options))
        raise Asked()

    monkeypatch.setattr(module, "load_runner", load_runner)
    for command, argv in cases:
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        args = parser.parse_args(argv + ["--backend", "onnxruntime"])
        args.read = getattr(args, "read", False) or getattr(args, "e2e", False)  # as eval sets it
        with pytest.raises(Asked):
            _model.build_recognizer(args)
    return asked


def test_the_commands_read_on_the_backend_they_are_given(monkeypatch):
    """`dbrt run / eval --backend onnxruntime --read` built the recognizer with backend auto:
    a TensorRT engine where TensorRT is usable, and --backend tensorrt read on ONNX Runtime."""
    from pipeline.commands import eval as eval_cmd, run as run_cmd
    from pipeline.reading import recognizer

    asked = runners_the_flags_ask_for(monkeypatch, recognizer, (
        (run_cmd, ["--read"]), (run_cmd, ["--rec-margin", "0.1"]),
        (eval_cmd, ["--dataset", "x", "--e2e"])))
    assert [backend for _, backend, _ in asked] == ["onnxruntime"] * 3


def test_the_recognizer_takes_the_threads_and_spin_flags_of_the_command(monkeypatch):
    """dbrt run --read --threads 1 ran the recognizer on ONNX Runtime's default threads (every
    core); --ort-spin was not passed on either."""
    from pipeline.commands import eval as eval_cmd, run as run_cmd
    from pipeline.reading import recognizer

    asked = runners_the_flags_ask_for(monkeypatch, recognizer, (
        (run_cmd, ["--read", "--threads", "1"]),
        (run_cmd, ["--read", "--threads", "3", "--ort-spin", "on"]),
        (eval_cmd, ["--dataset", "x", "--e2e", "--threads", "1"]),
        (run_cmd, ["--read"])))
    assert [(o.threads, o.spin) for _, _, o in asked] == [(1, False), (3, True), (1, False), (0, False)]


# -- the PP-OCR rec model on a synthetic image ------------------------------------------------
def _words_image():
    from PIL import Image, ImageDraw, ImageFont

    from export.synth.fonts import font_paths, load_font

    fonts = [p for p in font_paths() if "DejaVuSans.ttf" in p] or [font_paths()[-1]]
    canvas = Image.new("RGB", (640, 240), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    words = {"Hello": (20, 20), "WORLD": (320, 30), "Exit 24": (40, 140), "café": (380, 150)}
    quads = []
    for word, (x, y) in words.items():
        x0, y0, x1, y1 = draw.textbbox((x, y), word, font=load_font(fonts[0], 44))
        draw.text((x, y), word, font=load_font(fonts[0], 44), fill=(20, 20, 60))
        quads.append([[x0 - 6, y0 - 6], [x1 + 6, y0 - 6], [x1 + 6, y1 + 6], [x0 - 6, y1 + 6]])
    image = np.ascontiguousarray(np.asarray(canvas)[:, :, ::-1])
    return image, Detections.from_quads(np.float32(quads), np.ones(len(quads))), list(words)


def test_the_ppocr_recognizer_reads_the_words_of_a_synthetic_image():
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    image, detections, words = _words_image()
    with Recognizer(device="cpu") as rec:
        read = rec.read(image, detections)
    assert read.data["text"].tolist() == words
    assert np.all(read.data["text_score"] > 0.8)
    assert read.scores.tolist() == detections.scores.tolist()  # the rest is untouched


def test_a_frame_with_a_thousand_texts_is_read_in_bounded_batches(tmp_path):
    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 600, (1000, 1, 2)) + np.float32([[0, 0], [1, 0], [1, 1], [0, 1]]) * (
        rng.uniform(8, 40, (1000, 1, 1)) * np.float32([rng.uniform(1, 8), 1]))
    seen = []
    with Recognizer(model, device="cpu", spec=RecSpec(batch_size=64)) as rec:
        infer = rec.runner.infer
        rec.runner.infer = lambda batch: seen.append(batch.shape) or infer(batch)
        read = rec.read(rng.integers(0, 255, (640, 640, 3), dtype=np.uint8),
                        Detections.from_quads(corners, np.ones(1000)))
    assert len(read.data["text"]) == 1000 and len(seen) == 16
    assert max(s[0] for s in seen) == 64


def test_a_recognizer_of_a_fixed_batch_size_is_sent_no_more_crops_a_call(tmp_path):
    """One exported for one crop a call was sent a frame's crops together, which ONNX Runtime
    refused (ShapeError) at the first frame with two texts, failing the run."""
    model = _tiny_ctc_model(tmp_path / "one.onnx", classes=3, metadata={"character": "a"}, batch=1)
    quads = np.float32([[[0, 0], [40, 0], [40, 20], [0, 20]], [[0, 30], [60, 30], [60, 50], [0, 50]],
                        [[50, 0], [90, 0], [90, 16], [50, 16]]])
    with Recognizer(model, device="cpu") as rec:
        read = rec.read(np.zeros((60, 100, 3), np.uint8), Detections.from_quads(quads, np.ones(3)))
        texts, _ = rec.recognize([np.zeros((48, w, 3), np.uint8) for w in (8, 16, 24)])
        assert rec.crops_read == 6
    assert len(read.texts) == 3 and len(texts) == 3


# -- the pipeline, the Python API, the outputs ----------------------------------------------
needs_rapidocr = pytest.mark.skipif(
    __import__("importlib").util.find_spec("rapidocr") is None,
    reason="the PP-OCR rec model comes with the rapidocr wheel")


def _fixed_quads_detector(detections, **kw):
    """A Detector (the shipped model) whose post-processing returns `detections`, so that the
    reading stage is tested apart from what the detector finds."""
    from pipeline.detector import Detector

    class FixedQuads(Detector):
        def postprocess(self, prob, letterboxes):
            return [detections for _ in letterboxes]

    return FixedQuads(device="cpu", **kw)


@needs_rapidocr
def test_the_pipeline_reads_in_its_own_stage_and_the_jsonl_carries_the_texts(tmp_path):
    import cv2

    from pipeline.runner import Pipeline
    from pipeline.sinks import JsonlSink

    image, detections, words = _words_image()
    cv2.imwrite(str(tmp_path / "words.png"), image)
    detector = _fixed_quads_detector(detections, read=True)
    pipe = Pipeline([str(tmp_path / "words.png")], detector, close_detector=True,
                    sinks=[JsonlSink(tmp_path / "out.jsonl")])
    results = list(pipe)
    assert results[0].detections.texts == words
    assert "read" in pipe.report()["stages"]
    back = Detections.from_json((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert back.texts == words
    np.testing.assert_allclose(back.text_scores, results[0].detections.text_scores, atol=1e-5)


def test_texts_are_empty_when_reading_is_off_and_survive_the_json_round_trip():
    from pipeline.detections import FrameResult
    from pipeline.sources import Frame

    plain = Detections.from_quads(np.float32([[[0, 0], [9, 0], [9, 5], [0, 5]]]), [0.5])
    assert plain.texts == [] and plain.text_scores.shape == (0,)
    read = Detections(plain.polygons, plain.scores, {"text": ["東京 café"], "text_score": [0.25]})
    line = FrameResult(Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0, "x"), read).to_json()
    back = Detections.from_json(line)
    assert back.texts == ["東京 café"] and back.text_scores.tolist() == [0.25]
    assert back[0].texts == ["東京 café"]  # a column slices with the rest


def test_text_is_drawn_with_a_real_font_only_where_there_is_text():
    pytest.importorskip("PIL")
    from pipeline.text_draw import TextAnnotator

    polys = np.float32([[[20, 60], [200, 60], [200, 100], [20, 100]],
                        [[20, 150], [200, 150], [200, 190], [20, 190]]])
    dets = Detections.from_quads(polys, [1, 1], {"text": ["Ünïcode 東京", ""],
                                                 "text_score": [0.9, 0.0]})
    scene = TextAnnotator().annotate(np.zeros((240, 320, 3), np.uint8), dets)
    assert scene[:60].any()           # a label above the first polygon
    assert not scene[110:].any()      # none for the polygon that has no text
    plain = np.zeros((240, 320, 3), np.uint8)
    assert not TextAnnotator().annotate(plain, dets[1:]).any()


def test_each_label_is_drawn_in_a_font_that_has_its_characters(monkeypatch):
    """The first font found (DejaVu Sans) drew every label, CJK ones as rows of missing-glyph
    boxes, whatever other font the system had."""
    pytest.importorskip("PIL")
    from export.synth.fonts import font_paths
    from pipeline import text_draw

    def found(name):
        return next((p for p in font_paths() if p.endswith("/" + name)), None)

    dejavu, liberation = found("DejaVuSans.ttf"), found("LiberationSans-Regular.ttf")
    if not (dejavu and liberation):
        pytest.skip("needs the DejaVu Sans and Liberation Sans fonts")
    used = []
    real = text_draw._font
    monkeypatch.setattr(text_draw, "_font", lambda path, size: used.append(path) or real(path, size))
    # Liberation Sans found first; it lacks Latin Extended-B's ƀ, which DejaVu Sans has
    monkeypatch.setattr(text_draw, "_FONT_NAMES", ("LiberationSans-Regular.ttf", "DejaVuSans.ttf"))
    text_draw.default_font_paths.cache_clear()
    try:
        for text, font in (("ƀar", dejavu), ("Cafe", liberation)):
            dets = Detections.from_quads(np.float32([[[20, 60], [200, 60], [200, 100], [20, 100]]]),
                                         [1], {"text": [text], "text_score": [0.9]})
            text_draw.TextAnnotator().annotate(np.zeros((120, 240, 3), np.uint8), dets)
            assert used[-1] == font, text
    finally:
        text_draw.default_font_paths.cache_clear()
    assert not text_draw._has_glyph(dejavu, "東") and text_draw._has_glyph(dejavu, "ƀ")
    assert text_draw.font_for("東京", (liberation, dejavu)) == liberation  # none has it: the first


@needs_rapidocr
def test_detector_read_reads_in_the_single_image_api():
    image, detections, words = _words_image()
    with _fixed_quads_detector(detections, read=True) as detector:
        assert detector.detect(image).texts == words
        reader = detector.describe()["reader"]
        assert reader["classes"] > 1000 and reader["margin"] == RecSpec().margin


@needs_rapidocr
def test_dbrt_run_read_writes_texts_and_bad_reader_files_are_one_line(tmp_path, capsys):
    import cv2

    from pipeline.cli import main

    image, _, words = _words_image()
    cv2.imwrite(str(tmp_path / "words.png"), image)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "words.png"), "--read", "--device", "cpu", "--quiet",
                 "--output", str(out)]) == 0
    import json

    line = json.loads((out / "detections.jsonl").read_text().splitlines()[0])
    assert all("text" in det and "text_score" in det for det in line["detections"])
    assert (out / "annotated").is_dir()
    capsys.readouterr()
    assert main(["run", str(tmp_path / "words.png"), "--rec-model", str(default_model_path()),
                 "--output", str(out)]) == 2
    assert "not CTC-shaped" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "words.png"), "--rec-dict", str(tmp_path / "none.txt"),
                 "--output", str(out)]) == 2
    assert f"--rec-dict {tmp_path / 'none.txt'}: file not found" in capsys.readouterr().err


@needs_rapidocr
@pytest.mark.slow
def test_the_shipped_detector_and_ppocr_read_the_demo_videos_words():
    """Frames of the demo video (export.synth) read with the shipped detector: all but a few
    confident readings are made of the demo's words (whole, or cut where the frame edge cuts the
    word), and most of the words in view are read whole."""
    from export.synth.fonts import FIXED_FONTS, missing_fonts
    from export.synth.video import demo_frames, demo_words

    if missing_fonts(FIXED_FONTS):  # Pillow's font draws the demo then: other words, other pictures
        pytest.skip("the demo video's DejaVu fonts are not all installed (Debian: fonts-dejavu-core, "
                    "fonts-dejavu-extra)")
    words = demo_words()
    frames = list(demo_frames(seconds=2.0))[::6]  # all four shots, 9 frames
    from pipeline.detector import Detector

    with Detector(read=True, device="cpu") as detector:
        results = detector.detect_batch(frames)
    read = [t for d in results for t, s in zip(d.texts, d.text_scores) if s >= 0.9]
    foreign = [text for text in read
               if not all(any(token in word for word in words) for token in text.split())]
    # a confident misreading can happen (a box one letter too wide reads 'T1NX31'): a few, no more
    assert len(foreign) <= max(1, len(read) // 20), foreign
    assert len(set(read) & words) >= 15


def test_a_recognizer_passed_to_detectors_stays_open_for_the_others(tmp_path):
    from pipeline.detector import Detector

    from test_detector import BrightPixelRunner

    model = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    with Recognizer(model, device="cpu") as rec:
        first = Detector(BrightPixelRunner(), read=rec)
        second = Detector(BrightPixelRunner(), read=rec)
        first.close()
        assert rec.runner.is_active
        second.detect(np.zeros((64, 64, 3), np.uint8))
        second.close()


@pytest.mark.parametrize("turn", ["counterclockwise", "clockwise"])
def test_vertical_text_is_read_whichever_way_it_runs(turn):
    """A word turned a quarter reads bottom to top (counter-clockwise) or top to bottom: the
    tall crop is read both ways round and the more confident reading kept."""
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    import cv2

    image, detections, words = _words_image()
    x0, y0 = detections.polygons[0].min(0).astype(int)
    x1, y1 = detections.polygons[0].max(0).astype(int)
    word = np.ascontiguousarray(image[y0:y1, x0:x1])
    code = cv2.ROTATE_90_COUNTERCLOCKWISE if turn == "counterclockwise" else cv2.ROTATE_90_CLOCKWISE
    tall = cv2.copyMakeBorder(cv2.rotate(word, code), 10, 10, 10, 10, cv2.BORDER_CONSTANT,
                              value=(235, 235, 235))
    h, w = tall.shape[:2]
    quad = np.float32([[[10, 10], [w - 10, 10], [w - 10, h - 10], [10, h - 10]]])
    with Recognizer(device="cpu") as rec:
        read = rec.read(tall, Detections.from_quads(quad, [1.0]))
    assert read.texts == [words[0]] and read.text_scores[0] > 0.8
