"""The few array operations the device half of the GPU path needs, written once for `xp`
(numpy or cupy)."""
from __future__ import annotations

import numpy as np


def to_host(array) -> np.ndarray:
    """A device array copied to the host (a NumPy array is returned as it is)."""
    return array if isinstance(array, np.ndarray) else array.get()


def dilate_2x2(xp, mask):
    """cv2.dilate with a 2x2 kernel (anchor at its centre): a pixel is set when it or its left,
    upper or upper-left neighbour is set. mask: (N, H, W) bool."""
    out = mask.copy()
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, 1:, 1:] |= mask[:, :-1, :-1]
    return out
