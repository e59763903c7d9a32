"""The compiled post-processing steps (pipeline/postprocess/_steps.c, _fill.c) against what they
replace, bit for bit: cv2.fillPoly + cv2.mean, the NumPy bitmap and finite check, shapely's ring
sums, cv2.arcLength. Also: bad inputs raise instead of reading out of bounds, and an OpenCV that
fills differently makes the scores fall back to OpenCV. Skipped where the extension was not
built; the rest of the suite runs both paths (the `postprocess_path` fixture)."""
import logging

import cv2
import numpy as np
import pytest

from pipeline.postprocess import DBPostprocessor, PostprocessConfig, compiled, cpu
from pipeline.preprocess import make_letterbox

from conftest import compiled_steps_built, use_numpy_postprocess
from postprocess_maps import random_map

pytestmark = pytest.mark.skipif(not compiled_steps_built(),
                                reason="the compiled post-processing steps are not built here")


def _opencv_mean(prob, crop, polygon):
    x0, y0, x1, y1 = crop
    window = prob[y0:y1 + 1, x0:x1 + 1]
    return cv2.mean(window, cv2.fillPoly(np.zeros(window.shape, np.uint8), [polygon], 1))[0]


def _random_case(rng, far: bool):
    """A strided map view, crops in it and polygons in crop coordinates (far: reaching well
    outside the crop on every side, which exercises the clipping rules)."""
    h, w = (int(v) for v in rng.integers(1, 120, 2))
    prob = rng.random((h + 4, w + 6), dtype=np.float32)[2:h + 2, 3:w + 3]
    crops, polygons = [], []
    for _ in range(int(rng.integers(1, 8))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = int(rng.integers(x0, w)), int(rng.integers(y0, h))
        k = int(rng.integers(1, 40))
        if far:
            reach = 3 * max(x1 - x0, y1 - y0) + 40
            points = rng.integers(-reach, reach + 1, (k, 2))
        else:
            points = np.column_stack([rng.integers(0, x1 - x0 + 1, k), rng.integers(0, y1 - y0 + 1, k)])
        crops.append((x0, y0, x1, y1))
        polygons.append(points.astype(np.int32))
    return prob, crops, polygons


@pytest.mark.parametrize("far", [False, True])
def test_polygon_means_equal_fillpoly_and_mean_bit_for_bit(far):
    rng = np.random.default_rng(int(far))
    for _ in range(1500):
        prob, crops, polygons = _random_case(rng, far)
        starts = np.concatenate([[0], np.cumsum([len(p) for p in polygons])])
        ours = compiled.polygon_means(prob, np.array(crops), np.concatenate(polygons), starts)
        expected = np.array([_opencv_mean(prob, c, p) for c, p in zip(crops, polygons)])
        np.testing.assert_array_equal(ours.view(np.int64), expected.view(np.int64))


def test_polygon_means_of_no_candidates_and_of_degenerate_polygons():
    prob = np.arange(30, dtype=np.float32).reshape(5, 6) / 30
    empty = compiled.polygon_means(prob, np.zeros((0, 4)), np.zeros((0, 2)), np.zeros(1))
    assert empty.shape == (0,)
    crops = np.array([[0, 0, 5, 4]] * 4)
    polygons = [np.array([[2, 2]]), np.array([[0, 0], [5, 0]]), np.array([[1, 1], [1, 3], [1, 1]]),
                np.array([[-9, -9], [-8, -9], [-8, -8]])]  # a point, a line, a spike, outside
    starts = np.concatenate([[0], np.cumsum([len(p) for p in polygons])])
    ours = compiled.polygon_means(prob, crops, np.concatenate(polygons).astype(np.int32), starts)
    np.testing.assert_array_equal(ours, [_opencv_mean(prob, c, p.astype(np.int32))
                                         for c, p in zip(crops.tolist(), polygons)])


@pytest.mark.parametrize("case", ["crop outside", "starts beyond the points", "float crops",
                                  "decreasing starts", "map not float32"])
def test_bad_inputs_raise_instead_of_reading_out_of_bounds(case):
    from pipeline.postprocess import _fill

    prob = np.zeros((8, 10), np.float32)
    crops, points, starts = np.array([[0, 0, 3, 3]]), np.zeros((4, 2), np.int32), np.array([0, 4])
    if case == "crop outside":
        crops = np.array([[0, 0, 10, 3]])
    elif case == "starts beyond the points":
        starts = np.array([0, 5])
    elif case == "float crops":
        crops = crops.astype(np.float32)
    elif case == "decreasing starts":
        crops, starts = np.array([[0, 0, 3, 3], [0, 0, 1, 1]]), np.array([0, 3, 2])
    else:
        prob = prob.astype(np.float64)
    with pytest.raises(ValueError):
        _fill.polygon_means(prob, crops, points, starts, np.empty(len(crops)))


def test_threshold_equals_numpy_and_finds_non_finite_values(monkeypatch):
    rng = np.random.default_rng(3)
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        prob = rng.random((h + 2, w + 3), dtype=np.float32)[1:h + 1, :w]
        prob[rng.random(prob.shape) < 0.02] = np.float32(0.3)  # ties with the threshold
        bad = rng.random() < 0.3
        if bad:
            prob[rng.integers(h), rng.integers(w)] = rng.choice([np.nan, np.inf, -np.inf])
        for dilate in (False, True):
            ours, theirs = np.empty((h, w), np.uint8), np.empty((h, w), np.uint8)
            config = PostprocessConfig(thresh=float(rng.choice([0.3, 0.31, 0.7])), use_dilation=dilate)
            finite = compiled.threshold(prob, config.thresh, dilate, ours)
            assert finite == np.isfinite(cpu._threshold_strips(prob, config, theirs)) == (not bad)
            np.testing.assert_array_equal(ours, theirs)


def test_threshold_leaves_maps_with_strided_rows_to_numpy():
    prob = np.zeros((4, 8), np.float32)[:, ::2]
    assert compiled.threshold(prob, 0.3, False, np.empty((4, 4), np.uint8)) is None
    assert cpu.binarize(prob, PostprocessConfig()).shape == (4, 4)


def test_an_opencv_that_fills_differently_makes_the_scores_fall_back(monkeypatch, caplog):
    """An OpenCV release with other rasterisation rules must not change any score: the check
    before the first use sends the scores back to OpenCV, with one warning."""
    def off_by_a_little(prob, crops, points, starts, out):
        out[:] = 0.5

    assert not compiled.agrees_with_opencv(off_by_a_little)
    monkeypatch.setattr(compiled, "agrees_with_opencv", lambda kernel: False)
    monkeypatch.setattr(compiled, "_LOADED", {})
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        assert compiled.polygon_means(np.zeros((4, 4), np.float32), np.array([[0, 0, 1, 1]]),
                                      np.zeros((3, 2), np.int32), np.array([0, 3])) is None
    assert "fills polygons differently" in caplog.text
    assert compiled.threshold(np.zeros((2, 2), np.float32), 0.3, False, np.empty((2, 2), np.uint8))


@pytest.mark.parametrize("box_type", ["quad", "poly"])
def test_the_compiled_and_numpy_paths_give_the_same_detections(box_type, monkeypatch):
    rng = np.random.default_rng(11)
    maps = [random_map(rng, int(rng.integers(30, 200)), int(rng.integers(30, 260)), 40) for _ in range(12)]
    configs = [PostprocessConfig(box_type=box_type, score_mode=mode, use_dilation=dilate, box_thresh=0.4)
               for mode in ("fast", "slow") for dilate in (False, True)]

    def run_all():
        return [DBPostprocessor(c)(m[None], [make_letterbox(*m.shape, *m.shape)])[0]
                for c in configs for m in maps]

    fast = run_all()
    use_numpy_postprocess(monkeypatch)
    slow = run_all()
    assert sum(len(d) for d in fast) > 50
    for a, b in zip(fast, slow):
        assert len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a.polygons, b.polygons))
        np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("opencv5", [True, False])
