"""The ICDAR 2015 protocol (pipeline.evaluate) against hand-computed cases and the reference."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.datasets import GroundTruth, open_dataset
from pipeline.detections import Detections
from pipeline.eval_errors import draw_errors
from pipeline.evaluate import EvalResult, evaluate, evaluate_detector, evaluate_image
from pipeline.polygons import intersection_area, is_simple_polygon, polygon_area, polygon_iou


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


L_SHAPE = np.array([[0, 0], [20, 0], [20, 10], [10, 10], [10, 20], [0, 20]], np.float32)  # area 300
BOW_TIE = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float32)


# -- geometry -----------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    (rect(0, 0, 10, 10), rect(0, 0, 10, 10), 1.0),
    (rect(0, 0, 10, 10), rect(5, 0, 15, 10), 50 / 150),
    (rect(0, 0, 10, 10), rect(10, 0, 20, 10), 0.0),                          # touching edge
    (rect(0, 0, 10, 10), np.array([[5, 0], [10, 5], [5, 10], [0, 5]]), 0.5),  # inscribed diamond
    (L_SHAPE, rect(0, 0, 20, 20), 300 / 400),                                # non-convex
    (L_SHAPE, rect(0, 0, 20, 10), 200 / 300),
    (L_SHAPE, rect(10, 10, 20, 20), 0.0),                                    # the L's notch
    (rect(0.25, 0.25, 1.75, 1.25), rect(0.25, 0.25, 1.75, 1.25), 1.0),        # sub-pixel
])
def test_polygon_iou_hand_computed(a, b, expected):
    assert polygon_iou(a, b) == pytest.approx(expected, abs=1e-5)
    assert polygon_iou(b, a) == pytest.approx(expected, abs=1e-5)
    assert polygon_iou(a[::-1], b) == pytest.approx(expected, abs=1e-5)  # orientation-free


def test_area_and_intersection():
    assert polygon_area(L_SHAPE) == pytest.approx(300)
    assert polygon_area(L_SHAPE[::-1]) == pytest.approx(300)
    assert intersection_area(L_SHAPE, rect(5, 5, 15, 15)) == pytest.approx(75)


@pytest.mark.parametrize("poly, simple", [
    (rect(0, 0, 4, 2), True),
    (L_SHAPE, True),
    (BOW_TIE, False),
    (np.array([[0, 0], [5, 0], [10, 0], [3, 0]]), False),      # collinear, zero area
    (np.array([[0, 0], [5, 0]]), False),                      # too few points
    (np.array([[0, 0], [4, 0], [4, 0], [4, 4], [0, 4]]), True),  # repeated vertex is fine
    (np.array([[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]]), False),  # vertex touches an edge
])
def test_is_simple_polygon(poly, simple):
    assert is_simple_polygon(np.asarray(poly, np.float32)) is simple


# -- protocol, hand-computed ---------------------------------------------------------------------

def test_perfect_match():
    gts = [rect(0, 0, 100, 20), rect(0, 50, 80, 70), L_SHAPE + 200]
    res = evaluate_image(gts, [False] * 3, [g.copy() for g in gts[::-1]])
    assert res.matched == 3 and res.missed == () and res.false_alarms == ()
    assert (res.precision, res.recall, res.hmean) == (1.0, 1.0, 1.0)
    assert sorted((g, d) for g, d, _ in res.pairs) == [(0, 2), (1, 1), (2, 0)]


def test_split_box_one_half_matches_the_other_is_a_false_alarm():
    # gt 100x20; halves at x=55: IoU 0.55 and 0.45
    res = evaluate_image([rect(0, 0, 100, 20)], [False], [rect(0, 0, 55, 20), rect(55, 0, 100, 20)])
    assert [(g, d) for g, d, _ in res.pairs] == [(0, 0)]
    assert res.false_alarms == (1,)
    assert (res.precision, res.recall, res.hmean) == pytest.approx((0.5, 1.0, 2 / 3))


def test_split_exactly_in_half_misses_because_the_threshold_is_strict():
    res = evaluate_image([rect(0, 0, 100, 20)], [False], [rect(0, 0, 50, 20), rect(50, 0, 100, 20)])
    assert res.pairs == () and res.missed == (0,) and res.false_alarms == (0, 1)
    assert (res.precision, res.recall, res.hmean) == (0.0, 0.0, 0.0)


def test_merged_box_matches_at_most_one_ground_truth():
    # two words 0..70 and 75..100 merged into one 0..100 detection: IoU 0.7 with the first
    res = evaluate_image([rect(0, 0, 70, 20), rect(75, 0, 100, 20)], [False, False], [rect(0, 0, 100, 20)])
    assert [(g, d) for g, d, _ in res.pairs] == [(0, 0)]
    assert res.missed == (1,)
    assert (res.precision, res.recall) == (1.0, 0.5)
    assert res.hmean == pytest.approx(2 / 3)


def test_merged_box_over_two_equal_words_matches_none():
    res = evaluate_image([rect(0, 0, 40, 20), rect(60, 0, 100, 20)], [False, False], [rect(0, 0, 100, 20)])
    assert res.matched == 0 and (res.precision, res.recall) == (0.0, 0.0)


def test_one_to_one_duplicate_detections():
    res = evaluate_image([rect(0, 0, 50, 20)], [False], [rect(0, 0, 50, 20), rect(1, 0, 50, 20)])
    assert res.matched == 1 and res.false_alarms == (1,) and res.precision == 0.5


def test_matching_is_greedy_in_detection_order_like_the_reference():
    # det 0 has IoU 0.6, det 1 IoU 1.0: the reference takes the first above the threshold
    gt = rect(0, 0, 100, 20)
    res = evaluate_image([gt], [False], [rect(0, 0, 60, 20), gt.copy()])
    assert [(g, d) for g, d, _ in res.pairs] == [(0, 0)]
    assert res.pairs[0][2] == pytest.approx(0.6)
    assert res.false_alarms == (1,)


@pytest.mark.parametrize("det, ignored", [
    (rect(0, 0, 30, 20), True),        # fully inside the don't-care region
    (rect(-20, 0, 40, 20), True),      # 40/60 = 0.67 inside
    (rect(-50, 0, 50, 20), False),     # exactly half inside: strict, so it counts
    (rect(200, 0, 230, 20), False),    # elsewhere: a false alarm
])
def test_dont_care_regions(det, ignored):
    gts = [rect(0, 0, 100, 20), rect(0, 100, 100, 120)]
    res = evaluate_image(gts, [True, False], [det, rect(0, 100, 100, 120)])
    assert res.gt_dont_care == (0,)
    assert res.gt_care == 1 and res.matched == 1
    assert (res.det_dont_care == (0,)) is ignored
    assert res.det_care == (1 if ignored else 2)
    assert res.precision == (1.0 if ignored else 0.5)


def test_dont_care_ground_truth_is_never_matched_or_missed():
    res = evaluate_image([rect(0, 0, 100, 20)], [True], [rect(0, 0, 100, 20)])
    assert res.pairs == () and res.missed == () and res.false_alarms == ()
    assert (res.gt_care, res.det_care) == (0, 0)
    assert (res.precision, res.recall) == (1.0, 1.0)


def test_polygon_ground_truth_and_detections():
    band = np.array([[0, 20], [30, 5], [60, 0], [90, 5], [120, 20],
                     [120, 40], [90, 25], [60, 20], [30, 25], [0, 40]], np.float32)  # curved text
    quad_approx = rect(0, 0, 120, 40)
    res = evaluate_image([band], [False], [band + 1.0, quad_approx])
    assert [(g, d) for g, d, _ in res.pairs] == [(0, 0)]
    assert res.false_alarms == (1,)
    # the enclosing quad alone: IoU = band area / 4800 = 2400 / 4800 (not > 0.5)
    assert polygon_area(band) == pytest.approx(2400)
    assert evaluate_image([band], [False], [quad_approx]).matched == 0


@pytest.mark.parametrize("gts, ignore, dets, expected", [
    ([], [], [], (1.0, 1.0)),
    ([], [], [rect(0, 0, 5, 5)], (0.0, 1.0)),
    ([rect(0, 0, 5, 5)], [False], [], (0.0, 0.0)),
    ([rect(0, 0, 5, 5)], [True], [], (1.0, 1.0)),
])
def test_empty_cases(gts, ignore, dets, expected):
    res = evaluate_image(gts, ignore, dets)
    assert (res.precision, res.recall) == expected


def test_invalid_polygons_are_dropped_not_counted():
    res = evaluate_image([rect(0, 0, 10, 10), BOW_TIE + 50], [False, False], [BOW_TIE, rect(0, 0, 10, 10)])
    assert res.gt_invalid == (1,) and res.det_invalid == (0,)
    assert (res.gt_care, res.det_care, res.matched) == (1, 1, 1)


def test_overall_numbers_sum_matches_over_images():
    a = evaluate_image([rect(0, 0, 10, 10), rect(20, 0, 30, 10)], [False, False], [rect(0, 0, 10, 10)])
    b = evaluate_image([rect(0, 0, 10, 10)], [False], [rect(0, 0, 10, 10), rect(50, 50, 60, 60)])
    total = EvalResult((a, b))
    assert (total.matched, total.gt_care, total.det_care) == (2, 3, 3)
    assert (total.precision, total.recall) == pytest.approx((2 / 3, 2 / 3))
    assert total.hmean == pytest.approx(2 / 3)
    assert EvalResult(()).hmean == 0.0
    d = total.to_dict()
    assert d["matched"] == 2 and len(d["per_image"]) == 2
    json.dumps(d)  # serialisable


def test_recall_by_word_height_counts_cared_for_words_per_range():
    words = [rect(0, 0, 40, 5), rect(0, 10, 40, 22), rect(0, 30, 80, 70), rect(50, 0, 90, 6),
             rect(100, 0, 140, 12)]  # heights 5, 12, 40, 6, 12 (the last: do not care)
    a = evaluate_image(words, [False, False, False, False, True], [words[0], words[2]])
    b = evaluate_image([rect(0, 0, 40, 20)], [False], [])  # height 20, missed
    rows = EvalResult((a, b)).recall_by_height()
    assert [(r["min_px"], r["max_px"], r["words"], r["found"]) for r in rows] == [
        (0, 8, 2, 1), (8, 16, 1, 0), (16, 32, 1, 0), (32, float("inf"), 1, 1)]
    assert [r["recall"] for r in rows] == [0.5, 0.0, 0.0, 1.0]
    assert EvalResult((a, b)).height_summary() == (
        "recall by word height: <8 px 1/2 (0.50), 8-16 px 0/1 (0.00), 16-32 px 0/1 (0.00), >=32 px 1/1 (1.00)")
    assert EvalResult(()).recall_by_height()[0]["recall"] is None
    assert json.loads(json.dumps(EvalResult((a, b)).to_dict()))["recall_by_height"][-1]["max_px"] is None


def test_evaluate_accepts_detections_and_ground_truth_objects():
    gt = GroundTruth((rect(0, 0, 10, 10), rect(20, 0, 30, 10)), [False, True], ("a", "###"))
    dets = Detections.from_quads(np.stack([rect(0, 0, 10, 10), rect(20, 0, 30, 10)]), [0.9, 0.8])
    res = evaluate([gt], [dets], names=["img_1.jpg"])
    assert res.images[0].name == "img_1.jpg"
    assert (res.precision, res.recall, res.matched) == (1.0, 1.0, 1)
    with pytest.raises(ValueError):
        evaluate([gt], [])


def test_draw_errors_colours_misses_and_false_alarms():
    gts = [rect(10, 10, 40, 30), rect(60, 10, 90, 30)]
    res = evaluate_image(gts, [False, False], [rect(10, 10, 40, 30), rect(10, 60, 40, 90)])
    out = draw_errors(np.zeros((100, 100, 3), np.uint8), gts, [rect(10, 10, 40, 30), rect(10, 60, 40, 90)],
                      res, thickness=1)
    b, g, r = out[10, 75].astype(int)             # missed gt: red (anti-aliased edge)
    assert r > 128 and b == g == 0
    b, g, r = out[60, 25].astype(int)             # false alarm: orange
    assert r > 128 and b == 0 and g == pytest.approx(r * 165 / 255, abs=2)
    assert out[95, 95].sum() == 0
    # the kinds are written above the boxes ("not found", "background"); untagged without them
    untagged = draw_errors(np.zeros((100, 100, 3), np.uint8), gts, [rect(10, 10, 40, 30), rect(10, 60, 40, 90)],
                           dataclasses.replace(res, miss_kinds=None, false_alarm_kinds=None), thickness=1)
    assert untagged[45:58, 10:80].sum() == 0 and out[45:58, 10:80].sum() > 0
    assert (out[:, :, 0] > 0).sum() == (untagged[:, :, 0] > 0).sum()  # tags in the boxes' colours


def test_evaluate_detector_runs_a_detect_function_over_a_dataset(tmp_path):
    cv2 = pytest.importorskip("cv2")
    for i in (1, 2):
        cv2.imwrite(str(tmp_path / f"img_{i}.jpg"), np.zeros((40, 60, 3), np.uint8))
        (tmp_path / f"gt_img_{i}.txt").write_text("\ufeff5,5,30,5,30,20,5,20,word\n", encoding="utf-8")
    dataset = open_dataset(tmp_path)
    seen = []

    def detect(image):
        assert image.shape == (40, 60, 3)
        return Detections.from_quads(rect(5, 5, 30, 20)[None], [1.0])

    res = evaluate_detector(detect, dataset, on_image=lambda s, im, d, r: seen.append((s.name, r.hmean)))
    assert seen == [("img_1.jpg", 1.0), ("img_2.jpg", 1.0)]
    assert res.hmean == 1.0


def test_per_image_json_holds_the_detections_its_indices_point_at(tmp_path):
    """The per-image JSON gave detection indices (pairs, false_alarms, ...) of detections it
    did not contain; it now holds them, in dbrt run's JSON form."""
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "img_1.jpg"), np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "gt_img_1.txt").write_text("5,5,30,5,30,20,5,20,word\n", encoding="utf-8")
    found = Detections.from_quads(np.stack([rect(40, 25, 55, 35), rect(5, 5, 30, 20)]), [0.7, 0.9])
    res = evaluate_detector(lambda image: found, open_dataset(tmp_path))
    image = json.loads(json.dumps(res.to_dict()))["per_image"][0]
    assert image["pairs"][0]["det"] == 1 and image["false_alarms"] == [0]
    assert image["detections"] == found.to_records()
    assert image["detections"][1] == {"polygon": [[5.0, 5.0], [30.0, 5.0], [30.0, 20.0], [5.0, 20.0]],
                                      "score": 0.9}
    by_pairs = evaluate([GroundTruth([rect(5, 5, 30, 20)], [False])], [found])
    assert by_pairs.to_dict()["per_image"][0]["detections"] == image["detections"]


