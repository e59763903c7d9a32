"""The few array operations whose NumPy and CuPy spellings differ, behind one name each.

Everything else in the component path is written once against `xp` (numpy or cupy).
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.lazy import require

# 8-connected foreground, 4-connected background (the pairing findContours assumes).
_PLANE_8 = np.ones((3, 3), bool)
_PLANE_4 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def is_numpy(xp) -> bool:
    return xp is np


def to_host(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else array.get()


def _scatter(xp, target, index, values, op: str) -> None:
    """target[index] = op(target[index], values), repeated indices allowed. target is int32
    (CuPy's atomic min / max exist for 32-bit signed integers, not for int64)."""
    if target.dtype != np.int32:
        raise TypeError(f"scatter targets are int32, got {target.dtype}")
    if is_numpy(xp):
        getattr(np, {"min": "minimum", "max": "maximum"}[op]).at(target, index, values)
    else:
        getattr(require("cupyx"), f"scatter_{op}")(target, index, values.astype(np.int32, copy=False))


def scatter_min(xp, target, index, values) -> None:
    """target[index] = min(target[index], values); see _scatter."""
    _scatter(xp, target, index, values, "min")


def scatter_max(xp, target, index, values) -> None:
    """target[index] = max(target[index], values); see _scatter."""
    _scatter(xp, target, index, values, "max")


def label_batch(xp, mask, connectivity: int):
    """Connected components of each (H, W) plane of an (N, H, W) bool mask, labels unique over
    the batch (0 = not in the mask). Returns (int32 labels, number of labels)."""
    if is_numpy(xp):
        labels = np.zeros(mask.shape, np.int32)
        total = 0
        for i, plane in enumerate(mask):
            count, lab = cv2.connectedComponents(plane.view(np.uint8), connectivity=connectivity,
                                                 ltype=cv2.CV_32S)
            labels[i] = np.where(lab > 0, lab + total, 0)
            total += count - 1
        return labels, total
    ndimage = require("cupyx.scipy.ndimage")
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = _PLANE_8 if connectivity == 8 else _PLANE_4
    labels, total = ndimage.label(mask.view(xp.uint8), structure=structure, output=xp.int32)
    return labels, int(total)


def dilate_2x2(xp, mask):
    """cv2.dilate with a 2x2 kernel (anchor at its centre): a pixel is set when it or its left,
    upper or upper-left neighbour is set. mask: (N, H, W) bool."""
    out = mask.copy()
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, 1:, 1:] |= mask[:, :-1, :-1]
    return out
