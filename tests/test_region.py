"""The region of interest (--roi, Detector(roi=)): parsing, clipping and errors; only the region
reaches the network (CPU path and the GPU kernel's NumPy twin) and boxes come back in frame
pixels; text outside it is not detected."""
from __future__ import annotations

import json
import threading
import time
import warnings

import cv2
import numpy as np
import pytest

from dbnet.spec import ModelSpec, preset
from engine.errors import DbrtWarning, ShapeError
from pipeline.cli import main
from pipeline.detector import Detector
from pipeline.draw import RegionAnnotator
from pipeline.gpu_preprocess import emulate
from pipeline.postprocess import DBPostprocessor, PostprocessConfig, gpu
from pipeline.postprocess.postprocessor import to_detections
from pipeline.preprocess import make_letterbox, preprocess, preprocess_batch
from pipeline.region import Region, RegionError

from test_detector import BrightPixelRunner, scene


# -- the region: parsing, clipping, errors --------------------------------------------------------
@pytest.mark.parametrize("text, pixels_in_1280x720", [
    ("100,400,800,300", (100, 400, 800, 300)),
    (" 100, 400 ,800,300 ", (100, 400, 800, 300)),
    ("0.1,0.5,0.8,0.4", (128, 360, 1024, 288)),
    ("0,0,1,1", (0, 0, 1, 1)),                       # whole numbers: pixels, never fractions
    ("0.0,0,1,1", (0, 0, 1280, 720)),                # a decimal point: fractions
    ("1000,600,1000,1000", (1000, 600, 280, 120)),   # past the frame: clipped
    ("-10,-20,100,100", (0, 0, 90, 80)),
    ("0.5,0.5,0.8,0.8", (640, 360, 640, 360)),
])
def test_a_region_in_pixels_or_fractions_is_clipped_to_the_frame(text, pixels_in_1280x720):
    assert Region.parse(text).in_frame(720, 1280) == pixels_in_1280x720


@pytest.mark.parametrize("text, reason", [
    ("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"), ("1,2,3,4,5", "four numbers"),
    ("10,10,0,100", "empty"), ("10,10,100,-5", "empty"), ("0.1,0.1,0,0.5", "empty"),
    ("0.1,0.5,1.5,0.4", "from 0 to 1"), ("100.5,0,10,10", "from 0 to 1"),
    ("nan,0,0.5,0.5", "finite"),
])
def test_a_bad_region_is_refused_before_anything_runs(text, reason):
    with pytest.raises(RegionError, match=reason) as caught:
        Region.parse(text)
    assert str(caught.value).startswith(f"--roi {text}")


def test_a_region_that_leaves_nothing_of_a_frame_is_one_error_naming_roi():
    region = Region.parse("2000,0,100,100")
    assert region.in_frame(720, 2560) == (2000, 0, 100, 100)
    with pytest.raises(ShapeError, match=r"^--roi 2000,0,100,100: .*outside the 1280x720 frames"):
        region.in_frame(720, 1280)
    # a sliver that rounds to nothing is inside the frame: not said to lie outside it
    with pytest.raises(ShapeError, match="is less than a pixel of the 100x100 frames"):
        Region.parse("0.9999,0,0.0001,1").in_frame(100, 100)
    with pytest.raises(ShapeError, match="lies outside the 100x100 frames"):
        Region.parse("1.0,0,0.5,1").in_frame(100, 100)


def test_the_python_api_takes_tuples_strings_and_regions():
    assert Region.of(None) is None
    assert Region.of((1, 2, 3, 4)) == Region(1, 2, 3, 4)
    assert Region.of(np.array([1, 2, 3, 4])) == Region(1, 2, 3, 4)  # NumPy integers: pixels
    assert Region.of((0.1, 0.2, 0.5, 0.5)) == Region(0.1, 0.2, 0.5, 0.5, fractions=True)
    assert Region.of((0, 0, 1.0, 1)).fractions  # any float: fractions
    assert Region.of("0.1,0.2,0.5,0.5") == Region.parse("0.1,0.2,0.5,0.5")
    for bad in ((1, 2, 3), "1x2", 5, (1, 2, 3, True), (1, 2, 3, "4")):
        with pytest.raises(ShapeError):
            Region.of(bad)
    assert Region.parse("0.1,0.5,0.8,0.4").describe() == dict(x=0.1, y=0.5, w=0.8, h=0.4,
                                                               unit="fraction")
    assert str(Region.of((100, 400, 800, 300))) == "100,400,800,300"