def test_realdev_ground_truth_scores_perfectly_against_itself(shared_data):
    dataset = open_dataset(shared_data / "realdev" / "gt.json")
    res = evaluate([s.gt for s in dataset],
                   [Detections(s.gt.polygons, np.ones(len(s.gt))) for s in dataset],
                   names=[s.name for s in dataset])
    assert res.gt_care == 103 - 65
    assert (res.precision, res.recall, res.hmean) == (1.0, 1.0, 1.0)


# -- differential test against a shapely statement of the reference protocol --------------------

def _reference(gts, ignore, dets, shapely):
    """MhLiao/DB's iou.py restated with shapely (skips invalid polygons, strict thresholds,
    greedy gt-then-det matching); returns (gt_care, det_care, matched)."""
    poly = shapely.geometry.Polygon
    g_ok = [(p, ig) for p, ig in zip(gts, ignore) if poly(p).is_valid and poly(p).is_simple]
    d_ok = [p for p in dets if poly(p).is_valid and poly(p).is_simple]
    dont = [p for p, ig in g_ok if ig]
    care_g = [p for p, ig in g_ok if not ig]
    care_d = [d for d in d_ok if not any(
        poly(d).area and poly(d).intersection(poly(g)).area / poly(d).area > 0.5 for g in dont)]
    used, matched = set(), 0
    for g in care_g:
        for j, d in enumerate(care_d):
            if j not in used:
                inter = poly(g).intersection(poly(d)).area
                if inter / poly(g).union(poly(d)).area > 0.5:
                    used.add(j)
                    matched += 1
                    break
    return len(care_g), len(care_d), matched


