"""Smoke runs of the peer benchmarks on tiny models: the RapidOCR rounds report, the lightbox
criterion, dbrt vs RapidOCR's detector on tiny image sets (accuracy, word heights, errors by kind)."""
from __future__ import annotations

import json

import numpy as np
import pytest


def test_peer_report_lists_rounds_and_the_inference_ceiling(tmp_path):
    from benchmarks.peer_report import to_markdown, write_reports

    agree = dict(images=2, theirs=3, ours=3, matched=3, precision=1.0, recall=1.0, hmean=1.0)
    acc = dict(precision=0.5, recall=0.5, hmean=0.5)
    report = {
        "model": "m.onnx", "threads": 0, "command": "python benchmarks/peer_rapidocr.py",
        "rapidocr": {"version": "3.10.0"},
        "machine": {"machine": "cpu-x", "cpu": "X", "cpu_count": 2},
        "realdev": {"agreement": agree, "accuracy": {"rapidocr": acc, "dbrt": acc}, "images": 2,
                    "latency_ms": {"rapidocr": 200.0, "dbrt": 100.0}, "speedup": 2.0},
        "videos": [{"video": "v.mp4", "frames": 40, "rounds": 2, "batch": {"pipeline": 1},
                    "seconds": {"rapidocr": [16.0, 20.0], "pipeline": [10.0, 10.0]},
                    "fps": {"rapidocr": 2.25, "pipeline": 4.0}, "speedup": {"pipeline": 1.78},
                    "agreement": {"pipeline": agree}, "sampled_every": 50,
                    "sampled_agreement": agree, "inference_alone_ms": 200.0}],
        "load_average": {"before": 0.1, "after": 1.0},
    }
    text = to_markdown(report)
    assert "v.mp4: rapidocr 2.50, 2.00; pipeline 4.00, 4.00" in text
    assert "200 ms = 5.00 fps, i.e. 2.22x RapidOCR" in text and "reaches 80% of it" in text
    paths = write_reports(report, tmp_path, "peer")
    assert [p.name for p in paths] == ["peer.json", "peer.md"]


def test_lightbox_words_need_a_word_sized_box_on_each_line_of_the_sign():
    from benchmarks.peer_accuracy import word_boxes_in_sign, words_boxed

    def box(x, y, w, h):
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)

    hw = (506, 960)  # the sign: x 38-672, y 0-466; its lines centred near y 93, 235, 375
    words = [box(116, 22, 440, 142), box(172, 168, 352, 134), box(73, 304, 454, 142)]
    assert word_boxes_in_sign(words, hw) == [0, 1, 2] and words_boxed(words, hw)
    letters = [box(120 + 70 * i, y, 50, 100) for i in range(6) for y in (40, 185, 325)]
    assert word_boxes_in_sign(letters, hw) == [] and not words_boxed(letters, hw)
    assert not words_boxed(words[:2] + [box(116, 40, 200, 90)], hw)  # two on the first line
    assert not words_boxed(words[:2] + [box(700, 304, 200, 90)], hw)  # third outside the sign