def test_box_corners_equal_box_points_in_the_reference_order(opencv5):
    from pipeline.postprocess.geometry import _corners, order_quads, rect_array

    rng = np.random.default_rng(2)
    rects = [cv2.minAreaRect(rng.normal(500, 200, (int(rng.integers(1, 30)), 2)).astype(np.float32))
             for _ in range(3000)]
    rects += [((float(x), float(y)), (float(w), float(h)), float(a)) for x, y, w, h, a in np.concatenate(
        [rng.uniform(-10, 3000, (2000, 2)), rng.uniform(0, 500, (2000, 2)),
         rng.choice([90.0, -90.0, 45.0, 0.0, 30.0], (2000, 1))], axis=1).astype(np.float32)]
    expected = order_quads(_corners(rect_array(rects), opencv5))
    np.testing.assert_array_equal(compiled.box_corners(rects, opencv5).view(np.int32),
                                  expected.view(np.int32))
    if opencv5 == (int(cv2.__version__.split(".")[0]) >= 5):  # the installed OpenCV's own corners
        boxes = order_quads(np.array([cv2.boxPoints(r) for r in rects], np.float32))
        np.testing.assert_array_equal(compiled.box_corners(rects, opencv5).view(np.int32),
                                      boxes.view(np.int32))
    assert compiled.box_corners([], opencv5).shape == (0, 4, 2)
    with pytest.raises(TypeError):
        compiled.box_corners([((1.0, 2.0), (3.0,), 0.0)], opencv5)


