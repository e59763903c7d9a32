"""Detector: the single-image API, option routing, and frame-pixel boxes from a known map."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from engine.base import Runner, TensorInfo
from engine.errors import ModelError, ShapeError
from engine.loader import RunnerOptions
from dbnet.spec import ModelSpec
from pipeline.detections import Detections
from pipeline.detector import Detector


class BrightPixelRunner(Runner):
    """A stand-in network: probability 1 where the (normalised) input is bright, else 0."""

    name = "bright"

    def __init__(self, spec: ModelSpec = ModelSpec().replace(limit_side=64), logits=False):
        super().__init__()
        self._spec = spec.replace(output_is_prob=not logits)
        self.logits = logits
        self.batches = []

    inputs = (TensorInfo("images", (None, 3, None, None), "float32"),)
    outputs = (TensorInfo("prob", (None, 1, None, None), "float32"),)

    @property
    def metadata(self):
        return {"dbrt": self._spec.to_json()}

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _infer(self, feed):
        x = feed["images"]
        self.batches.append(x.shape)
        prob = (x[:, :1] > 0.2).astype(np.float32)
        return {"prob": prob * 20 - 10 if self.logits else prob}


def scene(h=100, w=200, box=(20, 40, 60, 160)):
    image = np.zeros((h, w, 3), np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = 255
    return image


@pytest.mark.parametrize("logits", [False, True])
def test_detect_finds_the_bright_box_in_frame_pixels(logits):
    with Detector(BrightPixelRunner(logits=logits)) as det:
        found = det.detect(scene())
    assert isinstance(found, Detections) and len(found) == 1
    x0, y0, x1, y1 = found.boxes_xyxy[0]
    # the unclipped box surrounds the bright block (rows 20..60, columns 40..160) by < 30 px
    assert 10 <= x0 <= 40 and 0 <= y0 <= 20 and 160 <= x1 <= 190 and 60 <= y1 <= 80
    assert found.scores[0] > 0.9


def test_keep_aspect_and_fixed_input_size_map_back_to_the_same_place():
    runner = BrightPixelRunner()
    det = Detector(runner, lambda spec: spec.replace(keep_aspect=True), input_size=(96, 96))
    found = det.detect(scene())
    assert runner.batches[-1] == (1, 3, 96, 96)
    x0, y0, x1, y1 = found.boxes_xyxy[0]
    assert 10 <= x0 <= 40 and 160 <= x1 <= 190 and 0 <= y0 <= 20 and 60 <= y1 <= 80


def test_detect_batch_keeps_order_and_groups_sizes(tmp_path):
    import cv2

    runner = BrightPixelRunner()
    det = Detector(runner)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), scene(64, 64, (10, 10, 30, 50)))
    results = det.detect_batch([scene(), path, scene(), np.zeros((64, 64), np.uint8)])
    assert [len(r) for r in results] == [1, 1, 1, 0]
    assert results[1].boxes_xyxy[0, 3] <= 64 < results[0].boxes_xyxy[0, 2]  # each in its own frame
    assert sorted(b[0] for b in runner.batches) == [2, 2]  # two sizes -> two engine calls


def test_detect_batch_never_sends_more_than_the_model_takes():
    """A served model's max_batch_size (or an engine profile's largest batch): 5 images of one
    size go as 2 + 2 + 1, in order (they went as one call the server refused)."""
    runner = BrightPixelRunner()
    runner.max_batch = 2
    det = Detector(runner)
    images = [scene(64, 96, (10, 10, 20 + 5 * k, 50)) for k in range(5)]
    results = det.detect_batch(images)
    assert [b[0] for b in runner.batches] == [2, 2, 1]
    heights = [float(r.boxes_xyxy[0, 3] - r.boxes_xyxy[0, 1]) for r in results]
    assert heights == sorted(set(heights))  # each result on its own image


def test_spec_changes_reach_resize_and_postprocessing():
    det = Detector(BrightPixelRunner(), lambda spec: spec.replace(
        thresh=0.5, box_thresh=0.2, unclip_ratio=2.0, limit_side=128, max_candidates=7,
        score_mode="slow"))
    assert det.spec.post.thresh == 0.5 and det.spec.resize.limit_side == 128
    cfg = det.post.config
    assert (cfg.thresh, cfg.box_thresh, cfg.unclip_ratio, cfg.max_candidates, cfg.score_mode) == \
        (0.5, 0.2, 2.0, 7, "slow")
    assert det.input_size_for(100, 200) == (128, 256)
    with pytest.raises(ModelError, match="unknown model option"):
        Detector(BrightPixelRunner(), lambda spec: spec.replace(colour="BGR"))
    with pytest.raises(ModelError, match="already made"):
        Detector(BrightPixelRunner(), options=RunnerOptions(threads=2))


def test_preset_extra_options_are_applied():
    det = Detector(BrightPixelRunner(), preset="ppocr")
    assert det.post.config.use_dilation is True and det.spec.arch == "ppocr-det"


def test_bad_images_and_missing_model():
    det = Detector(BrightPixelRunner())
    with pytest.raises(ShapeError):
        det.detect(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ShapeError):
        det.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ModelError, match="not found"):
        Detector("/nonexistent/model.onnx")


def test_tiny_onnx_and_untrained_flag(tmp_path, tiny_onnx):
    with Detector(tiny_onnx, options=RunnerOptions(threads=1)) as det:
        assert det.untrained is False and det.runner.name == "onnxruntime"
        out = det.detect(scene(64, 96))
        assert all(len(p) == 4 for p in out.polygons)
        assert (out.boxes_xyxy[:, 2:] <= [96, 64]).all()
    proto = onnx.load(str(tiny_onnx))
    entry = next(p for p in proto.metadata_props if p.key == "dbrt")
    spec = ModelSpec.from_json(entry.value)
    entry.value = spec.replace(untrained=True).to_json()
    flagged = tmp_path / "untrained.onnx"
    onnx.save(proto, str(flagged))
    with Detector(flagged, options=RunnerOptions(threads=1)) as det:
        assert det.untrained is True and det.describe()["untrained"] is True


def test_the_report_says_whether_the_compiled_post_processing_steps_run(tiny_onnx, monkeypatch):
    from conftest import compiled_steps_built, use_numpy_postprocess

    with Detector(tiny_onnx, options=RunnerOptions(threads=1)) as det:
        built = compiled_steps_built()
        assert det.describe()["post_compiled"] == dict(steps=built, scores=built)
        use_numpy_postprocess(monkeypatch)
        assert det.describe()["post_compiled"] == dict(steps=False, scores=False)


def test_grey_images_in_any_layout_and_a_missing_file_named(tmp_path):
    from engine.errors import SourceError

    det = Detector(BrightPixelRunner())
    grey = scene()[..., 0]
    assert len(det.detect(grey)) == len(det.detect(grey[..., None])) == 1
    with pytest.raises(SourceError, match="no such file"):
        det.detect(str(tmp_path / "missing.jpg"))
    det.close()
    with pytest.raises(Exception, match="not active: closed"):
        det.detect(scene())


def test_common_mistakes_in_the_arguments_are_named():
    """A spec function without `return`, a dict of changes and an int input size were
    AttributeError / TypeError tracebacks from deep inside; a dict now changes the spec."""
    assert Detector(BrightPixelRunner(), {"box_thresh": 0.2}).post.config.box_thresh == 0.2
    with pytest.raises(TypeError, match="returned NoneType, not a ModelSpec .a missing return"):
        Detector(BrightPixelRunner(), lambda spec: None)
    with pytest.raises(TypeError, match="spec= takes a ModelSpec, a dict of changes"):
        Detector(BrightPixelRunner(), 0.5)
    with pytest.raises(ShapeError, match=r"input_size must be \(height, width\), got 640"):
        Detector(BrightPixelRunner(), input_size=640)
    from engine.errors import SourceError
    from pipeline.runner import Pipeline

    with pytest.raises(SourceError, match="not ndarray .images in memory: Detector.detect"):
        Pipeline([np.zeros((8, 8, 3), np.uint8)], Detector(BrightPixelRunner()))


def test_wrong_arguments_name_what_is_expected(tiny_onnx):
    """detect_batch("photo.jpg") read the name letter by letter ('no such file: p'); a float
    input size was cut silently; a dict of options failed deep inside as an AttributeError."""
    det = Detector(BrightPixelRunner())
    with pytest.raises(TypeError, match="detect_batch takes a list of images, got one str"):
        det.detect_batch("photo.jpg")
    with pytest.raises(TypeError, match=r"an encoded image \(bytes, e.g. a web upload\) is not taken"):
        det.detect(b"\xff\xd8\xff\xe0 JPEG bytes")  # said only 'expected HxWx3 ... got () |S9'
    with pytest.raises(ShapeError, match=r"got \(96.9, 160\) \(whole pixels\)"):
        Detector(BrightPixelRunner(), input_size=(96.9, 160))
    with pytest.raises(TypeError, match="options: expected an engine.loader.RunnerOptions"):
        Detector(tiny_onnx, options={"threads": 2})


def test_detections_with_a_nan_score_equal_themselves():
    dets = Detections.from_quads(np.float32([[[0, 0], [4, 0], [4, 2], [0, 2]]]), [np.nan],
                                 {"text": np.asarray(["A"]), "text_score": np.asarray([np.nan])})
    assert dets == dets and Detections.from_records(dets.to_records()) == dets


def test_the_input_cap_warning_points_at_the_callers_line():
    """It pointed at dbrt's own _group_by (one level deeper than the fixed stacklevel)."""
    from engine.errors import DbrtWarning

    det = Detector(BrightPixelRunner(ModelSpec().replace(limit_side=736, limit_type="min_at_least")))
    with pytest.warns(DbrtWarning, match="capped at") as caught:
        det.detect(np.zeros((30, 400, 3), np.uint8))
    assert caught[0].filename == __file__
