"""Activation-range searches of INT8 calibration (export.calibration): pure NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from export.calibration import entropy_threshold, mse_threshold


def test_entropy_threshold_like_tensorrt(rng):
    gauss = np.abs(np.concatenate([rng.normal(size=200_000), [40.0]]))  # one far outlier
    hist, edges = np.histogram(gauss, 1024, range=(0, 40))
    assert 3.0 < entropy_threshold(hist, edges[1] - edges[0]) < 6.0  # clips the outlier
    flat, edges = np.histogram(rng.uniform(0, 3, 200_000), 1024, range=(0, 3))
    assert entropy_threshold(flat, edges[1] - edges[0]) == pytest.approx(3.0)  # nothing to clip
    relu = np.concatenate([np.zeros(500_000), rng.uniform(0, 2, 100_000)])  # ReLU's zero spike
    hist, edges = np.histogram(relu, 1024, range=(0, 2))
    assert entropy_threshold(hist, edges[1] - edges[0]) > 1.9


def _squared_error(values: np.ndarray, clip: float, levels: int = 128) -> float:
    step = clip / (levels - 1)
    return float(np.sum((values - np.minimum(np.round(values / step), levels - 1) * step) ** 2))


def test_mse_threshold_minimises_the_quantization_error(rng):
    gauss = np.abs(np.concatenate([rng.normal(size=200_000), [40.0]]))  # one far outlier
    hist, edges = np.histogram(gauss, 1024, range=(0, 40))
    width = edges[1] - edges[0]
    clip = mse_threshold(hist, width)
    assert clip < 30.0  # clips the outlier part way: its error against 200,000 values' rounding
    for other in (40.0, entropy_threshold(hist, width), clip * 1.5, max(clip * 0.8, 128 * width)):
        assert _squared_error(gauss, clip) <= _squared_error(gauss, other) * 1.01
    flat, edges = np.histogram(rng.uniform(0, 3, 200_000), 1024, range=(0, 3))
    assert mse_threshold(flat, edges[1] - edges[0]) == pytest.approx(3.0, rel=0.02)  # nothing to clip
    empty = np.zeros(1024)
    assert mse_threshold(empty, 0.01) == pytest.approx(10.24)


def test_mse_keeps_a_heavy_tail_that_the_kl_search_clips(rng):
    """A stem-like tensor: a sharp bulk and a thin heavy tail (0.5% of the values, strong edges).
    TensorRT's KL search clips the tail to a fifth of the range here (on one real calibration set
    it clipped the shipped model's stem at 9% and the INT8 model fell apart); the squared error
    keeps most of it and is lower."""
    values = np.minimum(np.concatenate([np.abs(rng.laplace(scale=0.2, size=400_000)),
                                        rng.pareto(2.0, 2_000) + 1]), 20)
    hist, edges = np.histogram(values, 1600, range=(0, 20))
    width = edges[1] - edges[0]
    kl, mse = entropy_threshold(hist, width), mse_threshold(hist, width)
    assert kl < 5.0 and mse > 3 * kl
    assert _squared_error(values, mse) < _squared_error(values, kl)