def _random_quad(rng):
    cx, cy = rng.uniform(20, 80, 2)
    w, h = rng.uniform(5, 40), rng.uniform(4, 15)
    angle = rng.uniform(-0.5, 0.5)
    c, s = np.cos(angle), np.sin(angle)
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ np.array([[c, s], [-s, c]])
    return (pts + [cx, cy] + rng.normal(0, 1.5, (4, 2))).astype(np.float32)


def _random_band(rng):
    """A curved text band (Total-Text style): 5 points along an arc on each side."""
    cx, cy, radius = rng.uniform(30, 70), rng.uniform(60, 90), rng.uniform(30, 60)
    start, span, thick = rng.uniform(-2.6, -1.8), rng.uniform(0.5, 1.2), rng.uniform(5, 15)
    angles = start + span * np.linspace(0, 1, 5)
    outer = np.stack([cx + (radius + thick) * np.cos(angles), cy + (radius + thick) * np.sin(angles)], 1)
    inner = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)[::-1]
    return np.concatenate([outer, inner]).astype(np.float32)


@pytest.mark.parametrize("shape", ["quads", "curved bands"])
def test_agrees_with_shapely_reference_on_random_scenes(rng, shape):
    pytest.importorskip("shapely", reason="shapely (dev extra) is the reference's geometry library")
    import shapely
    import shapely.geometry  # noqa: F401 - loads the submodule used below

    make = _random_quad if shape == "quads" else _random_band
    for _ in range(60):
        gts = [make(rng) for _ in range(rng.integers(0, 6))]
        ignore = list(rng.random(len(gts)) < 0.3)
        dets = [g + rng.normal(0, 3, g.shape).astype(np.float32) for g in gts if rng.random() < 0.8]
        dets += [make(rng) for _ in range(rng.integers(0, 3))]
        res = evaluate_image(gts, ignore, dets)
        assert (res.gt_care, res.det_care, res.matched) == _reference(gts, ignore, dets, shapely)
        for g in gts:
            for d in dets:
                if is_simple_polygon(g) and is_simple_polygon(d):
                    ref = shapely.geometry.Polygon(g).intersection(shapely.geometry.Polygon(d)).area
                    assert intersection_area(g, d) == pytest.approx(ref, abs=1e-2)


