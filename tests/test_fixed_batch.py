"""Models of a fixed batch size (an ONNX exported for 4 frames, a TensorRT engine built with
static shapes) and recognizers of a fixed input width. A shorter batch (a single image, the end
of a stream, a batch timeout) is padded up to the batch the model takes and the padding's outputs
dropped, so each frame's result is the one a model of any batch size gives; crops are resized to
the recognizer's height, squeezed to a fixed width when wider and right-padded up to it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from engine_helpers import trt  # noqa: F401
from test_parallel_runner import _onnx
from test_reading import _tiny_ctc_model

from engine.errors import ModelError
from engine.loader import RunnerOptions
from engine.onnxruntime.parallel import ParallelRunner
from engine.onnxruntime.runner import OnnxRuntimeRunner
from engine.shapes import ShapeProfile
from pipeline.batcher import batch_size
from pipeline.detector import Detector

ONE_THREAD = RunnerOptions(threads=1)


def _scenes(count: int, height: int = 64, width: int = 96):
    """Dark frames, each with a bright block of its own size (the toy model finds the block)."""
    frames = []
    for k in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[8 + 3 * k:30 + 4 * k, 6 + 5 * k:40 + 8 * k] = 255
        frames.append(frame)
    return frames


def _same_detections(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert len(a) == len(b) >= 1  # every scene has its block
        for pa, pb in zip(a.polygons, b.polygons):
            np.testing.assert_array_equal(pa, pb)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """(dynamic, fixed batch 4) detector-shaped ONNX toys of the same arithmetic."""
    folder = tmp_path_factory.mktemp("fixed_batch")
    return _onnx(folder / "dynamic.onnx"), _onnx(folder / "batch4.onnx", batch=4)


def _calls(runner) -> list:
    """The batch sizes `runner` is called with, from now on."""
    seen, infer = [], runner.infer
    runner.infer = lambda feed: seen.append(len(feed)) or infer(feed)
    return seen


@pytest.mark.parametrize("frames", [1, 2, 3, 5])
def test_a_fixed_batch_model_detects_what_a_dynamic_one_does(toys, frames):
    """A model exported for 4 frames a call was refused (ShapeError) for any other count:
    detect() of one image, detect_batch of 1, 2, 3 or 5 (4 + 1) images."""
    dynamic, fixed = toys
    images = _scenes(frames)
    with Detector(dynamic, preset="db", options=ONE_THREAD) as det:
        want = det.detect_batch(images)
    with Detector(fixed, preset="db", options=ONE_THREAD) as det:
        calls = _calls(det.runner)
        got = det.detect_batch(images)
        _same_detections([det.detect(images[0])], want[:1])
        assert (det.runner.min_batch, det.runner.max_batch) == (4, 4)
    _same_detections(got, want)
    assert calls == [4] * (-(-frames // 4)) + [4]


def test_the_pipeline_pads_the_end_of_a_stream_and_a_smaller_batch(toys, tmp_path):
    """Five frames of one source on a fixed-batch-4 model: unasked, the batch is the model's 4
    (a shorter one costs a whole call), the fifth frame padded; --batch 1 asks for no wait for
    other frames, each padded. Results equal the dynamic model's frame by frame."""
    import cv2

    from pipeline.runner import Pipeline

    dynamic, fixed = toys
    images = _scenes(5)
    for k, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"frame_{k}.png"), image)
    with Detector(dynamic, preset="db", options=ONE_THREAD) as det:
        want = det.detect_batch(images)
    for asked, batch, sizes in ((0, 4, {"4": 1, "1": 1}), (1, 1, {"1": 5})):
        detector = Detector(fixed, preset="db", options=ONE_THREAD)
        calls = _calls(detector.runner)
        pipe = Pipeline(str(tmp_path / "frame_*.png"), detector, batch=asked, close_detector=True)
        results = list(pipe)
        assert pipe.batch == batch and set(calls) == {4}
        assert pipe.report()["batch_size"]["histogram"] == sizes
        _same_detections([r.detections for r in results], want)


def test_the_batch_chosen_for_a_fixed_batch_model(toys):
    dynamic, fixed = toys
    with OnnxRuntimeRunner(fixed, device="cpu", threads=1) as runner:
        assert batch_size(0, 1, runner) == 4   # unasked: all the model takes (it was 1)
        assert batch_size(0, 9, runner) == 4   # never more
        assert batch_size(2, 1, runner) == 2   # asked for fewer: padded
        with pytest.raises(ModelError, match="--batch 5: the model takes at most 4 frames"):
            batch_size(5, 1, runner)
    with OnnxRuntimeRunner(dynamic, device="cpu", threads=1) as runner:
        assert runner.min_batch == 1 and batch_size(0, 1, runner) == 1


