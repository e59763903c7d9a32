"""Ignore zones (--ignore, Detector(ignore=)): a detection mostly inside them is dropped after
post-processing, before reading and tracking, and counted; the rule, the parsing and errors,
the composition with --roi, the outlines and the command line."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from engine.errors import DbrtWarning, ShapeError
from pipeline.cli import main
from pipeline.detections import Detections
from pipeline.detector import Detector
from pipeline.draw import IgnoreAnnotator, RegionAnnotator, region_annotators
from pipeline.ignore import IgnoreZones
from pipeline.region import Region, RegionError

from test_detector import BrightPixelRunner, scene


def _quad(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _inside(zones, polygons, frame_hw=(200, 400)) -> list:
    found = Detections(tuple(np.array(p, np.float32) for p in polygons), [0.9] * len(polygons))
    return IgnoreZones.of(zones).inside(found, *frame_hw).tolist()


# -- the rule: at least half of the polygon's area inside the zones' union --------------------------
def test_inside_dropped_outside_kept_and_straddling_by_its_share():
    zone = (0, 0, 100, 100)
    polygons = [_quad(10, 10, 50, 50),     # inside
                _quad(200, 10, 300, 50),   # outside
                _quad(40, 10, 140, 30),    # 60 % inside
                _quad(50, 10, 150, 30),    # half inside
                _quad(60, 10, 160, 30)]    # 40 % inside
    assert _inside([zone], polygons) == [True, False, True, True, False]
    assert _inside(["0.0,0.0,0.25,0.5"], polygons) == [True, False, True, True, False]  # fractions


def test_the_share_is_the_polygons_own_not_its_bounding_boxs():
    """Both triangles have half their bounding box inside the zone; a quarter of the second
    one's area lies inside (kept), three quarters of the first one's (dropped)."""
    first = [(0, 0), (200, 0), (0, 100)]
    second = [(0, 100), (200, 100), (200, 0)]
    assert _inside([(0, 0, 100, 100)], [first, second]) == [True, False]


def test_zones_count_as_their_union():
    """25 % in one zone and 37.5 % in the next: 62.5 % in the two (dropped); two copies of one
    zone holding 40 % of a box are 40 %, not 80 % (kept)."""
    box = _quad(60, 10, 220, 30)
    assert _inside([(0, 0, 100, 100), (100, 0, 60, 100)], [box]) == [True]
    assert _inside([(0, 0, 100, 100), (0, 0, 100, 100)], [_quad(60, 10, 160, 30)]) == [False]
    assert _inside([(0, 0, 100, 100), (50, 0, 100, 100)], [_quad(60, 10, 160, 30)]) == [True]


def test_drop_counts_and_nothing_else_changes():
    found = Detections.from_quads(np.array([_quad(10, 10, 50, 50), _quad(200, 10, 300, 50)]),
                                  [0.8, 0.9], {"text": np.array(["12:00", "EXIT"])})
    kept, count = IgnoreZones.of([(0, 0, 100, 100)]).drop(found, 200, 400)
    assert count == 1 and kept == found[[1]]
    same, none = IgnoreZones.of(None).drop(found, 200, 400)
    assert none == 0 and same is found


# -- parsing and errors ------------------------------------------------------------------------------
def test_the_python_api_takes_one_zone_or_a_list_as_roi_takes_a_region():
    one = Region(0, 0, 100, 50)
    assert IgnoreZones.of((0, 0, 100, 50)).regions == (one,)
    assert IgnoreZones.of("0,0,100,50").regions == (one,)
    assert IgnoreZones.of(np.array([0, 0, 100, 50])).regions == (one,)
    two = IgnoreZones.of([(0, 0, 100, 50), "0.0,0.9,1,0.1"])
    assert two.regions == (one, Region(0.0, 0.9, 1, 0.1, fractions=True))
    assert two.describe() == [dict(x=0, y=0, w=100, h=50, unit="pixels"),
                              dict(x=0.0, y=0.9, w=1, h=0.1, unit="fraction")]
    assert not IgnoreZones.of(None) and not IgnoreZones.of([]) and len(two) == 2
    assert str(two) == "--ignore 0,0,100,50 --ignore 0,0.9,1,0.1"  # as Region writes it


@pytest.mark.parametrize("zone, reason", [
    ("1,2,3", "four numbers"), ("", "four numbers"), ("10,10,0,100", "empty"),
    ("0.1,0.5,1.5,0.4", "from 0 to 1"), ((0, 0, -1, 5), "empty"),
])
def test_a_bad_zone_is_one_error_naming_ignore(zone, reason):
    with pytest.raises(RegionError, match=reason) as caught:
        IgnoreZones.of([zone])
    assert str(caught.value).startswith("--ignore ")
    with pytest.raises(ShapeError, match=r"^ignore must be \(x, y, w, h\)"):
        IgnoreZones.of([(1, 2, 3)])


@pytest.mark.parametrize("zones", [[None], [(0, 0, 100, 50), None], b"0,0,100,50",
                                   {"x": 0, "y": 0, "w": 100, "h": 50}])
def test_none_bytes_or_a_dict_among_the_zones_is_refused_when_made(zones):
    """A None in the list was taken as a zone (len 1, '--ignore None') and failed later, in
    describe() or at the first frame; bytes and a dict were read element by element."""
    with pytest.raises(ShapeError, match=r"^ignore must be \(x, y, w, h\)"):
        IgnoreZones.of(zones)
    with pytest.raises(ShapeError, match="^ignore must be"):  # before the model loads
        Detector("no-such-model.onnx", ignore=zones)


def test_a_zone_outside_a_frame_is_one_error_naming_ignore():
    zones = IgnoreZones.of(["500,0,50,50"])
    with pytest.raises(ShapeError, match=r"^--ignore 500,0,50,50: the region lies outside the "
                                         r"200x100 frames .* would be ignored"):
        zones.boxes(100, 200)
    with pytest.raises(RegionError, match="outside the 64x48 frames"):
        zones.check_coded_size(64, 48)
    IgnoreZones.of(["0,50,10,10"]).check_coded_size(64, 48)  # inside the frame turned


def test_a_later_frame_size_a_zone_misses_leaves_it_out_with_a_warning_not_an_error():
    """A camera that reconnects at a lower resolution: the pixel zone drawn for its first
    frames lies outside the new ones. Nothing of them lies there to ignore; the run goes on
    (it ended with every stream), the other zones still apply, and its first size is back."""
    zones = IgnoreZones.of(["250,0,70,40", "0,0,40,20"])
    found = Detections.from_quads(np.array([_quad(0, 0, 30, 15), _quad(60, 30, 100, 60)]),
                                  [0.8, 0.9])
    assert zones.drop(found, 168, 320)[1] == 1  # the first frames have both zones
    with pytest.warns(DbrtWarning, match=r"^--ignore 250,0,70,40: the region lies outside the "
                                         r"160x80 frames .*; it is left out of those frames$"):
        kept, count = zones.drop(found, 80, 160)
    assert count == 1 and kept == found[[1]]
    assert zones.boxes(80, 160).tolist() == [[0, 0, 40, 20]]
    assert zones.boxes(168, 320).tolist() == [[250, 0, 320, 40], [0, 0, 40, 20]]



def test_a_source_whose_first_frames_a_zone_misses_is_refused_whichever_comes_first():
    """Two cameras, the second smaller than a pixel zone: the run ended with the --ignore error
    when the small one's frames came first, and went on with a warning when the large one's
    did, by chance of which camera answered first. It is decided per source (as --roi is): the
    small camera's first frames are the error, naming it, in either order."""
    large, small = ("rtsp://cam/large", scene(100, 600)), ("rtsp://user:secret@cam/small",
                                                          scene(100, 200))
    for first, second in ((large, small), (small, large)):
        with Detector(BrightPixelRunner(), ignore=["500,0,50,50"]) as det:
            batch, letterboxes = det.prepare([first[1], second[1]])
            with pytest.raises(ShapeError) as caught:
                det.postprocess(det.infer(batch), letterboxes, sources=[first[0], second[0]])
        assert str(caught.value) == ("--ignore 500,0,50,50: the region lies outside the 200x100 "
                                     "frames (W x H) of rtsp://cam/small: nothing of them would "
                                     "be ignored")


