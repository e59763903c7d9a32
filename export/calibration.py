"""INT8 activation ranges: TensorRT's entropy search and a mean-squared-error search, fast.

ONNX Runtime's `quantize_static` cannot pass histogram sizes to its calibrator, and its default
(128 bins for 128 quantized levels) leaves the entropy method no threshold to choose: it returns
min-max ranges. Its own search with more bins loops in Python and takes minutes on a small model.
Here ORT collects the histograms (2048 bins over [-max, max]), we fold them into |x| histograms
and choose each threshold with TensorRT's KL-divergence search (GTC 2017, "8-bit Inference with
TensorRT") or, for 'mse', the clip point with the least squared quantization error (as NVIDIA's
pytorch-quantization and ModelOpt offer), vectorised with NumPy, then hand the ranges to
`quantize_static` as a calibration cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from engine.errors import ModelError
from engine.lazy import require

HISTOGRAM_BINS = 2048      # symmetric histogram over [-max, max] -> 1024 bins of |x|
QUANTIZED_BINS = 128       # int8 magnitudes
PERCENTILE = 99.999


class ArrayReader:
    """ONNX Runtime CalibrationDataReader over a list of input arrays."""

    def __init__(self, name: str, inputs: Iterable[np.ndarray]):
        self._name = name
        self._inputs = list(inputs)
        self._it = iter(self._inputs)

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {self._name: np.ascontiguousarray(batch, np.float32)}

    def rewind(self):
        self._it = iter(self._inputs)


def _kl(hist: np.ndarray, tail: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for clipping after bin i: P = hist[:i] with the tail folded into its last bin,
    Q = hist[:i] merged into `levels` chunks, each spread evenly over its non-empty bins."""
    p = hist[:i].copy()
    if i < hist.size:
        p[-1] += tail[i]
    sliced = hist[:i]
    chunks = np.minimum(np.arange(i) * levels // i, levels - 1)
    nonzero = sliced > 0
    totals = np.bincount(chunks, weights=sliced, minlength=levels)
    counts = np.bincount(chunks, weights=nonzero, minlength=levels)
    q = np.where(nonzero, totals[chunks] / np.maximum(counts[chunks], 1), 0.0)
    if q.sum() == 0:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    used = p > 0
    # a P bin that Q leaves empty (only the clipped last bin can be) gets a tiny Q, not infinity
    return float(np.sum(p[used] * np.log(p[used] / np.maximum(q[used], 1e-12))))


def entropy_threshold(abs_hist: np.ndarray, bin_width: float, levels: int = QUANTIZED_BINS) -> float:
    """TensorRT's threshold for a histogram of |x|: the clip point whose `levels`-level
    quantization loses the least information (minimum KL divergence to the clipped original).
    Searched on every 8th bin, then refined bin by bin around the best one."""
    hist = abs_hist.astype(np.float64)
    if hist.size > 1:
        hist[0] = hist[1]  # as NVIDIA's pytorch-quantization: ReLU's spike of zeros would dominate
    n = hist.size
    if n <= levels or hist.sum() == 0:
        return float(n * bin_width)
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum(hist[i:])
    coarse = list(range(levels, n + 1, 8)) + [n]
    best = min(coarse, key=lambda i: _kl(hist, tail, i, levels))
    fine = range(max(levels, best - 7), min(n, best + 7) + 1)
    best = min(fine, key=lambda i: _kl(hist, tail, i, levels))
    return float(best * bin_width)


def mse_threshold(abs_hist: np.ndarray, bin_width: float, levels: int = QUANTIZED_BINS,
                  stride: int = 4) -> float:
    """The clip point t (a bin edge, every `stride`-th from bin `levels` on, and the top) whose
    symmetric quantization x -> min(round(x / s), levels - 1) * s, s = t / (levels - 1), has the
    least mean squared error over the histogram (each bin's values taken at its centre).
    Unlike the KL search it weighs an error by its size, not by how it reshapes the
    distribution, so a few clipped large values cannot look cheap (benchmarks/int8_calibration.py)."""
    hist = abs_hist.astype(np.float64)
    n = hist.size
    if n <= levels or hist.sum() == 0:
        return float(n * bin_width)
    centres = (np.arange(n) + 0.5) * bin_width
    clips = np.unique(np.r_[np.arange(levels, n + 1, stride), n]) * bin_width
    errors = np.empty(clips.size)
    for start in range(0, clips.size, 64):  # (64, n) at a time: bounded memory for wide histograms
        step = clips[start:start + 64, None] / (levels - 1)
        quantized = np.minimum(np.round(centres / step), levels - 1) * step
        errors[start:start + 64] = ((centres - quantized) ** 2) @ hist
    return float(clips[int(np.argmin(errors))])


def _fold(hist: np.ndarray, edges: np.ndarray):
    """Symmetric histogram over [-t, t] -> (|x| histogram over [0, t], bin width)."""
    half = hist.size // 2
    folded = hist[half:].astype(np.float64)
    folded[: half] += hist[:half][::-1]
    return folded, float(edges[1] - edges[0])


def compute_ranges(src: str, input_name: str, inputs: Sequence[np.ndarray], method: str,
                   op_types: Sequence[str], tmp: str):
    """Symmetric activation ranges (ORT TensorsData) for 'entropy', 'mse', 'percentile' or 'minmax'.

    Entropy and MSE thresholds come from `entropy_threshold` / `mse_threshold` on the histograms
    ORT's entropy collector gathers; the others from ORT's calibrator."""
    cal = require("onnxruntime.quantization.calibrate")
    searches = {"entropy": entropy_threshold, "mse": mse_threshold}
    ort_method = {"entropy": cal.CalibrationMethod.Entropy, "mse": cal.CalibrationMethod.Entropy,
                  "minmax": cal.CalibrationMethod.MinMax,
                  "percentile": cal.CalibrationMethod.Percentile}[method]
    extra = {"symmetric": True, "num_bins": HISTOGRAM_BINS, "num_quantized_bins": QUANTIZED_BINS,
             "percentile": PERCENTILE}
    calibrator = cal.create_calibrator(Path(src), list(op_types), calibrate_method=ort_method,
                                       augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                                       extra_options=extra)
    for batch in inputs:  # one at a time: ORT stacks what one call collects, so sizes must match
        calibrator.collect_data(ArrayReader(input_name, [batch]))
    histograms = getattr(getattr(calibrator, "collector", None), "histogram_dict", None)
    if method == "mse" and not histograms:
        raise ModelError("this onnxruntime's calibrator keeps no histograms: calibration method "
                         "'mse' needs a newer onnxruntime (or use entropy, percentile, minmax)")
    if method not in searches or not histograms:
        return calibrator.compute_data()  # min-max / percentile are quick in ORT itself
    ranges = {}
    for name, (hist, edges, *_rest) in histograms.items():
        t = searches[method](*_fold(np.asarray(hist), np.asarray(edges)))
        ranges[name] = cal.TensorData(lowest=np.float32(-t), highest=np.float32(t),
                                      hist=np.asarray(hist), hist_edges=np.asarray(edges, np.float32))
    return cal.TensorsData(ort_method, ranges)


def write_cache(src: str, input_name: str, inputs: Sequence[np.ndarray], method: str,
                op_types: Sequence[str], tmp: str) -> str:
    """Compute the ranges and save them where `quantize_static(calibration_cache_path=...)` reads."""
    cal = require("onnxruntime.quantization.calibrate")
    path = os.path.join(tmp, "ranges.json")
    cal.save_tensors_data(compute_ranges(src, input_name, inputs, method, op_types, tmp), path)
    return path
