"""Camera-like degradations applied to a whole scene: lighting, blur, noise, colour, JPEG."""
from __future__ import annotations

import cv2
import numpy as np


def lighting(rng, img: np.ndarray) -> np.ndarray:
    """Uneven illumination: a smooth brightness ramp or spot times a global gain."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        ramp = (xx * np.cos(a) + yy * np.sin(a)) / max(h, w)
        gain = 1 + rng.uniform(-0.5, 0.5) * (ramp - ramp.mean())
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (max(h, w) ** 2)
        gain = 1 + rng.uniform(-0.2, 0.5) * np.exp(-r2 / rng.uniform(0.05, 0.5))
    gain *= rng.uniform(0.6, 1.3)
    return np.clip(img.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def blur(rng, img: np.ndarray) -> np.ndarray:
    if rng.random() < 0.6:
        sigma = rng.uniform(0.3, 1.4)
        return cv2.GaussianBlur(img, (0, 0), sigma)
    k = int(rng.integers(3, 8))  # motion blur along a random direction
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2] = 1.0 / k
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))


def noise(rng, img: np.ndarray) -> np.ndarray:
    sigma = rng.uniform(2, 12)
    out = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def color_shift(rng, img: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-12, 12))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.4, 1.3), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def jpeg(rng, img: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 95))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img


_EFFECTS = ((lighting, 0.6), (color_shift, 0.4), (blur, 0.5), (noise, 0.4), (jpeg, 0.5))


def degrade(rng, img: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Apply each effect with its probability (scaled by `strength`, 0 disables all)."""
    for effect, prob in _EFFECTS:
        if rng.random() < prob * strength:
            img = effect(rng, img)
    return img
