"""Geometric and photometric augmentation of (image, polygons) pairs for DB training.

`augment(rng, image, polygons, ignore, crop)` scales and rotates the image about its centre
(one affine warp, mirrored left-right with probability `flip`), then takes a `crop` x `crop`
window that prefers text (padding with the mean colour when the image is smaller). Polygons
follow the same transform; ones that leave the window are dropped. `masks` (uint8 maps the size
of the image, e.g. a text mask) follow the same warp and crop with nearest-neighbour sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    scale: Tuple[float, float] = (0.6, 1.6)    # log-uniform relative size change
    max_angle: float = 10.0                    # degrees
    text_crop_prob: float = 0.8                # crop around a random word this often
    brightness: float = 0.25                   # +- relative gain
    contrast: float = 0.25
    flip: float = 0.0                          # probability of a left-right mirror


# The DB paper's recipe for real images: rotation +-10 deg, random crop, flip, scale 0.5-3.
DB_PAPER = AugmentConfig(scale=(0.5, 3.0), max_angle=10.0, flip=0.5)


def _affine(rng, h: int, w: int, cfg: AugmentConfig):
    s = float(np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1]))))
    angle = float(rng.uniform(-cfg.max_angle, cfg.max_angle))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)
    if cfg.flip and rng.random() < cfg.flip:
        m[0] = -m[0]  # mirror x; the shift below brings the image back into view
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]]) @ m[:, :2].T + m[:, 2]
    lo = corners.min(0)
    m[:, 2] -= lo  # keep the whole rotated image in view
    size = np.ceil(corners.max(0) - lo).astype(int)
    return m, (int(size[0]), int(size[1]))


def _crop_origin(rng, size, crop: int, polygons, cfg: AugmentConfig):
    w, h = size
    if polygons and rng.random() < cfg.text_crop_prob:
        poly = polygons[int(rng.integers(len(polygons)))]
        cx, cy = poly.mean(0)
        x = cx - rng.uniform(0.15, 0.85) * crop
        y = cy - rng.uniform(0.15, 0.85) * crop
    else:
        x, y = rng.uniform(0, max(0, w - crop)), rng.uniform(0, max(0, h - crop))
    x = int(np.clip(x, 0, max(0, w - crop)))
    y = int(np.clip(y, 0, max(0, h - crop)))
    return x, y


def photometric(rng, image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Contrast about the image's mean grey and brightness: (x - mean) * gain + mean + bias,
    saturated to 0..255 in one OpenCV pass (NumPy's float round trip took ~4 ms a 640 px crop)."""
    gain = 1 + rng.uniform(-cfg.contrast, cfg.contrast)
    bias = rng.uniform(-cfg.brightness, cfg.brightness) * 128
    channels = image.shape[2] if image.ndim == 3 else 1
    mean = sum(cv2.mean(image)[:channels]) / channels
    return cv2.addWeighted(image, gain, image, 0.0, mean * (1 - gain) + bias)


def _warp_crop(image: np.ndarray, m, x: int, y: int, crop: int, fill, interpolation):
    """The crop x crop window at (x, y) of the warped image, warped directly (the whole warped
    image at scale 3 is ~9x the pixels); outside the image is `fill`."""
    shifted = m.copy()
    shifted[:, 2] -= (x, y)
    return cv2.warpAffine(image, shifted, (crop, crop), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def augment(rng, image: np.ndarray, polygons: Sequence[np.ndarray], ignore: Sequence[bool],
            crop: int, cfg: AugmentConfig = AugmentConfig(), masks: Sequence[np.ndarray] = ()):
    """Returns (crop x crop image, polygons, ignore) after scale / rotate / flip / crop / colour;
    with `masks`, a fourth item: the masks warped and cropped the same way."""
    h, w = image.shape[:2]
    m, size = _affine(rng, h, w, cfg)
    fill = tuple(cv2.mean(image)[:3])  # the border colour: the mean (NumPy's took ~10 ms an image)
    polys = [np.asarray(p, np.float32) @ m[:, :2].T.astype(np.float32) + m[:, 2].astype(np.float32)
             for p in polygons]
    x, y = _crop_origin(rng, size, crop, [p for p, i in zip(polys, ignore) if not i], cfg)
    out = _warp_crop(image, m, x, y, crop, fill, cv2.INTER_LINEAR)
    warped_masks = [_warp_crop(k, m, x, y, crop, 0, cv2.INTER_NEAREST) for k in masks]
    kept_polys: List[np.ndarray] = []
    kept_ignore: List[bool] = []
    for p, ign in zip(polys, ignore):
        p = p - np.float32([x, y])
        lo, hi = p.min(0), p.max(0)
        if hi[0] < 0 or hi[1] < 0 or lo[0] >= crop or lo[1] >= crop:
            continue
        inside = np.clip(p, 0, crop - 1)
        cut = (np.ptp(inside[:, 0]) * np.ptp(inside[:, 1])) < 0.5 * np.ptp(p[:, 0]) * np.ptp(p[:, 1])
        kept_polys.append(p)
        kept_ignore.append(bool(ign or cut))  # a word mostly cut off is "do not care"
    if masks:
        return photometric(rng, out, cfg), kept_polys, kept_ignore, warped_masks
    return photometric(rng, out, cfg), kept_polys, kept_ignore
