"""DBPostprocessor interface: options, shapes, scaling to the frame, errors."""
import cv2
import numpy as np
import pytest

from dbnet.spec import ModelSpec
from engine.errors import DbrtError, ModelError, ShapeError
from pipeline.postprocess import DBPostprocessor, PostprocessConfig, PostprocessError, cpu
from pipeline.preprocess import Letterbox, make_letterbox


def _map_with_rect(h=64, w=96, box=(10, 20, 40, 32), value=0.9):
    prob = np.zeros((1, 1, h, w), np.float32)
    x0, y0, x1, y1 = box
    prob[0, 0, y0:y1, x0:x1] = value
    return prob


@pytest.mark.parametrize("options", [
    dict(thresh=1.5), dict(thresh=-0.1), dict(box_thresh="0.5"), dict(max_candidates=0),
    dict(max_candidates=2.5), dict(unclip_ratio=-1), dict(unclip_ratio=float("nan")),
    dict(min_size=0), dict(use_dilation=1), dict(score_mode="mean"), dict(box_type="rect"),
])
def test_bad_options_raise_one_clear_error(options):
    with pytest.raises(PostprocessError) as info:
        PostprocessConfig(**options)
    assert isinstance(info.value, DbrtError)
    assert next(iter(options)) in str(info.value)


def test_the_spec_carries_the_post_processing_settings():
    spec = ModelSpec().replace(thresh=0.25, box_thresh=0.55, unclip_ratio=1.8, box_type="poly")
    cfg = spec.post
    assert (cfg.thresh, cfg.box_thresh, cfg.unclip_ratio) == (0.25, 0.55, 1.8)
    assert cfg.box_type == "poly" and cfg.score_mode == "fast"
    with pytest.raises(ModelError, match="unknown"):
        spec.replace(threshold=0.2)
    with pytest.raises(PostprocessError, match="box_thresh"):
        spec.replace(box_thresh=1.5)
    with pytest.raises(PostprocessError):
        DBPostprocessor(cfg, device="tpu")


def test_one_rectangle_maps_back_to_the_frame():
    prob = _map_with_rect()
    box = make_letterbox(128, 192, 64, 96)  # frame is twice the input
    dets = DBPostprocessor()(prob, [box])
    assert len(dets) == 1 and len(dets[0]) == 1
    det = dets[0]
    assert det.scores[0] == pytest.approx(0.9, abs=1e-6)
    x0, y0, x1, y1 = det.boxes_xyxy[0]
    # contour rectangle 29x11, unclipped by 319 * 1.5 / 80 = 5.98 px each side, then doubled
    assert x0 < 20 < 78 < x1 and y0 < 40 < 62 < y1
    assert x1 - x0 == pytest.approx(2 * (29 + 2 * 5.98), abs=2)
    assert y1 - y0 == pytest.approx(2 * (11 + 2 * 5.98), abs=2)


def test_shapes_batch_and_letterbox_content_only():
    prob = np.concatenate([_map_with_rect(), _map_with_rect(value=0.1)])[:, 0]  # (2, H, W)
    padded = Letterbox(32, 32, 64, 96, 1.0, 1.0, 32, 32)  # content is the top-left 32x32
    full = make_letterbox(64, 96, 64, 96)
    dets = DBPostprocessor()(prob, [padded, full])
    assert [len(d) for d in dets] == [1, 0]
    assert dets[0].boxes_xyxy[0, 2] <= 32  # clipped to the frame, not the padded input
    poly = DBPostprocessor(PostprocessConfig(box_type="poly"))(prob[:1], [full])[0]
    assert len(poly) == 1 and len(poly.polygons[0]) >= 4


@pytest.mark.parametrize("prob, boxes, error", [
    (np.zeros((1, 2, 64, 96), np.float32), 1, ShapeError),
    (np.zeros((1, 1, 64, 96), np.uint8), 1, ShapeError),
    (np.zeros((2, 64, 96), np.float32), 1, ShapeError),
    (np.zeros((1, 64, 32), np.float32), 1, ShapeError),
    (np.full((1, 64, 96), np.nan, np.float32), 1, PostprocessError),
])
def test_bad_maps_raise(prob, boxes, error):
    with pytest.raises(error):
        DBPostprocessor()(prob, [make_letterbox(64, 96, 64, 96)] * boxes)


def test_empty_maps_give_empty_detections():
    (det,) = DBPostprocessor()(np.zeros((1, 64, 96), np.float16), [make_letterbox(64, 96, 64, 96)])
    assert len(det) == 0


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (37, 53)])
def test_binarize_dilation_equals_opencv(shape, postprocess_path):
    prob = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    for thresh in (0.3, 0.9):
        config = PostprocessConfig(thresh=thresh, use_dilation=True)
        expected = cv2.dilate((prob > thresh).astype(np.uint8), np.ones((2, 2), np.uint8))
        np.testing.assert_array_equal(cpu.binarize(prob, config), expected)