@pytest.mark.parametrize("text", ["0.0,0,1,1", "1.0,0,1,1", "0.1,0.5,0.8,0.4", "100,400,800,300"])
def test_a_region_is_named_as_it_parses(text):
    """The header line and the --roi errors name the region: a fraction region of whole
    values (0.0,0,1,1, the whole frame) was named 0,0,1,1, which --roi reads as one pixel."""
    region = Region.parse(text)
    assert Region.parse(str(region)) == region
    assert str(region) == text

# -- preprocessing: the region alone reaches the input, both paths -------------------------------
REGIONS = [  # frame (h, w), region (x, y, w, h), network (H, W), keep_aspect
    ((506, 960), (300, 120, 400, 200), (224, 416), False),   # upscale: more pixels for the region
    ((506, 960), (0, 0, 960, 506), (256, 480), False),       # the whole frame
    ((720, 1280), (1000, 500, 280, 220), (256, 256), True),  # at the corner, letterboxed
    ((37, 53), (5, 7, 11, 13), (64, 32), False),             # odd sizes
]


@pytest.mark.parametrize("shape, region, size, keep_aspect", REGIONS)
def test_the_input_is_the_regions_crop_on_both_paths(rng, shape, region, size, keep_aspect):
    """CPU path and the GPU kernel's NumPy twin: the input of a frame's region is exactly the
    input of the region cut out as a frame of its own, and the Letterbox keeps the frame's size
    and the region (the kernel reads the uploaded whole frame from the region's origin)."""
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    x, y, w, h = region
    cut = np.ascontiguousarray(image[y:y + h, x:x + w])
    for spec in (ModelSpec(), preset("mmocr")):
        cpu, box = preprocess(image, spec, size, keep_aspect, region=region)
        np.testing.assert_array_equal(cpu, preprocess(cut, spec, size, keep_aspect)[0])
        assert (box.frame_h, box.frame_w, box.region, box.area) == (*shape, region, region)
        twin, twin_box = emulate(image, spec, size, keep_aspect, region)
        np.testing.assert_array_equal(twin, emulate(cut, spec, size, keep_aspect)[0])
        assert twin_box == box


def test_a_batch_of_frames_each_with_its_region():
    frames = [np.zeros((100, 200, 3), np.uint8), np.full((60, 80, 3), 255, np.uint8)]
    batch, boxes = preprocess_batch(frames, ModelSpec(), (64, 64), regions=[(150, 50, 50, 50), None])
    assert [b.area for b in boxes] == [(150, 50, 50, 50), (0, 0, 80, 60)]
    assert (batch[0] < 0).all() and (batch[1] > 0).all()


# -- post-processing: boxes in frame pixels -------------------------------------------------------
def _map_with_block(h=64, w=96, block=(20, 40, 30, 70)):
    prob = np.zeros((1, h, w), np.float32)
    y0, y1, x0, x1 = block
    prob[0, y0:y1, x0:x1] = 0.95
    return prob