def test_parallel_sessions_of_a_fixed_batch_take_a_share_each(toys):
    """Two sessions of batch 4: a call takes 8 frames, 4 a session (fewer are padded)."""
    dynamic, fixed = toys
    images = _scenes(3)
    with Detector(dynamic, preset="db", options=ONE_THREAD) as det:
        want = det.detect_batch(images)
    with Detector(ParallelRunner.onnxruntime(fixed, sessions=2), preset="db") as det:
        _same_detections(det.detect_batch(images), want)
        assert (det.runner.min_batch, det.runner.max_batch) == (8, 8)
    with ParallelRunner.onnxruntime(dynamic, sessions=2) as runner:
        assert runner.min_batch == 1


def test_a_served_model_takes_one_frame_or_the_batch_its_dims_fix():
    """Triton batches a model of max_batch_size > 0 up to it; one that does not batch
    (max_batch_size 0) takes the batch its own dims fix, if any."""
    from engine.base import TensorInfo
    from engine.triton.model_info import ModelInfo
    from engine.triton.runner import TritonRunner

    def served(max_batch, dims):
        runner = TritonRunner.__new__(TritonRunner)  # no server: only what it learned from one
        runner._info = ModelInfo((TensorInfo("images", dims, "float32"),), (), max_batch, {}, {})
        runner._inputs = runner._info.inputs
        return runner

    assert served(8, (None, 3, None, None)).min_batch == 1
    assert served(0, (4, 3, 64, 96)).min_batch == 4
    assert served(0, (None, 3, 64, 96)).min_batch == 1
    # the most it takes too: a --batch above it was refused at the first call, not at the start
    assert [served(*case).max_batch for case in ((8, (None, 3, None, None)), (0, (4, 3, 64, 96)),
                                                 (0, (None, 3, 64, 96)))] == [8, 4, 0]
    from engine.errors import ModelError
    from pipeline.batcher import batch_size

    with pytest.raises(ModelError, match="--batch 8: the model takes at most 4 frames per call"):
        batch_size(8, 1, served(0, (4, 3, 64, 96)))


# -- TensorRT: an engine built with static shapes ---------------------------------------------
def _dynamic_detections(dynamic, frames: int):
    with Detector(dynamic, preset="db", input_size=(64, 96), backend="onnxruntime",
                  device="cpu", options=ONE_THREAD) as det:
        return det.detect_batch(_scenes(frames))


def test_an_engine_of_a_static_batch_is_fed_padded_batches(trt, toys, tmp_path):
    """An engine whose profile is batch 4 only (trtexec's static shapes) was refused any other
    batch."""
    from engine.tensorrt.build import BuildOptions, build_engine_file
    from engine.tensorrt.runner import TensorRTRunner

    dynamic, _ = toys
    engine = tmp_path / "static4.engine"
    static = ShapeProfile.from_hw((64, 96), (64, 96), (64, 96), batch=(4, 4, 4))
    build_engine_file(dynamic, engine, BuildOptions(profile=static))
    want = _dynamic_detections(dynamic, 5)
    with Detector(TensorRTRunner(engine), preset="db", input_size=(64, 96)) as det:
        for frames in (1, 2, 3, 5):
            _same_detections(det.detect_batch(_scenes(frames)), want[:frames])
        assert (det.runner.min_batch, det.runner.max_batch) == (4, 4)


def test_an_onnx_of_a_fixed_batch_builds_an_engine_of_that_batch(trt, toys, tmp_path, monkeypatch):
    """The engine built from an ONNX of a fixed batch 4 took the resize rule's profile (batch
    1..4), which TensorRT refused ('disagrees with the model input in axis 0'): a default
    profile now keeps the axes the model fixes."""
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    dynamic, fixed = toys
    want = _dynamic_detections(dynamic, 3)
    with Detector(fixed, preset="db", backend="tensorrt", input_size=(64, 96)) as det:
        _same_detections(det.detect_batch(_scenes(3)), want[:3])
        profile = det.runner.profiles["images"]
        assert (profile.min[0], profile.max[0], det.runner.min_batch) == (4, 4, 4)


