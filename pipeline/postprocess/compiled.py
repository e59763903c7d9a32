"""The compiled steps of the CPU post-processing (`_steps.c`, `_fill.c`, built at install time):
the bitmap of a map in one pass, the box scores of all its candidates in one call, the unclip
distances' ring sums and the contour lengths. Each returns None where it cannot be used, and
the caller then runs its NumPy / OpenCV code, with the same results: when the extension was not
built (no C compiler at install time) or, for the scores, when the installed OpenCV fills
polygons differently (OpenCV has changed its rasterisation between releases). That check runs
once per process, on fixed polygons that cover clipping at every side, before the first score.
"""
from __future__ import annotations

import importlib
import logging
import threading
from typing import Optional

import cv2
import numpy as np

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_LOADED: dict = {}
_CHECK_POLYGONS = 400


def _import(name: str):
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        log.info("compiled post-processing module %s not built: using NumPy / OpenCV", name)
        return None


def _check_case(rng: np.random.Generator):
    """A map view, one crop in it and a polygon in crop coordinates, often reaching far out."""
    h, w = (int(v) for v in rng.integers(1, 48, 2))
    prob = rng.random((h + 3, w + 5), dtype=np.float32)[1:h + 1, 2:w + 2]
    x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
    x1, y1 = int(rng.integers(x0, w)), int(rng.integers(y0, h))
    reach = max(x1 - x0, y1 - y0) + 8
    points = rng.integers(-reach, 2 * reach, (int(rng.integers(1, 12)), 2)).astype(np.int32)
    return prob, np.array([[x0, y0, x1, y1]], np.int64), points


def agrees_with_opencv(polygon_means) -> bool:
    """Whether polygon_means gives cv2.mean(crop, cv2.fillPoly(...)) bit for bit on fixed cases."""
    rng = np.random.default_rng(20261130)
    for _ in range(_CHECK_POLYGONS):
        prob, crops, points = _check_case(rng)
        x0, y0, x1, y1 = crops[0].tolist()
        crop = prob[y0:y1 + 1, x0:x1 + 1]
        expected = cv2.mean(crop, cv2.fillPoly(np.zeros(crop.shape, np.uint8), [points], 1))[0]
        out = np.empty(1)
        polygon_means(prob, crops, points, np.array([0, len(points)], np.int64), out)
        if out[0] != expected:
            return False
    return True


def _checked_fill():
    module = _import("_fill")
    if module is not None and not agrees_with_opencv(module.polygon_means):
        log.warning("OpenCV %s fills polygons differently from the compiled box scores: scoring "
                    "with OpenCV", cv2.__version__)
        return None
    return module


def _module(name: str):
    """The module (`_steps`, or `_fill` once checked), loaded once per process, or None."""
    if name not in _LOADED:
        with _LOCK:
            if name not in _LOADED:
                _LOADED[name] = _checked_fill() if name == "_fill" else _import(name)
    return _LOADED[name]


def status() -> dict:
    """Which compiled steps this process uses (for reports): the array steps and the scores."""
    return dict(steps=_module("_steps") is not None, scores=_module("_fill") is not None)


def _native_float32(array: np.ndarray) -> bool:
    """What the C modules read: float32 in this machine's byte order (other maps take NumPy)."""
    return array.dtype == np.float32 and array.dtype.isnative


def threshold(prob: np.ndarray, thresh: float, dilate: bool, out: np.ndarray) -> Optional[bool]:
    """out[:] = prob > thresh (compared in float32) as uint8 0 / 1, 2x2-dilated when asked, in one
    pass; returns whether every value of prob is finite, or None (nothing written) without the
    extension or when prob is not native float32 with contiguous rows."""
    module = _module("_steps")
    if module is None or not _native_float32(prob) or prob.strides[1] != prob.itemsize:
        return None
    return module.threshold(prob, float(thresh), bool(dilate), out)


def polygon_means(prob: np.ndarray, crops: np.ndarray, points: np.ndarray,
                  starts: np.ndarray) -> Optional[np.ndarray]:
    """Per candidate the mean of prob[y0:y1+1, x0:x1+1] under its filled polygon, exactly
    cv2.mean(crop, cv2.fillPoly(zeros, [polygon], 1)); None when not usable here.
    crops: (n, 4) inclusive x0, y0, x1, y1; points: (P, 2) every polygon in crop coordinates;
    starts: (n + 1,) polygon i = points[starts[i]:starts[i + 1]]."""
    module = _module("_fill")
    if module is None or not _native_float32(prob):
        return None
    out = np.empty(len(crops))
    module.polygon_means(prob, np.ascontiguousarray(crops, np.int64),
                         np.ascontiguousarray(points, np.int32),
                         np.ascontiguousarray(starts, np.int64), out)
    return out


def window_means(values: np.ndarray, windows: np.ndarray, points: np.ndarray,
                 starts: np.ndarray) -> Optional[np.ndarray]:
    """polygon_means over windows gathered one after the other: window i is
    values[o:o + h * w].reshape(h, w) for its row (o, h, w) of windows; None when not usable."""
    module = _module("_fill")
    if module is None:
        return None
    out = np.empty(len(windows))
    module.window_means(np.ascontiguousarray(values, np.float32),
                        np.ascontiguousarray(windows, np.int64),
                        np.ascontiguousarray(points, np.int32),
                        np.ascontiguousarray(starts, np.int64), out)
    return out


def ragged(polys) -> tuple:
    """A list of (k_i, 2) arrays (or an (n, k, 2) array) as one (P, 2) array and (n + 1,) starts."""
    if isinstance(polys, np.ndarray):
        n, k = polys.shape[:2]
        return polys.reshape(-1, 2), np.arange(n + 1) * k
    sizes = np.fromiter(map(len, polys), np.intp, len(polys))
    return np.concatenate(polys).reshape(-1, 2), np.concatenate([[0], np.cumsum(sizes)])


def ring_sums(polys, flat: Optional[tuple] = None) -> Optional[tuple]:
    """(area sums, lengths) of closed polygons as shapely sums them (geometry.ring_areas_lengths
    says how), or None without the extension. polys: non-empty (n, k, 2) array or list of (k_i, 2);
    flat: their `ragged(polys)` where the caller has it already."""
    module = _module("_steps")
    if module is None:
        return None
    points, starts = ragged(polys) if flat is None else flat
    area, length = np.empty(len(starts) - 1), np.empty(len(starts) - 1)
    module.ring_sums(np.ascontiguousarray(points, np.float64), np.ascontiguousarray(starts, np.int64),
                     area, length)
    return area, length


def arc_lengths(contours: list) -> Optional[np.ndarray]:
    """cv2.arcLength(c, True) of a non-empty list of int32 contours, bit for bit, or None
    without the extension."""
    module = _module("_steps")
    if module is None:
        return None
    points, starts = ragged(contours)
    out = np.empty(len(starts) - 1)
    module.arc_lengths(np.ascontiguousarray(points, np.int32), np.ascontiguousarray(starts, np.int64),
                       out)
    return out


def box_corners(rects: list, opencv5: bool) -> Optional[np.ndarray]:
    """(n, 4, 2) float32: cv2.boxPoints of each cv2.minAreaRect result in the reference's corner
    order (geometry.order_quads), computed with OpenCV 5's or 4's arithmetic; None without the
    extension."""
    module = _module("_steps")
    if module is None:
        return None
    out = np.empty((len(rects), 4, 2), np.float32)
    module.box_corners(rects, bool(opencv5), out)
    return out