def test_boxes_of_a_regions_map_come_back_in_frame_pixels_on_both_paths():
    """The map of a 192x128 region at (500, 300) of a 1280x720 frame (input 64x96, scale 0.5):
    each box is the whole-frame box of the same map moved by the origin, on the CPU path and
    the GPU path's code run with NumPy."""
    prob = _map_with_block()
    whole = make_letterbox(128, 192, 64, 96)
    inside = make_letterbox(720, 1280, 64, 96, region=(500, 300, 192, 128))
    config = PostprocessConfig()
    want = DBPostprocessor(config)(prob, [whole])[0]
    assert len(want) == 1
    got = DBPostprocessor(config)(prob, [inside])[0]
    np.testing.assert_array_equal(got.polygons[0], want.polygons[0] + [500, 300])
    assert got.scores[0] == want.scores[0]
    (polys, scores), = gpu.postprocess_batch(prob, [(64, 96)], config)
    twin = to_detections(polys, scores, inside)
    np.testing.assert_array_equal(twin.polygons[0], got.polygons[0])
    poly = DBPostprocessor(PostprocessConfig(box_type="poly"))
    np.testing.assert_array_equal(poly(prob, [inside])[0].polygons[0],
                                  poly(prob, [whole])[0].polygons[0] + [500, 300])


# -- the Detector ------------------------------------------------------------------------------
def test_the_detector_sees_only_the_region_and_answers_in_frame_pixels():
    """Two bright blocks; the region holds the right one: it is found where the whole-frame
    run finds it, the left one is not; the region is resized by the rule as a frame would be."""
    image = scene(120, 400, box=(30, 20, 70, 120))
    image[40:80, 250:360] = 255
    with Detector(BrightPixelRunner()) as det:
        both = det.detect(image)
    assert len(both) == 2
    right = both[both.boxes_xyxy[:, 0] > 200]
    rule = det.spec.resize
    for roi, (h, w) in (((220, 10, 170, 100), (100, 170)), ((0.55, 0.1, 0.4, 0.8), (96, 160)),
                        ("220,10,1000,1000", (110, 180))):  # clipped to the frame
        with Detector(BrightPixelRunner(), roi=roi) as det:
            found = det.detect(image)
            assert det.input_size_for(120, 400) == rule.input_size(h, w) != rule.input_size(120, 400)
        assert len(found) == 1
        x0, y0, x1, y1 = found.boxes_xyxy[0]  # around the block (columns 250..360, rows 40..80)
        assert 220 <= x0 < 250 and 360 < x1 <= 390 and 10 <= y0 < 40 and 80 < y1 <= 110
        # as the whole frame's run finds it, but for the unclip margin (map pixels: other scales)
        np.testing.assert_allclose(found.boxes_xyxy, right.boxes_xyxy, atol=8)


def test_a_region_outside_the_first_frames_fails_on_them_naming_roi():
    with Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)) as det:
        with pytest.raises(ShapeError, match=r"--roi 500,0,50,50: .*outside the 200x100"):
            det.detect(scene(100, 200))
        assert det.describe()["roi"] == dict(x=500, y=0, w=50, h=50, unit="pixels")
    with pytest.raises(ShapeError, match="--roi 1,2,0,4"):  # before the model loads
        Detector("no-such-model.onnx", roi="1,2,0,4")


def test_a_later_frame_size_the_region_misses_is_watched_nowhere_with_one_warning():
    """A camera back at a lower resolution after a reconnect: the pixel region drawn for its
    first frames lies outside the new ones. That ended the run (every stream with it); now
    nothing of those frames is watched (the text there is not what the region let through),
    with one warning, not one a frame, and frames the region meets are detected in again."""
    first = scene(100, 600, box=(10, 510, 40, 540))
    small = scene(100, 200, box=(10, 20, 40, 180))  # bright text outside the region
    with Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)) as det:
        assert len(det.detect(first)) == 1
        with pytest.warns(DbrtWarning) as caught:
            assert [len(d) for d in det.detect_batch([small, small])] == [0, 0]
            assert len(det.detect(small)) == 0
        assert [str(w.message) for w in caught] == [
            "--roi 500,0,50,50: the region lies outside the 200x100 frames (W x H) of this run: "
            "nothing of them is watched (they go on, without detections)"]
        assert len(det.detect(first)) == 1
        assert det.region_in(100, 520) == (500, 0, 20, 50)  # partly outside: clipped