def test_each_source_whose_later_frames_a_zone_misses_is_named_once_per_size():
    with Detector(BrightPixelRunner(), ignore=["500,0,50,50", "0,0,20,20"]) as det:
        det.detect(scene(100, 600))
        batch, letterboxes = det.prepare([scene(100, 200)] * 3)
        prob = det.infer(batch)
        sources = ["rtsp://cam/1", "rtsp://user:secret@cam/2", "rtsp://cam/1"]
        with pytest.warns(DbrtWarning) as caught:
            for _ in range(2):
                found = det.postprocess(prob, letterboxes, sources=sources)
        assert [len(d) for d in found] == [1, 1, 1]  # the other zone still applies (it misses)
    assert [str(w.message) for w in caught] == [
        f"--ignore 500,0,50,50: the region lies outside the 200x100 frames (W x H) of {name}: "
        "nothing of them lies there to ignore; it is left out of those frames"
        for name in ("rtsp://cam/1", "rtsp://cam/2")]  # no password in the console


def test_a_smaller_image_of_a_folder_a_zone_misses_goes_on_without_it(tmp_path):
    """A folder is one source, whose images each name their frames: a smaller image that the
    zone misses after a larger one is no mistake in --ignore; the warning names the image."""
    from pipeline.runner import Pipeline

    cv2.imwrite(str(tmp_path / "a.png"), scene(100, 600, box=(10, 510, 40, 540)))  # in the zone
    cv2.imwrite(str(tmp_path / "b.png"), scene(100, 200))
    found = {}
    with Detector(BrightPixelRunner(), ignore=["500,0,50,50"]) as det:
        with pytest.warns(DbrtWarning, match=r"outside the 200x100 frames \(W x H\) of .*b\.png"):
            for frame, dets in Pipeline([str(tmp_path)], det):
                found[frame.source.rsplit("/", 1)[-1]] = len(dets)
    assert found == {"a.png": 0, "b.png": 1}