@pytest.mark.parametrize("strip_bytes", [1, 40, 200, 1 << 19])
def test_binarize_in_strips_equals_opencv_and_finds_every_non_finite_value(monkeypatch, strip_bytes):
    """Without the compiled steps binarize reads the map in strips of rows: the bitmap (plain
    and dilated, also of a non-contiguous view) must not depend on where the strips end, and a
    NaN / inf anywhere must raise."""
    from conftest import use_numpy_postprocess

    use_numpy_postprocess(monkeypatch)
    monkeypatch.setattr(cpu, "_STRIP_BYTES", strip_bytes)
    rng = np.random.default_rng(strip_bytes)
    for h, w in [(1, 1), (1, 7), (7, 1), (13, 29), (50, 40)]:
        prob = rng.random((h + 3, w + 2)).astype(np.float32)[:h, :w]
        plain = (prob > 0.5).astype(np.uint8)
        for dilate, expected in [(False, plain), (True, cv2.dilate(plain, np.ones((2, 2), np.uint8)))]:
            config = PostprocessConfig(thresh=0.5, use_dilation=dilate)
            np.testing.assert_array_equal(cpu.binarize(prob, config), expected)
            bad = prob.copy()
            bad[rng.integers(h), rng.integers(w)] = rng.choice([np.nan, np.inf, -np.inf])
            with pytest.raises(PostprocessError, match="NaN or infinite"):
                cpu.binarize(bad, config)


def test_non_finite_values_outside_the_content_raise():
    prob = np.zeros((2, 64, 96), np.float32)
    prob[1, 40, 90] = np.nan  # in the padding of the second map
    padded = Letterbox(32, 32, 64, 96, 1.0, 1.0, 32, 32)
    with pytest.raises(PostprocessError, match="NaN or infinite"):
        DBPostprocessor()(prob, [padded, padded])


def test_threads_and_changing_map_sizes_do_not_share_scratch_memory(postprocess_path):
    """Bitmaps live in per-thread scratch memory reused from call to call: results must not
    depend on what ran before or next to them."""
    from concurrent.futures import ThreadPoolExecutor

    from postprocess_maps import random_map

    rng = np.random.default_rng(4)
    maps = [random_map(rng, int(rng.integers(20, 90)), int(rng.integers(20, 120)), 15) for _ in range(24)]
    config = PostprocessConfig(use_dilation=True, box_thresh=0.4)
    expected = [cpu.postprocess_map(m, config) for m in maps]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda m: cpu.postprocess_map(m, config), maps[::-1]))[::-1]
            for (ep, es), (gp, gs) in zip(expected, got):
                assert es == gs and all(np.array_equal(a, b) for a, b in zip(ep, gp))


def _blob_contours(rng, count):
    """Contours of random blobs (the shapes a probability map's bitmap has), plus long edges."""
    contours = []
    while len(contours) < count:
        h, w = rng.integers(20, 300, 2)
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(0.5, 5))
        found, _ = cv2.findContours((noise > rng.uniform(0.45, 0.6)).astype(np.uint8),
                                    cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        contours += found
    contours.append(np.array([[0, 0], [3999, 0], [3999, 2999], [0, 2999], [2000, 1]],
                             np.int32).reshape(-1, 1, 2))
    return contours


def test_arc_lengths_equal_opencv_bit_for_bit(postprocess_path):
    contours = _blob_contours(np.random.default_rng(0), 3000)
    expected = np.array([cv2.arcLength(c, True) for c in contours])
    ours = cpu.closed_arc_lengths(contours)
    np.testing.assert_array_equal(ours.view(np.int64), expected.view(np.int64))
    assert cpu.closed_arc_lengths([]).shape == (0,)


def test_offsets_called_surely_wide_are_wide():
    """The minAreaRect check expand_polygons leaves out where surely_wide says it cannot fail:
    on contour polygons and on arbitrary (self-intersecting) ones, it would have passed."""
    from pipeline.postprocess.geometry import offset_polygon, surely_wide, unclip_distances
    rng = np.random.default_rng(1)
    polys = [cv2.approxPolyDP(c, 0.002 * cv2.arcLength(c, True), True).reshape(-1, 2)
             for c in _blob_contours(rng, 1500) if len(c) >= 4]
    polys += [rng.integers(0, rng.choice([8, 30, 200]), (rng.integers(4, 10), 2)) for _ in range(1500)]
    polys = [p for p in polys if len(p) >= 4]
    spared = 0
    for ratio in (0.8, 1.5, 2.0):
        distances = unclip_distances(polys, ratio)
        for poly, distance, wide in zip(polys, distances, surely_wide(distances, 5.0)):
            result = offset_polygon(poly.tolist(), distance) if wide else []
            if len(result) == 1:
                spared += 1
                assert min(cv2.minAreaRect(np.array(result[0], np.int32))[1]) >= 5.0
    assert spared > 500