def test_each_source_whose_frames_the_region_misses_is_named_once_per_size():
    with Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)) as det:
        det.detect(scene(100, 600))
        batch, letterboxes = det.prepare([scene(100, 200)] * 3)
        prob = det.infer(batch)
        sources = ["rtsp://cam/1", "rtsp://user:secret@cam/2", "rtsp://cam/1"]
        with pytest.warns(DbrtWarning) as caught:
            for _ in range(2):
                found = det.postprocess(prob, letterboxes, sources=sources)
        assert [len(d) for d in found] == [0, 0, 0]
    assert [str(w.message) for w in caught] == [
        f"--roi 500,0,50,50: the region lies outside the 200x100 frames (W x H) of {name}: "
        "nothing of them is watched (they go on, without detections)"
        for name in ("rtsp://cam/1", "rtsp://cam/2")]  # no password in the console


def test_a_source_whose_first_frames_the_region_misses_is_refused_whichever_comes_first():
    """Two cameras, the second smaller than the pixel region: the run ended with the --roi error
    when the small one's frames came first, and went on without a word of it being a mistake
    when the large one's did, by chance of which camera answered first. It is decided per
    source: the small camera's first frames are the error, naming it, in either order."""
    large, small = ("rtsp://cam/large", scene(100, 600)), ("rtsp://user:secret@cam/small",
                                                          scene(100, 200))
    for first, second in ((large, small), (small, large)):
        with Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)) as det:
            batch, letterboxes = det.prepare([first[1], second[1]])
            with pytest.raises(ShapeError) as caught:
                det.postprocess(det.infer(batch), letterboxes, sources=[first[0], second[0]])
        assert str(caught.value) == ("--roi 500,0,50,50: the region lies outside the 200x100 "
                                     "frames (W x H) of rtsp://cam/small: nothing of them "
                                     "would be watched")


def test_a_smaller_image_of_a_folder_the_region_misses_goes_on_unwatched(tmp_path):
    """A folder is one source, whose images each name their frames: the region decided per
    source must not take each image for a source of its own, whose first frames it missed."""
    from pipeline.runner import Pipeline

    cv2.imwrite(str(tmp_path / "a.png"), scene(100, 600, box=(10, 510, 40, 540)))
    cv2.imwrite(str(tmp_path / "b.png"), scene(100, 200))
    found = {}
    with Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)) as det:
        with pytest.warns(DbrtWarning, match=r"outside the 200x100 frames \(W x H\) of .*b\.png"):
            for frame, dets in Pipeline([str(tmp_path)], det):
                found[frame.source.rsplit("/", 1)[-1]] = len(dets)
    assert found == {"a.png": 1, "b.png": 0}


def test_a_callers_error_filter_does_not_end_a_run_at_a_size_the_region_misses(tmp_path):
    """The warning is said in the run's post-processing thread: a caller's "error" filter
    (`-W error`, pytest's filterwarnings) raised it there, ending every source of the run."""
    from pipeline.runner import Pipeline
    from pipeline.sources.images import ImageSource

    cv2.imwrite(str(tmp_path / "a.png"), scene(100, 600, box=(10, 510, 40, 540)))
    cv2.imwrite(str(tmp_path / "b.png"), scene(100, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Pipeline([ImageSource([str(tmp_path / "a.png"), str(tmp_path / "b.png")])],
                      Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)),
                      close_detector=True) as pipe:
            assert [len(detections) for _, detections in pipe] == [1, 0]


def test_a_fraction_region_follows_each_frame_size():
    with Detector(BrightPixelRunner(), roi="0.5,0.5,0.5,0.5") as det:
        assert det.region_in(240, 320) == (160, 120, 160, 120)
        assert det.region_in(120, 160) == (80, 60, 80, 60)


@pytest.fixture(scope="module")
def shipped():
    with Detector() as det:
        yield det