def test_peer_accuracy_scores_both_detectors_on_tiny_sets(tmp_path, tiny_onnx, monkeypatch):
    """Every row of the comparison on tiny inputs: a one-image realdev, validation split and
    synthetic set, and a tiny clip standing in for the lightbox video."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("av")
    from media import write_video

    from benchmarks import peer_accuracy

    if peer_accuracy.locate_model() is None:
        pytest.skip("rapidocr is not installed (pip install -e '.[bench]')")
    image = np.full((96, 160, 3), 255, np.uint8)
    cv2.putText(image, "TEXT", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
    data, val = tmp_path / "data", tmp_path / "val"
    for folder in (data / "realdev", data / "video", val):
        folder.mkdir(parents=True)
    cv2.imwrite(str(data / "realdev" / "a.jpg"), image)
    (data / "realdev" / "gt.json").write_text(json.dumps(
        [{"image": "a.jpg", "polygons": [[[18, 30], [130, 30], [130, 66], [18, 66]]], "ignore": [False]}]))
    cv2.imwrite(str(val / "img_1.jpg"), image)
    (val / "gt_img_1.txt").write_text("18,30,130,30,130,66,18,66,TEXT\n")
    write_video(data / peer_accuracy.LIGHTBOX, frames=12, height=48, width=64)
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "res"))
    lines = []
    rc = peer_accuracy.main(["--data", str(data), "--val", str(val), "--synth", "1", "--every", "5",
                             "--frames", "2", "--threads", "1", "--model", str(tiny_onnx),
                             "--val-side", "128", "--val-post", "0.25/0.5/1.6"], log=lines.append)
    assert rc == 0, lines
    report = json.loads((tmp_path / "res" / "peer_accuracy.json").read_text())
    at_side = report["sets"].pop(2)       # the validation split again, both at short side 128
    assert at_side["set"] == "validation (val) at short side 128" and at_side["images"] == 1
    assert at_side["settings"]["rapidocr"]["limit_side_len"] == 128
    assert at_side["settings"]["dbrt"]["spec"]["resize"]["limit_side"] == 128
    assert at_side["settings"]["dbrt"]["post"]["unclip_ratio"] == 1.6
    sets = {row["set"].split(" ")[0]: row for row in report["sets"]}
    assert set(sets) == {"realdev", "validation", "synthetic"}
    for row in sets.values():
        assert row["status"] == "ok" and row["images"] == 1
        assert row["dbrt_speedup"] > 0 and 0 <= row["rapidocr"]["hmean"] <= 1
        assert row["rapidocr"]["gt_care"] == row["dbrt"]["gt_care"] >= 1
    video = report["lightbox"]
    assert video["frames"] == 2 and video["frame_indices"] == [0, 10]
    assert video["rapidocr"]["share"] == video["dbrt"]["share"] == 0  # no sign in the clip
    text = (tmp_path / "res" / "peer_accuracy.md").read_text()
    assert "| realdev | 1 |" in text and "three words boxed" in text
    assert "at short side 128: RapidOCR limit_side_len 128 (min)" in text
    assert "## Recall by word height" in text
    heights = sets["realdev"]["dbrt"]["recall_by_height"]
    assert [h["words"] for h in heights] == [0, 0, 0, 1]  # the word is 36 px tall
    assert "| realdev | >=32 | 1 |" in text
    for row in sets.values():  # every cared-for word is matched or missed for one reason
        errors = row["dbrt"]["errors"]
        assert sum(errors["missed"].values()) == row["dbrt"]["gt_care"] - row["dbrt"]["matched"]
        assert sum(errors["false_alarms"].values()) == row["dbrt"]["det_care"] - row["dbrt"]["matched"]
    assert "## Errors by kind" in text and "| realdev | missed: not found |" in text


def test_peer_accuracy_skips_what_is_absent(tmp_path, tiny_onnx, monkeypatch):
    from benchmarks import peer_accuracy

    if peer_accuracy.locate_model() is None:
        pytest.skip("rapidocr is not installed (pip install -e '.[bench]')")
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "res"))
    lines = []
    assert peer_accuracy.main(["--data", str(tmp_path / "none"), "--synth", "0",
                               "--model", str(tiny_onnx)], log=lines.append) == 0
    report = json.loads((tmp_path / "res" / "peer_accuracy.json").read_text())
    assert [r["status"] for r in report["sets"]] == ["skipped"] * 3
    assert report["lightbox"]["status"] == "skipped"
    assert any("no --val DIR given" in line for line in lines)
    assert peer_accuracy.main(["--model", str(tmp_path / "none.onnx")], log=lines.append) == 2
    assert lines[-1].startswith("peer_accuracy: --model")
    (tmp_path / "empty").mkdir()
    assert peer_accuracy.main(["--data", str(tmp_path / "none"), "--val", str(tmp_path / "empty"),
                               "--model", str(tiny_onnx)], log=lines.append) == 2
    assert lines[-1].startswith("peer_accuracy: ") and "empty" in lines[-1]


def test_bench_images_scores_both_sides_on_the_ground_truth():
    """RapidOCR's boxes (plain polygon lists) went to evaluate() as they were: dbrt bench peer
    ended in an AttributeError after timing every image."""
    from types import SimpleNamespace

    from benchmarks.peer_rapidocr import bench_images
    from pipeline.datasets import GroundTruth
    from pipeline.detections import Detections

    box = np.array([[10, 10], [50, 10], [50, 30], [10, 30]], np.float32)
    image = np.zeros((64, 64, 3), np.uint8)
    sample = SimpleNamespace(name="a.jpg", read_image=lambda: image,
                             gt=GroundTruth((box,), np.zeros(1, bool)))
    ours = SimpleNamespace(detect=lambda frame: Detections((box,), np.ones(1)))
    report = bench_images([sample], lambda frame: [box], ours, repeats=1)
    assert report["accuracy"]["rapidocr"]["hmean"] == report["accuracy"]["dbrt"]["hmean"] == 1.0
    assert report["agreement"]["hmean"] == 1.0


def test_peer_rapidocr_records_the_command_it_was_given(tmp_path, monkeypatch):
    """The results said `python benchmarks/peer_rapidocr.py` followed by the process's own
    arguments: under `dbrt bench peer --frames 5` that was `... bench peer --frames 5`, not a
    command that reproduces the run."""
    import contextlib
    import sys
    from types import SimpleNamespace

    from benchmarks import peer_rapidocr as peer

    data = tmp_path / "data"
    (data / "realdev").mkdir(parents=True)
    (data / "realdev" / "gt.json").write_text("[]")
    theirs = SimpleNamespace(version="3.10.0", settings={})
    monkeypatch.setattr(peer, "locate_model", lambda: tmp_path / "det.onnx")
    monkeypatch.setattr(peer.common, "file_sha256", lambda path: "0" * 16)
    monkeypatch.setattr(peer, "RapidOcrDetector", lambda model, threads: theirs)
    monkeypatch.setattr(peer, "dbrt_detector", lambda *a: contextlib.nullcontext(
        SimpleNamespace(describe=lambda: {})))
    monkeypatch.setattr(peer, "open_dataset", lambda path: [])
    monkeypatch.setattr(peer, "bench_images", lambda *a: {})
    monkeypatch.setattr(peer, "bench_video", lambda *a: {})
    written = {}
    monkeypatch.setattr(peer, "write_reports", lambda report, out, name: written.update(report) or [])
    monkeypatch.setattr(sys, "argv", ["dbrt", "bench", "peer", "--frames", "5"])
    assert peer.main(["--frames", "5", "--sessions", "1", "--data", str(data)]) == 0
    assert written["command"] == f"python -m benchmarks.peer_rapidocr --frames 5 --sessions 1 --data {tmp_path.name}/data"


def _reading_fakes(calls, images=3):
    """A tiny dataset, a dbrt detector + recognizer and a RapidOCR engine that record their calls."""
    from types import SimpleNamespace

    from pipeline.detections import Detections

    quad = np.float32([[10, 10], [60, 10], [60, 30], [10, 30]])
    gt = SimpleNamespace(polygons=(quad,), ignore=(False,), texts=("WORD",))
    image = np.full((64, 128, 3), 128, np.uint8)
    dataset = [SimpleNamespace(name=f"img_{i}.jpg", gt=gt, read_image=lambda: image) for i in range(images)]
    found = Detections.from_quads(quad[None], np.ones(1, np.float32), {"text": ["WORD"], "text_score": [1.0]})
    detector = SimpleNamespace(detect=lambda img: calls.append("dbrt") or found)
    recognizer = SimpleNamespace(read=lambda img, dets: calls.append("dbrt"))
    engine = SimpleNamespace(text_rec=lambda crops: calls.append("rapidocr"))
    return dataset, detector, recognizer, engine


def test_reading_bench_sides_take_turns_after_a_warm_up(monkeypatch):
    """The recognition cost timed all of dbrt's rounds, then all of RapidOCR's (a load change
    fell on one side), and the end-to-end latency had no untimed first call and dbrt always
    first."""
    pytest.importorskip("rapidocr")
    from types import SimpleNamespace

    from benchmarks import reading_bench

    calls = []
    dataset, detector, recognizer, engine = _reading_fakes(calls)
    monkeypatch.setattr(reading_bench, "_rapidocr_detections",
                        lambda engine, image: calls.append("rapidocr") or reading_bench.Detections.from_quads(
                            np.zeros((0, 4, 2), np.float32), [], {"text": [], "text_score": []}))
    rows = reading_bench.end_to_end(dataset, detector, SimpleNamespace())["rows"]
    assert calls == ["dbrt", "rapidocr"] * 2 + ["rapidocr", "dbrt", "dbrt", "rapidocr"]
    assert [r["correct"] for r in rows] == [3, 0]
    calls.clear()
    cost = reading_bench.recognition_cost(dataset, recognizer, engine, rounds=3)
    assert calls == (["dbrt"] * 3 + ["rapidocr"] * 3) * 4  # a warm-up, then 3 rounds in turns
    assert [r["instances"] for r in cost["rows"]] == [3, 3, 3]


def test_peer_rapidocr_sides_take_turns_going_first(monkeypatch):
    """RapidOCR always ran first in every video round and every realdev repeat, dbrt after it:
    a load that built up within a round fell on dbrt's side."""
    from types import SimpleNamespace

    from benchmarks import peer_rapidocr as peer

    calls = []
    monkeypatch.setattr(peer, "run_theirs_on_video",
                        lambda path, frames, theirs: (calls.append("rapidocr") or [[]] * frames, 1.0))
    monkeypatch.setattr(peer, "run_ours_on_video",
                        lambda path, frames, detector, batch: (calls.append(detector) or [[]] * frames, 0.5))
    monkeypatch.setattr(peer, "inference_alone_ms", lambda detector, frame: 1.0)
    monkeypatch.setattr(peer, "read_frames", lambda path, frames=None, every=1: iter([None]))
    monkeypatch.setattr(peer, "sampled_agreement", lambda *a: {})
    monkeypatch.setattr(peer, "agreement", lambda theirs, ours: {"hmean": 1.0})
    report = peer.bench_video(peer.Path("v.mp4"), 4, None, {"pipeline": ("a", 1), "two": ("b", 2)},
                              rounds=3)
    assert calls[3:] == ["rapidocr", "a", "b", "a", "b", "rapidocr", "b", "rapidocr", "a"]
    assert report["speedup"] == {"pipeline": 2.0, "two": 2.0} and report["agreement"]["two"] == {"hmean": 1.0}

    calls.clear()
    theirs = lambda image: calls.append("rapidocr") or []  # noqa: E731
    ours = SimpleNamespace(detect=lambda image: calls.append("dbrt") or [])
    monkeypatch.setattr(peer, "_accuracy", lambda dataset, found: {})
    image = np.zeros((8, 8, 3), np.uint8)
    peer.bench_images([SimpleNamespace(read_image=lambda: image)], theirs, ours, repeats=4)
    assert calls[2:] == ["rapidocr", "dbrt", "dbrt", "rapidocr"] * 2
