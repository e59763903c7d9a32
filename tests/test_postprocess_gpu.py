"""The GPU path: its NumPy twin against the CPU path (always), CuPy against NumPy (GPU only)."""
import itertools

import cv2
import numpy as np
import pytest

from engine.lazy import cupy_or_none
from pipeline.postprocess import DBPostprocessor, PostprocessConfig, cpu, gpu
from pipeline.postprocess.arrays import dilate_2x2, label_batch, scatter_max, scatter_min
from pipeline.postprocess.components import (HOLE, column, euler_number, find_candidates,
                                             to_host_compact)
from pipeline.preprocess import Letterbox

from postprocess_maps import random_map

MODES = list(itertools.product([False, True], ["fast", "slow"], ["quad", "poly"]))


def _same(cpu_result, gpu_result):
    (cpolys, cscores), (gpolys, gscores) = cpu_result, gpu_result
    assert len(cpolys) == len(gpolys)
    for a, b in zip(cpolys, gpolys):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-3
    np.testing.assert_allclose(gscores, cscores, atol=1e-6)
    return len(cpolys)


def _batch_vs_cpu(maps, sizes, config, to_device=np.asarray):
    results = gpu.postprocess_batch(to_device(maps), sizes, config)
    found = 0
    for m, (h, w) in enumerate(sizes):
        found += _same(cpu.postprocess_map(np.ascontiguousarray(maps[m, :h, :w]), config), results[m])
    return found


@pytest.mark.parametrize("dilation, score_mode, box_type", MODES)
def test_numpy_twin_matches_the_cpu_path(dilation, score_mode, box_type):
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


def test_numpy_twin_truncates_and_sees_holes_like_the_reference():
    rng = np.random.default_rng(3)
    holes = 0
    for max_candidates in (1, 2, 5, 17):
        config = PostprocessConfig(max_candidates=max_candidates, box_thresh=0.3)
        for _ in range(10):
            maps = random_map(rng, 60, 90, 40, blur=False)[None]
            _batch_vs_cpu(maps, [(60, 90)], config)
            table = to_host_compact(np, find_candidates(np, maps, [(60, 90)], config))[0]
            holes += int((table[:, column("kind")] == HOLE).sum())
            assert len(table) <= max_candidates
    assert holes > 0


def test_dilation_and_labelling_twins_match_opencv(rng):
    mask = rng.random((3, 20, 30)) > 0.6
    expected = np.stack([cv2.dilate(m.view(np.uint8), np.ones((2, 2), np.uint8)) for m in mask])
    np.testing.assert_array_equal(dilate_2x2(np, mask).view(np.uint8), expected)
    labels, count = label_batch(np, mask, 8)
    assert count == sum(cv2.connectedComponents(m.view(np.uint8), connectivity=8)[0] - 1 for m in mask)
    assert len(np.unique(labels)) == count + 1 and (labels[~mask] == 0).all()


def _components_minus_holes(plane):
    count = cv2.connectedComponents(plane.view(np.uint8), connectivity=8)[0] - 1
    n_bg, bg = cv2.connectedComponents((~plane).view(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    return count - len(np.setdiff1d(np.arange(1, n_bg), border))


def test_euler_number_counts_components_minus_holes():
    rng = np.random.default_rng(2)
    for _ in range(40):
        h, w = int(rng.integers(3, 60)), int(rng.integers(3, 60))
        mask = np.stack([random_map(rng, h, w, 15) > 0.3 for _ in range(2)])
        assert euler_number(np, mask) == sum(_components_minus_holes(m) for m in mask)


def _random_masks(rng, maps, count=20):
    n, h, w = maps.shape
    masks, origins, owners = [], [], []
    for _ in range(count):
        x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
        x1, y1 = int(rng.integers(x0, w)), int(rng.integers(y0, h))
        masks.append((rng.random((y1 - y0 + 1, x1 - x0 + 1)) > 0.3).astype(np.uint8))
        origins.append((x0, y0))
        owners.append(int(rng.integers(0, n)))
    return owners, np.array(origins), masks


def test_masked_sums_match_cv2_mean(rng):
    maps = rng.random((3, 30, 40)).astype(np.float32)
    owners, origins, masks = _random_masks(rng, maps)
    sums, counts = gpu.masked_sums(np, maps, owners, origins, masks)
    for m, (x0, y0), mask, s, c in zip(owners, origins, masks, sums, counts):
        crop = maps[m, y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        assert c == mask.sum()
        assert s / max(c, 1) == pytest.approx(cv2.mean(crop, mask)[0], abs=1e-9)


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
def test_cupy_building_blocks_match_their_numpy_oracles(rng):
    mask = rng.random((2, 40, 50)) > 0.55
    np.testing.assert_array_equal(dilate_2x2(cp, cp.asarray(mask)).get(), dilate_2x2(np, mask))
    for connectivity in (4, 8):
        dev, count = label_batch(cp, cp.asarray(mask), connectivity)
        host, expected = label_batch(np, mask, connectivity)
        assert count == expected
        pairs = np.unique(np.stack([dev.get().ravel(), host.ravel()]), axis=1)
        assert pairs.shape[1] == count + 1  # the same partition, only the numbering may differ
    assert euler_number(cp, cp.asarray(mask)) == euler_number(np, mask)
    maps = rng.random((3, 30, 40)).astype(np.float32)
    owners, origins, masks = _random_masks(rng, maps)
    for dev, host in zip(gpu.masked_sums(cp, cp.asarray(maps), owners, origins, masks),
                         gpu.masked_sums(np, maps, owners, origins, masks)):
        np.testing.assert_allclose(dev, host, rtol=1e-12)
    index = rng.integers(0, 10, 500)
    values = rng.integers(0, 1000, 500)
    for op, ref in ((scatter_min, np.full(10, 10**6, np.int32)), (scatter_max, np.full(10, -1, np.int32))):
        dev = cp.asarray(ref)
        op(cp, dev, cp.asarray(index), cp.asarray(values))
        op(np, ref, index, values)
        np.testing.assert_array_equal(dev.get(), ref)


@pytest.mark.gpu
@gpu_only
def test_postprocessor_keeps_cupy_maps_on_the_gpu():
    maps = random_map(np.random.default_rng(1), 64, 96, 12)[None, None]
    box = Letterbox(128, 192, 64, 96, 0.5, 0.5, 64, 96)
    (on_gpu,) = DBPostprocessor()(cp.asarray(maps), [box])
    (on_cpu,) = DBPostprocessor()(maps, [box])
    assert len(on_gpu) == len(on_cpu)
    for a, b in zip(on_gpu.polygons, on_cpu.polygons):
        np.testing.assert_allclose(a, b, atol=1e-3)
