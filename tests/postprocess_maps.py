"""DB-like probability maps for post-processing tests and the benchmark.

Text-like rotated bars with soft edges, rings (holes become RETR_LIST candidates), specks below
min_size, components touching the border, values near the thresholds, background noise.
"""
from __future__ import annotations

import cv2
import numpy as np


def _bar(rng, h, w, long_side, short_side):
    centre = (float(rng.uniform(-0.05, 1.05) * w), float(rng.uniform(-0.05, 1.05) * h))
    angle = float(rng.choice([0.0, 0.0, rng.uniform(-90, 90)]))
    return cv2.boxPoints((centre, (long_side, short_side), angle))


def draw_components(prob, rng, count, max_long=80.0, max_short=24.0):
    """Draw `count` components of random kinds onto prob (in place)."""
    h, w = prob.shape
    for _ in range(count):
        kind = rng.choice(["bar", "bar", "bar", "ring", "speck", "blob"])
        value = float(rng.choice([rng.uniform(0.55, 1.0), rng.uniform(0.3, 0.75)]))
        if kind == "speck":
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            prob[y:y + int(rng.integers(1, 4)), x:x + int(rng.integers(1, 4))] = value
            continue
        long_side = float(rng.uniform(3, max_long))
        short_side = float(rng.uniform(2, max(3.0, min(max_short, long_side))))
        corners = _bar(rng, h, w, long_side, short_side)
        if kind == "blob":
            corners = corners + rng.normal(0, short_side / 4, corners.shape).astype(np.float32)
        cv2.fillPoly(prob, [np.round(corners).astype(np.int32)], value)
        if kind == "ring" and short_side > 6:
            inner = cv2.boxPoints((tuple(corners.mean(0)), (long_side / 2, short_side / 3), 0.0))
            cv2.fillPoly(prob, [np.round(inner).astype(np.int32)], float(rng.uniform(0, 0.2)))
    return prob


def random_map(rng, h, w, count, blur=True, noise=0.05) -> np.ndarray:
    """An (h, w) float32 map in [0, 1] with `count` components (some may merge or vanish)."""
    prob = rng.uniform(0, noise, (h, w)).astype(np.float32)
    draw_components(prob, rng, count, max_long=max(4.0, min(h, w) / 2.5),
                    max_short=max(3.0, min(h, w) / 8))
    if blur and rng.random() < 0.7:
        prob = cv2.GaussianBlur(prob, (3, 3), float(rng.uniform(0.3, 1.2)))
    return np.clip(prob + rng.uniform(-noise, noise, (h, w)).astype(np.float32), 0, 1)


def dense_map(rng, h, w, count) -> np.ndarray:
    """A benchmark map: `count` text-like bars spread over the frame, soft edges."""
    prob = rng.uniform(0, 0.05, (h, w)).astype(np.float32)
    scale = np.sqrt(h * w / max(count, 1))
    for _ in range(count):
        long_side = float(rng.uniform(0.3, 0.9) * scale)
        corners = _bar(rng, h, w, long_side, float(rng.uniform(0.12, 0.35) * long_side))
        cv2.fillPoly(prob, [np.round(corners).astype(np.int32)], float(rng.uniform(0.5, 1.0)))
    return cv2.GaussianBlur(prob, (5, 5), 1.0)
