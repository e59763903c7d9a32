"""The GPU path: its NumPy twin against the CPU path, its copies and array calls per batch
(always); CuPy against NumPy and the CPU path (GPU only)."""
import itertools

import cv2
import numpy as np
import pytest

from engine.lazy import cupy_or_none
from pipeline.postprocess import DBPostprocessor, PostprocessConfig, PostprocessError, cpu, gpu
from pipeline.postprocess.arrays import dilate_2x2
from pipeline.preprocess import Letterbox

from postprocess_maps import dense_map, random_map

MODES = list(itertools.product([False, True], ["fast", "slow"], ["quad", "poly"]))


def _identical(cpu_result, gpu_result):
    (cpolys, cscores), (gpolys, gscores) = cpu_result, gpu_result
    assert len(cpolys) == len(gpolys)
    for a, b in zip(cpolys, gpolys):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert gscores == cscores  # the same float64 means, bit for bit
    return len(cpolys)


def _batch_vs_cpu(maps, sizes, config, to_device=np.asarray):
    results = gpu.postprocess_batch(to_device(maps), sizes, config)
    found = 0
    for m, (h, w) in enumerate(sizes):
        found += _identical(cpu.postprocess_map(np.ascontiguousarray(maps[m, :h, :w]), config),
                            results[m])
    return found


@pytest.mark.parametrize("dilation, score_mode, box_type", MODES)
def test_numpy_twin_matches_the_cpu_path(dilation, score_mode, box_type, postprocess_path):
    rng = np.random.default_rng(sum(map(ord, f"{dilation}{score_mode}{box_type}")))
    config = PostprocessConfig(use_dilation=dilation, score_mode=score_mode, box_type=box_type,
                               box_thresh=0.5)
    found = 0
    for _ in range(25):
        h, w = int(rng.integers(16, 100)), int(rng.integers(16, 120))
        maps = np.stack([random_map(rng, h, w, int(rng.integers(1, 25))) for _ in range(2)])
        sizes = [(h, w), (h - int(rng.integers(0, 6)), w - int(rng.integers(0, 6)))]
        found += _batch_vs_cpu(maps, sizes, config)
    assert found > 50


def test_numpy_twin_truncates_and_sees_holes_like_the_cpu_path():
    rng = np.random.default_rng(3)
    for max_candidates in (1, 2, 5, 17):
        config = PostprocessConfig(max_candidates=max_candidates, box_thresh=0.3)
        for _ in range(10):
            _batch_vs_cpu(random_map(rng, 60, 90, 40, blur=False)[None], [(60, 90)], config)


def test_host_bitmaps_match_the_cpu_binarisation_and_reject_nan(rng):
    maps = rng.random((3, 21, 30)).astype(np.float32)
    for dilation in (False, True):
        config = PostprocessConfig(use_dilation=dilation)
        bitmaps = gpu.host_bitmaps(np, maps, config)
        for m in range(3):
            np.testing.assert_array_equal(bitmaps[m], cpu.binarize(maps[m], config))
            # dilation looks only left / up, so the content crop of the dilated map is exact
            np.testing.assert_array_equal(bitmaps[m, :17, :25], cpu.binarize(maps[m, :17, :25], config))
    maps[1, 3, 4] = np.inf
    with pytest.raises(PostprocessError, match="NaN or infinite"):
        gpu.host_bitmaps(np, maps, PostprocessConfig())


def test_dilation_twin_matches_opencv(rng):
    mask = rng.random((3, 20, 30)) > 0.6
    expected = np.stack([cv2.dilate(m.view(np.uint8), np.ones((2, 2), np.uint8)) for m in mask])
    np.testing.assert_array_equal(dilate_2x2(np, mask).view(np.uint8), expected)


def test_gather_crops_returns_the_map_crops(rng):
    maps = rng.random((3, 30, 40)).astype(np.float32)
    crops = []
    for _ in range(3):
        lo = rng.integers(0, (40, 30), (int(rng.integers(0, 6)), 2))
        hi = np.minimum(lo + rng.integers(0, 12, lo.shape), (39, 29))
        crops.append(np.concatenate([lo, hi], axis=1))
    values, windows = gpu.gather_crops(np, maps, crops)
    pieces = iter(gpu.crop_pieces(values, windows))
    for m, boxes in enumerate(crops):
        for x0, y0, x1, y1 in boxes:
            np.testing.assert_array_equal(next(pieces), maps[m, y0:y1 + 1, x0:x1 + 1])
    assert next(pieces, None) is None
    values, windows = gpu.gather_crops(np, maps, [np.zeros((0, 4), np.int64)] * 3)
    assert values.shape == (0,) and windows.shape == (0, 3)