def _signs(h=360, w=640) -> np.ndarray:
    """Dark words on a light wall: EXIT at the top left, SHOP at the bottom right."""
    image = np.full((h, w, 3), 200, np.uint8)
    cv2.putText(image, "EXIT", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    cv2.putText(image, "SHOP", (420, 300), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    return image


def test_the_shipped_model_reads_the_region_only_in_frame_pixels(shipped):
    image = _signs()
    whole = shipped.detect(image)
    assert len(whole) == 2
    found = Detector(shipped.runner, roi="0.5,0.5,0.5,0.5").detect(image)  # the fixture closes it
    assert len(found) == 1  # EXIT lies outside the region
    x0, y0, x1, y1 = found.boxes_xyxy[0]
    assert 400 < x0 < x1 < 560 and 250 < y0 < y1 < 320  # SHOP, where it is in the frame
    shop = whole[whole.boxes_xyxy[:, 0] > 320]
    np.testing.assert_allclose(found.boxes_xyxy, shop.boxes_xyxy, atol=6)


def test_the_text_read_in_the_region_is_cut_from_the_frame_where_the_box_is(shipped):
    """The recognizer crops the frame at the frame-pixel box: it reads SHOP, not whatever lies
    at the region's own coordinates."""
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    from pipeline.reading import Recognizer

    recognizer = Recognizer()
    try:  # the Detector is not closed: the runner is the fixture's, the recognizer ours
        found = Detector(shipped.runner, roi=(320, 180, 320, 180), read=recognizer).detect(_signs())
    finally:
        recognizer.close()
    assert list(found.data["text"]) == ["SHOP"] and found.data["text_score"][0] > 0.9


def test_the_region_is_outlined_on_the_picture():
    scene_ = np.zeros((100, 200, 3), np.uint8)
    RegionAnnotator(Region.parse("0.5,0,0.5,0.5")).annotate(scene_)
    drawn = scene_.any(axis=2)
    assert drawn[0, 100:200].all() and drawn[:50, 100].all() and drawn[:49, 199].all()
    assert not drawn[60:].any() and not drawn[:, :98].any()
    untouched = np.zeros((10, 10, 3), np.uint8)  # a frame the region misses: drawn as it is
    assert not RegionAnnotator(Region.parse("50,50,5,5")).annotate(untouched).any()


def test_the_outline_takes_what_roi_takes_and_none_draws_nothing():
    """RegionAnnotator got the tuple or string given to Detector(roi=), or a Detector's roi of
    None, and failed with an AttributeError in the sink thread at the first frame."""
    def drawn(region):
        return RegionAnnotator(region).annotate(np.zeros((100, 200, 3), np.uint8))

    expected = drawn(Region.parse("0.5,0,0.5,0.5"))
    assert np.array_equal(drawn((0.5, 0.0, 0.5, 0.5)), expected)
    assert np.array_equal(drawn("0.5,0,0.5,0.5"), expected)
    assert not drawn(None).any()
    with pytest.raises(RegionError):
        RegionAnnotator((0, 0, -1, 5))


# -- dbrt run --roi ------------------------------------------------------------------------------
def test_dbrt_run_roi_detects_in_the_region_and_outlines_it(tmp_path, capsys):
    """Two pictures of other sizes and a region in fractions: each picture's SHOP (in the
    region) is found where it is in that picture, EXIT (outside) is not; the annotated pictures
    outline the region; report.json records it."""
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _signs())
    cv2.imwrite(str(folder / "b.png"), cv2.copyMakeBorder(_signs(), 0, 40, 0, 80, cv2.BORDER_REPLICATE))
    out = tmp_path / "out"
    assert main(["run", str(folder), "--roi", "0.5,0.5,0.5,0.5", "-o", str(out), "--quiet"]) == 0
    assert "for region 0.5,0.5,0.5,0.5" in capsys.readouterr().err
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert [len(x["detections"]) for x in lines] == [1, 1]
    for line in lines:
        xs, ys = np.array(line["detections"][0]["polygon"]).T
        assert 400 < xs.min() < xs.max() < 560 and 250 < ys.min() < ys.max() < 320
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["roi"] == dict(x=0.5, y=0.5, w=0.5, h=0.5, unit="fraction")
    for name, (h, w) in (("0_00000_a.png", (360, 640)), ("0_00001_b.png", (400, 720))):
        drawn = cv2.imread(str(out / "annotated" / name))
        assert (drawn[h // 2 + 20, w // 2] == RegionAnnotator.color).all()  # the left edge
        assert (drawn[h // 2 - 20, w // 2] != RegionAnnotator.color).any()


def test_dbrt_run_roi_outside_a_frame_or_malformed_is_one_line(tmp_path, tiny_onnx, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    # the first image is the one the region misses (a later one is watched nowhere, with a warning)
    cv2.imwrite(str(folder / "a.png"), np.full((100, 200, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.full((360, 640, 3), 128, np.uint8))
    args = ["run", str(folder), "--model", str(tiny_onnx), "-o", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--roi", "300,200,200,100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dbrt run: error: --roi 300,200,200,100: the region lies outside "
                              "the 200x100 frames"), err
    assert "Traceback" not in "\n".join(err)
    for value, reason in (("1,2,3", "expected X,Y,W,H"), ("0.1,0.2,2,0.5", "from 0 to 1"),
                          ("5,5,0,9", "empty")):
        assert main([*args, "--roi", value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("dbrt run: error: argument --roi: ") and reason in err[0], err
        assert repr(value) in err[0]


def test_the_input_cap_warning_names_a_thin_region():
    """A 2x400 strip under the short-side rule would need a huge input: the warning says it is
    the region's, not the frame's (a 100x400 frame runs at 64x256)."""
    with Detector(BrightPixelRunner(), roi=(0, 50, 400, 2)) as det:
        with pytest.warns(UserWarning, match=r"a 2x400 region \(--roi 0,50,400,2\) of a frame "
                                             "would need"):
            assert max(det.input_size_for(100, 400)) == 4000


def test_a_pixel_region_no_frame_of_a_video_meets_is_refused_before_the_model_loads(tmp_path, capsys,
                                                                                     monkeypatch):
    """It was found at the first frame, after the model had loaded: the run ended with its
    summary, 'frames read were never written' and the error, and wrote its (empty) outputs."""
    from media import write_video

    from pipeline.commands import _model
    from pipeline.cli import main

    video = write_video(tmp_path / "v.mp4", frames=3, height=48, width=64)
    loaded = []
    monkeypatch.setattr(_model, "build_detector", lambda args: loaded.append(args) or 1 / 0)
    out = tmp_path / "out"
    assert main(["run", str(video), "-o", str(out), "--roi", "2000,2000,10,10"]) == 2
    err = capsys.readouterr().err
    assert "--roi 2000,2000,10,10: the region lies outside the 64x48 frames" in err
    assert err.count("\n") == 1 and not loaded and not (out / "report.json").exists()


def test_a_region_that_meets_a_video_only_turned_waits_for_its_frames():
    """A phone video coded 64x48 may be shown 48x64 (its rotation tag): a region inside the
    turned frame is not refused on the coded size."""
    from pipeline.region import Region, RegionError

    Region.parse("0,50,10,10").check_coded_size(64, 48)  # inside 48 wide x 64 high
    with pytest.raises(RegionError, match="outside the 64x48 frames"):
        Region.parse("70,70,5,5").check_coded_size(64, 48)


def test_a_region_made_of_numpy_numbers_describes_itself_in_json():
    """Region(np.int64(...), ...) (a box from an array) made report.json's model.roi fail:
    'Object of type int64 is not JSON serializable'."""
    x, y, w, h = np.array([10, 20, 300, 200])
    assert json.loads(json.dumps(Region(x, y, w, h).describe())) == dict(
        x=10, y=20, w=300, h=200, unit="pixels")
    fractions = Region(*np.array([0.1, 0.2, 0.5, 0.5], np.float32), fractions=True)
    assert type(fractions.describe()["x"]) is float and str(fractions) == "0.1,0.2,0.5,0.5"


class _ResizingCamera:
    """A loopback HTTP MPEG-TS camera whose first connection sends 320x240 frames and ends (a
    restart), and whose later connections send 160x120 ones (an NVR back on its sub-stream)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from media import mpegts_bytes

        clips = [mpegts_bytes(frames=15, height=240, width=320),
                 mpegts_bytes(frames=60, height=120, width=160)]
        sent = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                clip = clips[min(len(sent), 1)]
                sent.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                for start in range(0, len(clip), 188 * 20):  # paced, as a live camera sends
                    try:
                        self.wfile.write(clip[start:start + 188 * 20])
                    except OSError:
                        return
                    time.sleep(0.005)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/live.ts"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_camera_whose_first_frames_were_all_dropped_comes_back_smaller_and_goes_on(tiny_onnx):
    """On a busy machine (or while the run loaded its model) every frame of a camera's first
    connection could be dropped before the run took one: its 160x120 frames after a reconnect
    were then the first its pixel --roi met, and the run ended on them as on a mistake in the
    flag. The size of the first frame the source read decides now (Frame.first_size)."""
    from pipeline.runner import Pipeline
    from pipeline.sinks import CallbackSink
    from pipeline.sources import NetworkSource, Reconnect

    camera = _ResizingCamera()
    source = NetworkSource(camera.url, reconnect=Reconnect(retries=None, delay=0.05)).open()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while source.stats.as_dict()["reconnects"] < 1 or source.stats.as_dict()["read"] < 20:
            assert time.monotonic() < deadline, source.stats.as_dict()
            time.sleep(0.05)  # nothing taken meanwhile: the first connection's frames are gone
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            Pipeline([source], Detector(tiny_onnx, roi="200,150,100,80"), max_frames=5,
                     sinks=[CallbackSink(lambda frame, dets: seen.append((frame, dets)))]).run()
    finally:
        source.close()
        camera.close()
    assert len(seen) == 5 and all(frame.size == (120, 160) for frame, _ in seen)
    assert all(frame.first_size == (240, 320) for frame, _ in seen)
    assert all(len(dets) == 0 for _, dets in seen)
    assert [str(w.message) for w in said if "--roi" in str(w.message)] == [
        f"--roi 200,150,100,80: the region lies outside the 160x120 frames (W x H) of "
        f"{camera.url}: nothing of them is watched (they go on, without detections)"]


def test_dbrt_run_goes_on_when_a_camera_comes_back_smaller_than_its_pixel_region(tmp_path, tiny_onnx):
    """A real `dbrt run --roi` over a stream that reconnects at a lower resolution: it ended
    with exit 2 ('--roi ...: the region lies outside the 160x120 frames'); now it runs on,
    with one warning naming the stream, and the frames of both sizes are written."""
    from serve_helpers import dbrt

    camera, out = _ResizingCamera(), tmp_path / "out"
    try:
        proc = dbrt("run", camera.url, "--model", str(tiny_onnx), "--roi", "200,150,100,80",
                    "--reconnect", "-1", "--reconnect-delay", "0.05", "--max-frames", "30",
                    "-o", str(out), "--quiet")
        _, err = proc.communicate(timeout=120)
    finally:
        camera.close()
    assert proc.returncode == 0, err
    said = [line for line in err.splitlines() if ("warning" in line or "error" in line)
            and not line.startswith((f"dbrt run: warning: lost {camera.url} ",  # the outage
                                     f"dbrt run: warning: {camera.url} is back "))]
    assert said == [
        f"dbrt run: warning: --roi 200,150,100,80: the region lies outside the 160x120 frames "
        f"(W x H) of {camera.url}: nothing of them is watched (they go on, without detections)"]
    written = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    sizes = [tuple(frame["frame_size"]) for frame in written]
    # the first connection's frames may all be dropped while the run loads its model: the size
    # of the first frame read decides all the same (Frame.first_size)
    assert (120, 160) in sizes and set(sizes) <= {(240, 320), (120, 160)} and len(written) == 30
    assert all(not frame["detections"] for frame in written if frame["frame_size"] == [120, 160])
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 30 and report["sources"][0]["reconnects"] >= 1
