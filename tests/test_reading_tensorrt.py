"""The recognizer on TensorRT, on the test double (tests/trt_double; real TensorRT is not
installable where these tests run): a dynamic-width profile at the recognizer's height (48, not a
multiple of the detector's 32), the engine cache, and the same texts as ONNX Runtime."""
import numpy as np
import pytest
from engine_helpers import trt  # noqa: F401

from engine.errors import ShapeError
from engine.shapes import ShapeProfile
from engine.tensorrt.runner import TensorRTRunner
from engine.onnxruntime.runner import OnnxRuntimeRunner
from pipeline.reading import Recognizer, RecSpec

# crops whose channels spell blank / "a" / space in the tiny model below
SPEC = RecSpec(bgr=True, mean=(0, 0, 0), std=(1, 1, 1), min_width=4, max_width=256,
               width_step=32, batch_size=4)


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tiny_ctc_model(path, classes=3):
    """(N, 3, 48, W) -> mean over H -> (N, W, 3), opset 17 (TensorRT 8.6 reads it too)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0),
         helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1])],
        "tiny_ctc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 48, "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "W", classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="character", value="a")
    onnx.save(model, path)
    return path


def _crops(widths=(8, 40, 100, 200, 33)):
    """Crops spelling 'a' runs: a blank, then 'a' on every other column block."""
    crops = []
    for w in widths:
        crop = np.zeros((48, w, 3), np.uint8)
        steps = (np.arange(w) // 3) % 2  # blank, a, blank, a ...
        crop[:, np.arange(w), steps] = 255
        crops.append(crop)
    return crops


def test_the_recognizer_profile_has_height_48_and_bucketed_widths():
    profile = RecSpec().profile()
    assert profile == ShapeProfile((1, 3, 48, 32), (8, 3, 48, 320), (32, 3, 48, 1600), (48, 32))
    assert profile.to_dict()["multiples"] == [48, 32]
    assert ShapeProfile.from_dict(profile.to_dict()) == profile
    with pytest.raises(ShapeError, match="H and W must be multiples of 32"):
        profile.validate(32)  # the detector's rule refuses height 48
    with pytest.raises(ShapeError, match="H must be a multiple of 48 and W of 32"):
        ShapeProfile.from_hw((48, 40), (48, 320), (48, 1600), multiples=(48, 32)).validate()
    # a detector's profile keeps its record and cache key: no multiples written
    assert "multiples" not in ShapeProfile.from_hw((32, 32), (64, 64), (128, 128)).to_dict()


def test_tensorrt_reads_as_onnx_runtime_and_builds_once(trt, tmp_path, engine_cache):
    model = _tiny_ctc_model(tmp_path / "tiny_ctc.onnx")
    crops = _crops()
    with Recognizer(model, spec=SPEC, backend="onnxruntime", device="cpu") as rec:
        assert isinstance(rec.runner, OnnxRuntimeRunner)
        want = rec.recognize(crops)
    with Recognizer(model, spec=SPEC, backend="tensorrt") as rec:
        assert isinstance(rec.runner, TensorRTRunner)
        got = rec.recognize(crops)  # widths 32..224 in two batches of the one profile
        assert rec.runner.record.profile == SPEC.profile()
    assert got[0] == want[0] and all(t.startswith("a") for t in got[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    assert trt._double.builds == 1 and len(list(engine_cache.glob("*.engine"))) == 1
    with Recognizer(model, spec=SPEC) as rec:  # auto: TensorRT is usable, the cached engine
        assert isinstance(rec.runner, TensorRTRunner)
        assert rec.recognize(crops)[0] == want[0]
    assert trt._double.builds == 1
    with Recognizer(model, spec=SPEC, device="cpu") as rec:
        assert isinstance(rec.runner, OnnxRuntimeRunner)


def test_a_batch_outside_the_engine_profile_is_one_clear_error(trt, tmp_path):
    from engine.loader import RunnerOptions

    model = _tiny_ctc_model(tmp_path / "tiny_ctc.onnx")
    narrow = SPEC.replace(max_width=64).profile()  # an engine built for crops up to 64 wide
    options = RunnerOptions(profile=narrow)
    with Recognizer(model, spec=SPEC, backend="tensorrt", options=options) as rec:
        texts, _ = rec.recognize(_crops((20, 60)))  # widths 32 and 64: inside
        assert all(text.startswith("a") for text in texts)
        with pytest.raises(ShapeError, match="outside the engine's profile"):
            rec.recognize(_crops((200,)))


@pytest.mark.parametrize("trt", ["10.x"], indirect=True)
def test_the_ppocr_rec_builds_with_its_profile_and_reads_the_words(trt, tmp_path):
    """PP-OCRv6 rec small (the rapidocr wheel's) through the engine cache: its input is
    (N, 3, 48, W) with W dynamic; the double computes with ONNX Runtime, so the words must come
    out exactly as they do there (TensorRT's own FP16 numerics are not reproduced)."""
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    from test_reading import _words_image

    image, detections, words = _words_image()
    with Recognizer(backend="tensorrt") as rec:
        assert isinstance(rec.runner, TensorRTRunner)
        assert rec.runner.record.profile == RecSpec().profile()
        read = rec.read(image, detections)
    assert read.texts == words and trt._double.builds == 1