# -- the Detector ----------------------------------------------------------------------------------
def _blocks() -> np.ndarray:
    """Three bright blocks, 40 rows high, at columns 30..110, 160..240 and 290..370."""
    image = np.zeros((120, 400, 3), np.uint8)
    for x0 in (30, 160, 290):
        image[40:80, x0:x0 + 80] = 255
    return image


def _blocks_found(found: Detections) -> list:
    """Which of the three blocks (0, 1, 2 from the left; centres 70, 200, 330) were found."""
    return sorted(int(round(((x0 + x1) / 2 - 70) / 130)) for x0, _, x1, _ in found.boxes_xyxy)


def test_the_detector_drops_what_lies_in_its_zones_and_says_how_many():
    with Detector(BrightPixelRunner()) as det:
        assert _blocks_found(det.detect(_blocks())) == [0, 1, 2]
        assert det.describe()["ignore"] == []
    with Detector(BrightPixelRunner(), ignore=[(150, 30, 100, 60)]) as det:
        assert _blocks_found(det.detect(_blocks())) == [0, 2]  # the middle block's box reaches past
        batch, boxes = det.prepare([_blocks(), _blocks()])
        dropped: list = []
        assert [len(d) for d in det.postprocess(det.infer(batch), boxes, dropped=dropped)] == [2, 2]
        assert dropped == [1, 1]
        assert det.describe()["ignore"] == [dict(x=150, y=30, w=100, h=60, unit="pixels")]
    with pytest.raises(ShapeError, match="--ignore 1,2,0,4"):  # before the model loads
        Detector("no-such-model.onnx", ignore=["1,2,0,4"])


def test_zones_are_in_frame_coordinates_whatever_the_roi():
    """The region holds the right two blocks; the zone (frame pixels) the rightmost: the middle
    one alone is found (read in the region's own coordinates, the zone would miss them both)."""
    with Detector(BrightPixelRunner(), roi=(150, 0, 250, 120), ignore="280,0,120,120") as det:
        found = det.detect(_blocks())
    assert _blocks_found(found) == [1]
    with Detector(BrightPixelRunner(), roi=(150, 0, 250, 120), ignore="0.7,0.0,0.3,1") as det:
        assert _blocks_found(det.detect(_blocks())) == [1]