# -- dbrt eval -----------------------------------------------------------------------------------

def test_cli_eval_writes_json_and_visualisation(tmp_path, tiny_onnx, capsys):
    cv2 = pytest.importorskip("cv2")
    from pipeline.cli import main

    data = tmp_path / "ic15"
    data.mkdir()
    image = np.full((64, 96, 3), 255, np.uint8)
    cv2.putText(image, "TEXT", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 3)
    cv2.imwrite(str(data / "img_1.jpg"), image)
    (data / "gt_img_1.txt").write_text("\ufeff8,15,80,15,80,45,8,45,TEXT\n2,2,6,2,6,6,2,6,###\n")
    out = tmp_path / "eval.json"
    rc = main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--json", str(out),
               "--vis", str(tmp_path / "vis"), "--box-thresh", "0.0", "--threads", "1"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["images"] == 1 and result["gt_care"] == 1
    assert result["format"] == "icdar2015" and 0.0 <= result["hmean"] <= 1.0
    assert result["per_image"][0]["image"] == "img_1.jpg"
    assert [r["words"] for r in result["recall_by_height"]] == [0, 0, 1, 0]  # 30 px tall
    printed = capsys.readouterr().out
    assert "hmean" in printed and "recall by word height: <8 px 0/0, 8-16 px 0/0, 16-32 px " in printed
    assert "\nmissed " in printed and "; false alarms " in printed
    assert set(result["errors"]) == {"missed", "false_alarms"}
    missed_or_false = result["per_image"][0]["missed"] or result["per_image"][0]["false_alarms"]
    assert (tmp_path / "vis" / "img_1.jpg").is_file() == bool(missed_or_false)