def test_window_means_over_gathered_crops_equal_the_map_crops():
    """The GPU path's host half scores crops gathered one after the other: the same values as
    scoring them in the map."""
    from pipeline.postprocess import gpu

    rng = np.random.default_rng(7)
    for far in (False, True):
        for _ in range(300):
            prob, crops, polygons = _random_case(rng, far)
            starts = np.concatenate([[0], np.cumsum([len(p) for p in polygons])])
            points = np.concatenate(polygons)
            values, windows = gpu.gather_crops(np, np.ascontiguousarray(prob)[None], [np.array(crops)])
            gathered = compiled.window_means(values, windows, points, starts)
            in_map = compiled.polygon_means(prob, np.array(crops), points, starts)
            np.testing.assert_array_equal(gathered.view(np.int64), in_map.view(np.int64))


@pytest.mark.parametrize("windows", [[[0, 3, 4]], [[-1, 2, 2]], [[0, 0, 2]], [[10, 1, 1]]])
def test_windows_outside_the_gathered_values_raise(windows):
    from pipeline.postprocess import _fill

    values = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="outside"):
        _fill.window_means(values, np.array(windows), np.zeros((1, 2), np.int32), np.array([0, 1]),
                           np.empty(1))


def test_maps_the_c_modules_do_not_read_take_the_numpy_path(monkeypatch):
    """float64 or byte-swapped maps are left to NumPy / OpenCV instead of raising."""
    prob = random_map(np.random.default_rng(5), 90, 120, 25)
    for other in (prob.astype(np.float64), prob.astype(">f4")):
        assert compiled.threshold(other, 0.3, False, np.empty(other.shape, np.uint8)) is None
        assert compiled.polygon_means(other, np.array([[0, 0, 1, 1]]), np.zeros((3, 2), np.int32),
                                      np.array([0, 3])) is None
    wide = prob.astype(np.float64)
    polys, scores = cpu.postprocess_map(wide, PostprocessConfig(box_thresh=0.3))
    use_numpy_postprocess(monkeypatch)
    expected = cpu.postprocess_map(wide, PostprocessConfig(box_thresh=0.3))
    assert len(polys) == len(expected[0]) > 0 and scores == expected[1]
    assert all(np.array_equal(a, b) for a, b in zip(polys, expected[0]))