# -- the recognizer ---------------------------------------------------------------------------
def _fixed(path, out, batch=None, width=None):
    """`path`'s model with its input's batch and / or width fixed (an export without those
    dynamic axes)."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, size in ((0, batch), (3, width)):
        if size:
            dims[axis].Clear()
            dims[axis].dim_value = size
    onnx.save(model, str(out))
    return out


def test_a_recognizer_of_a_fixed_batch_and_width_reads_padded_crops(tmp_path):
    """Crops spelling 'aa a' and nothing, 8 and 4 pixels wide, and one 200 wide (squeezed):
    a model of batch 4 and width 64 gets every call as (4, 3, 48, 64), each crop at the
    height, left-aligned and padded with zeros, and reads what the dynamic model reads."""
    from pipeline.reading import Recognizer, RecSpec

    dynamic = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    fixed = _fixed(dynamic, tmp_path / "fixed.onnx", batch=4, width=64)
    spec = RecSpec(bgr=True, mean=(0, 0, 0), std=(1, 1, 1), min_width=4, width_step=4)
    crop = np.zeros((48, 8, 3), np.uint8)
    crop[:, np.arange(8), [0, 1, 1, 0, 1, 2, 1, 0]] = 255  # blank a a blank a space a blank
    wide = np.zeros((48, 200, 3), np.uint8)
    wide[:, :100, 1] = 255  # 'a' then blanks: 'a' however squeezed
    crops = [crop, np.zeros((48, 4, 3), np.uint8), wide]
    with Recognizer(dynamic, spec=spec, device="cpu") as rec:
        want = rec.recognize(crops)
    with Recognizer(fixed, spec=spec, device="cpu") as rec:
        batches, infer = [], rec.runner.infer
        rec.runner.infer = lambda batch: batches.append(batch) or infer(batch)
        got = rec.recognize(crops)
        assert (rec.min_batch, rec.batch_size, rec.spec.max_width) == (4, 4, 64)
    assert got[0] == want[0] == ["aa a", "", "a"]
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    assert [b.shape for b in batches] == [(4, 3, 48, 64)]
    sent = batches[0]  # by width: the 4-wide crop, the 8-wide one, the squeezed one, its copy
    assert sent[1, 1, 0, 1] == 1.0 and sent[1, :, :, 8:].max() == sent[0].max() == 0
    assert sent[2, 1, 0, :30].min() == 1.0 and sent[2, 1, :, 34:].max() == 0
    np.testing.assert_array_equal(sent[3], sent[2])  # the padding: copies of the last crop


def test_a_recognizer_of_a_fixed_width_builds_its_engine_at_that_width(tmp_path, monkeypatch):
    """The recognizer's engine profile (widths 4..1600 here) keeps the width the model fixes
    (TensorRT 10: the tiny recognizer is opset 18, which 8.6's parser does not take)."""
    import trt_double

    from pipeline.reading import Recognizer, RecSpec

    trt_double.install(monkeypatch, "10.x")
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    dynamic = _tiny_ctc_model(tmp_path / "tiny.onnx", classes=3, metadata={"character": "a"})
    fixed = _fixed(dynamic, tmp_path / "fixed.onnx", width=64)
    spec = RecSpec(bgr=True, mean=(0, 0, 0), std=(1, 1, 1), min_width=4, width_step=4)
    crop = np.zeros((48, 8, 3), np.uint8)
    crop[:, :2, 1] = 255
    with Recognizer(fixed, spec=spec, backend="tensorrt") as rec:
        profile = rec.runner.profiles["x"]
        assert profile.min[3] == profile.max[3] == 64 and profile.max[0] == spec.batch_size
        assert rec.recognize([crop, crop])[0] == ["a", "a"]


def test_the_fixed_width_ppocr_recognizer_reads_as_paddleocr_feeds_it(tmp_path, shared_data):
    """PP-OCR rec re-exported with a fixed width of 320 was refused every crop batch of another
    width. Fed as PaddleOCR feeds such a model (resized to height 48 keeping the aspect ratio,
    a wider crop squeezed to 320, right-padded with zeros), it reads on a realdev photo exactly
    what the dynamic model reads when its batches are padded to 320 too. (Against dbrt's own
    narrow padding of the dynamic model, some readings differ: the model sees the padding.)"""
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    import json

    import cv2

    from pipeline.detections import Detections
    from pipeline.reading import Recognizer, RecSpec
    from pipeline.reading.recognizer import default_rec_model_path

    realdev = shared_data / "realdev"
    truth = {item["image"]: item for item in json.loads((realdev / "gt.json").read_text())}
    item = truth["ic15_train_img_7.jpg"]  # lines of text wider than 320 at height 48 among them
    quads = np.float32([p for p in item["polygons"] if len(p) == 4])
    image = cv2.imread(str(realdev / "images" / item["image"]))
    detections = Detections.from_quads(quads, np.ones(len(quads)))
    fixed = _fixed(default_rec_model_path(), tmp_path / "rec320.onnx", width=320)
    with Recognizer(device="cpu", spec=RecSpec(max_width=320, width_step=320)) as rec:
        want = rec.read(image, detections)
    with Recognizer(fixed, device="cpu") as rec:
        got = rec.read(image, detections)
        assert rec.spec.max_width == 320
    assert got.texts == want.texts and sum(len(t) for t in got.texts) > 20
    np.testing.assert_allclose(got.text_scores, want.text_scores, atol=1e-4)