class _CountingXp:
    """numpy behind a counter of module-level array calls; `get` copies count as host syncs."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        target = getattr(np, name)
        if not callable(target) or isinstance(target, type):
            return target

        def counted(*args, **kwargs):
            self.calls += 1
            return target(*args, **kwargs)
        return counted


@pytest.mark.parametrize("box_type", ["quad", "poly"])
def test_copies_and_array_calls_per_batch_do_not_grow_with_maps_or_boxes(monkeypatch, box_type):
    copies = []
    monkeypatch.setattr(gpu, "to_host", lambda a: copies.append(a.size) or np.asarray(a))
    monkeypatch.setattr(gpu, "array_module", lambda prob: xp)
    rng = np.random.default_rng(9)
    config = PostprocessConfig(box_type=box_type, use_dilation=True)
    counts = []
    for maps, boxes in ((1, 3), (4, 60)):
        xp, copies[:] = _CountingXp(), []
        batch = np.stack([dense_map(rng, 256, 384, boxes) for _ in range(maps)])
        results = gpu.postprocess_batch(batch, [(256, 384)] * maps, config)
        assert sum(len(polys) for polys, _ in results) >= maps
        assert len(copies) == 2  # the bitmaps, then the score crops
        assert copies[0] == 1 + maps * 256 * 384 // 8  # bit-packed, plus the finite flag
        counts.append(xp.calls)
    assert counts[0] == counts[1]


def test_postprocessor_routes_numpy_to_cpu_and_validates_the_device():
    post = DBPostprocessor(device="cpu")
    maps = random_map(np.random.default_rng(0), 64, 96, 10)[None]
    box = Letterbox(64, 96, 64, 96, 1.0, 1.0, 64, 96)
    (det,) = post(maps, [box])
    polys, scores = cpu.postprocess_map(maps[0], post.config)
    assert len(det) == len(polys)
    np.testing.assert_allclose(det.scores, scores, atol=1e-6)


# -- on a GPU ---------------------------------------------------------------------------------
cp = cupy_or_none()
gpu_only = pytest.mark.skipif(cp is None, reason="needs CuPy and a CUDA device")


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dilation, score_mode, box_type", MODES)
def test_cupy_path_matches_the_cpu_path(dilation, score_mode, box_type):
    rng = np.random.default_rng(7)
    config = PostprocessConfig(use_dilation=dilation, score_mode=score_mode, box_type=box_type)
    found = 0
    for _ in range(10):
        maps = np.stack([random_map(rng, 96, 128, 30) for _ in range(3)])
        found += _batch_vs_cpu(maps, [(96, 128), (90, 128), (96, 100)], config, cp.asarray)
    assert found > 10


@pytest.mark.gpu
@gpu_only
def test_cupy_building_blocks_match_their_numpy_twins(rng):
    maps = rng.random((3, 30, 41)).astype(np.float32)
    for dilation in (False, True):
        config = PostprocessConfig(use_dilation=dilation)
        np.testing.assert_array_equal(gpu.host_bitmaps(cp, cp.asarray(maps), config),
                                      gpu.host_bitmaps(np, maps, config))
    crops = [np.array([[0, 0, 40, 29], [3, 4, 9, 5]]), np.zeros((0, 4), np.int64), np.array([[7, 7, 7, 7]])]
    for dev, host in zip(gpu.gather_crops(cp, cp.asarray(maps), crops), gpu.gather_crops(np, maps, crops)):
        np.testing.assert_array_equal(dev, host)
    bad = maps.copy()
    bad[2, 5, 5] = np.nan
    with pytest.raises(PostprocessError, match="NaN or infinite"):
        gpu.host_bitmaps(cp, cp.asarray(bad), PostprocessConfig())


@pytest.mark.gpu
@gpu_only
def test_postprocessor_keeps_cupy_maps_on_the_gpu():
    maps = random_map(np.random.default_rng(1), 64, 96, 12)[None, None]
    box = Letterbox(128, 192, 64, 96, 0.5, 0.5, 64, 96)
    (on_gpu,) = DBPostprocessor()(cp.asarray(maps), [box])
    (on_cpu,) = DBPostprocessor()(maps, [box])
    assert len(on_gpu) == len(on_cpu)
    for a, b in zip(on_gpu.polygons, on_cpu.polygons):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(on_gpu.scores, on_cpu.scores)