class _RecordingReader:
    """Stands in for the recognizer: notes how many polygons each frame gave it to read."""

    direction = None

    def __init__(self):
        self.counts = []

    def read(self, image, detections):
        self.counts.append(len(detections))
        return detections

    def describe(self):
        return {"model": "recording"}

    def close(self):
        pass


def test_a_pipeline_reads_none_of_the_ignored_and_reports_their_count(tmp_path):
    from pipeline.runner import Pipeline

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"f{k}.png")
        cv2.imwrite(str(paths[-1]), _blocks())
    det = Detector(BrightPixelRunner(), ignore=[(0, 0, 130, 120), "0.7,0.0,0.3,1"])
    reader = det.recognizer = _RecordingReader()
    with Pipeline([str(p) for p in paths], det, close_detector=True) as pipe:
        counts = [len(dets) for _, dets in pipe]
        report = pipe.report()
        served = _served_counts(pipe)
    assert counts == [1, 1, 1] and reader.counts == [1, 1, 1]
    assert report["ignored_detections"] == 6
    assert served == (6, 6.0)  # /api/status and /metrics say so too (they had no such count)
    assert report["model"]["ignore"] == [dict(x=0, y=0, w=130, h=120, unit="pixels"),
                                         dict(x=0.7, y=0.0, w=0.3, h=1, unit="fraction")]