def test_cli_eval_vis_that_cannot_be_written_is_one_error_naming_the_file(tmp_path, tiny_onnx,
                                                                        capsys, monkeypatch):
    """cv2.imwrite's False was ignored: on a full disk --vis reported success with no images."""
    cv2 = pytest.importorskip("cv2")
    from pipeline.cli import main

    data = tmp_path / "ic15"
    data.mkdir()
    cv2.imwrite(str(data / "img_1.jpg"), np.full((64, 96, 3), 255, np.uint8))
    (data / "gt_img_1.txt").write_text("8,15,80,15,80,45,8,45,TEXT\n")  # blank image: missed
    monkeypatch.setattr(cv2, "imwrite", lambda *args, **kwargs: False)
    vis = tmp_path / "vis"
    rc = main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--vis", str(vis),
               "--threads", "1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"dbrt eval: error: {vis / 'img_1.jpg'}: OpenCV could not write the image"]


def test_cli_eval_quiet_prints_the_overall_line_only_and_the_json_whole(tmp_path, tiny_onnx,
                                                                       capsys, monkeypatch):
    """--quiet ('print only the overall line') printed the word-height and error-kind lines too;
    and --json was written in place, so a run killed while writing left half a file."""
    cv2 = pytest.importorskip("cv2")
    from pathlib import Path

    from pipeline.cli import main

    data = tmp_path / "ic15"
    data.mkdir()
    cv2.imwrite(str(data / "img_1.jpg"), np.full((64, 96, 3), 255, np.uint8))
    (data / "gt_img_1.txt").write_text("8,15,80,15,80,45,8,45,TEXT\n")
    out = tmp_path / "eval.json"
    out.write_text('{"an earlier": "report"}\n')
    written = []
    real_write = Path.write_text

    def write_text(self, text, *args, **kwargs):
        written.append(self)
        if self.name.startswith("eval.json"):
            real_write(self, text[:10])  # killed half-way
            raise KeyboardInterrupt
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    rc = main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--json", str(out),
               "--threads", "1", "--quiet"])
    monkeypatch.undo()
    assert rc != 0
    assert json.loads(out.read_text()) == {"an earlier": "report"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "ic15"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "hmean" in printed[0], printed


def test_cli_eval_bad_dataset_is_one_line_exit_2(tmp_path, tiny_onnx, capsys):
    from pipeline.cli import main

    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset not found" in err[0]


def test_a_detections_object_is_scored_like_its_polygons():
    from pipeline.detections import Detections
    from pipeline.evaluate import evaluate_image

    quad = np.float32([[0, 0], [10, 0], [10, 5], [0, 5]])
    dets = Detections.from_quads(quad[None], [0.9])
    by_object = evaluate_image([quad], [False], dets)
    by_polygons = evaluate_image([quad], [False], dets.polygons)
    assert by_object == by_polygons and by_object.matched == 1