def _served_counts(pipe):
    """The ignored detections in `--serve`'s /api/status and /metrics of this run."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from pipeline.serve.view import LiveFrames
    from pipeline.serve.prometheus import registry_for
    from pipeline.serve.status import RunStatus

    status = RunStatus(pipe, LiveFrames())
    text = generate_latest(registry_for(status)).decode()
    line = next(l for l in text.splitlines() if l.startswith("dbrt_ignored_detections_total "))
    return status.snapshot()["ignored_detections"], float(line.split()[1])


# -- the outlines --------------------------------------------------------------------------------
def test_the_zones_are_outlined_dashed_in_their_own_colour():
    scene = np.zeros((100, 200, 3), np.uint8)
    IgnoreAnnotator(["0.5,0,0.5,0.5"]).annotate(scene)
    ours = (scene == IgnoreAnnotator.color).all(axis=2)
    top, left, right, bottom = ours[0, 100:200], ours[:50, 100], ours[:50, 199], ours[49, 100:200]
    assert all(edge.mean() > 0.3 for edge in (top, left, right, bottom))
    assert not top.all()  # dashed: gaps along the edge
    assert not scene[60:].any() and not scene[:, :98].any()  # nothing beyond the zone's edge
    assert tuple(IgnoreAnnotator.color) != tuple(RegionAnnotator.color)
    untouched = np.zeros((10, 10, 3), np.uint8)  # a frame the zone misses: drawn as it is
    assert not IgnoreAnnotator(["50,50,5,5"]).annotate(untouched).any()


def test_a_detectors_roi_and_zones_are_outlined_under_its_boxes():
    with Detector(BrightPixelRunner(), roi=(0, 0, 200, 100), ignore=[(10, 10, 20, 20)]) as det:
        roi, zones = region_annotators(det)
        assert isinstance(roi, RegionAnnotator) and isinstance(zones, IgnoreAnnotator)
        assert zones.zones is det.ignore
    with Detector(BrightPixelRunner()) as det:
        assert region_annotators(det) == []  # a list the boxes' annotators are appended to


# -- dbrt run --ignore ---------------------------------------------------------------------------
def _signs(h=360, w=640) -> np.ndarray:
    """Dark words on a light wall: EXIT at the top left, SHOP at the bottom right."""
    image = np.full((h, w, 3), 200, np.uint8)
    cv2.putText(image, "EXIT", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    cv2.putText(image, "SHOP", (420, 300), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    return image


def test_dbrt_run_ignore_drops_counts_and_outlines(tmp_path, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _signs())
    cv2.imwrite(str(folder / "b.png"), cv2.copyMakeBorder(_signs(), 0, 40, 0, 80, cv2.BORDER_REPLICATE))
    out = tmp_path / "out"
    assert main(["run", str(folder), "--ignore", "0.0,0.0,0.35,0.3", "-o", str(out), "--quiet"]) == 0
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert [len(x["detections"]) for x in lines] == [1, 1]
    for line in lines:  # SHOP, where it is
        xs, ys = np.array(line["detections"][0]["polygon"]).T
        assert 400 < xs.min() < xs.max() < 560 and 250 < ys.min() < ys.max() < 320
    assert "2 detections dropped in --ignore zones" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["ignored_detections"] == 2
    assert report["model"]["ignore"] == [dict(x=0.0, y=0.0, w=0.35, h=0.3, unit="fraction")]
    drawn = cv2.imread(str(out / "annotated" / "0_00000_a.png"))
    right_edge = (drawn[:108, 223] == IgnoreAnnotator.color).all(axis=1)  # x = 0.35 * 640 - 1
    assert right_edge.mean() > 0.3
    # with --roi: the region (the top half) holds EXIT only, the zone (frame pixels) covers it
    out2 = tmp_path / "out2"
    assert main(["run", str(folder / "a.png"), "--roi", "0.0,0.0,1,0.5", "--ignore", "0,0,250,150",
                 "--ignore", "600,340,40,20", "-o", str(out2), "--quiet"]) == 0
    report = json.loads((out2 / "report.json").read_text())
    assert report["ignored_detections"] == 1 and report["frames"] == 1
    assert json.loads((out2 / "detections.jsonl").read_text())["detections"] == []


def test_dbrt_run_ignore_malformed_or_outside_a_frame_is_one_line(tmp_path, tiny_onnx, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((100, 200, 3), 128, np.uint8))
    args = ["run", str(folder), "--model", str(tiny_onnx), "-o", str(tmp_path / "o"), "--quiet"]
    for value, reason in (("1,2,3", "expected X,Y,W,H"), ("", "expected X,Y,W,H"),
                          ("0.1,0.2,2,0.5", "from 0 to 1"), ("5,5,0,9", "empty")):
        assert main([*args, "--ignore", "0,0,10,10", "--ignore", value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("dbrt run: error: argument --ignore: ") and reason in err[0], err
    assert main([*args, "--ignore", "300,200,200,100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dbrt run: error: --ignore 300,200,200,100: the region lies outside "
                              "the 200x100 frames"), err
    assert "Traceback" not in "\n".join(err)


def test_a_zone_no_frame_of_a_video_meets_is_refused_before_the_model_loads(tmp_path, capsys,
                                                                          monkeypatch):
    from media import write_video

    from pipeline.commands import _model

    video = write_video(tmp_path / "v.mp4", frames=3, height=48, width=64)
    loaded = []
    monkeypatch.setattr(_model, "build_detector", lambda args: loaded.append(args) or 1 / 0)
    out = tmp_path / "out"
    assert main(["run", str(video), "-o", str(out), "--ignore", "0,0,10,10",
                 "--ignore", "2000,2000,10,10"]) == 2
    err = capsys.readouterr().err
    assert "--ignore 2000,2000,10,10: the region lies outside the 64x48 frames" in err
    assert err.count("\n") == 1 and not loaded and not (out / "report.json").exists()


def test_the_zones_of_a_frame_size_survive_another_thread_clearing_the_cache():
    """One Detector detecting in several threads on images of many sizes: a thread that stored
    a size's zones and read them back found them gone (KeyError) when another thread had
    cleared the full cache in between; the cache here clears as soon as it is written."""
    class ClearedByAnotherThread(dict):
        def __setitem__(self, key, value):
            super().__setitem__(key, value)
            self.clear()

    zones = IgnoreZones.of([(0.0, 0.0, 0.5, 0.5)])
    zones._boxes = ClearedByAnotherThread()
    assert zones.boxes(100, 200).tolist() == [[0, 0, 100, 50]]
