"""Text-free backgrounds: gradients, fractal textures, patterns and photo-like clutter.

Every function takes a NumPy Generator and returns an (H, W, 3) uint8 BGR image; the clutter
(lines, shapes, grids, stripes) doubles as hard negatives, so the detector learns that edges and
texture alone are not text.
"""
from __future__ import annotations

import cv2
import numpy as np


def random_color(rng, lo: int = 0, hi: int = 256) -> tuple:
    """A BGR colour; half of them pulled towards grey, as most real-world surfaces are."""
    color = rng.integers(lo, hi, size=3).astype(np.float32)
    if rng.random() < 0.5:
        color = color.mean() + (color - color.mean()) * rng.uniform(0.1, 0.6)
    return tuple(int(c) for c in np.clip(color, 0, 255))


def gradient(rng, h: int, w: int) -> np.ndarray:
    a, b = np.array(random_color(rng), np.float32), np.array(random_color(rng), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
    return (a + (b - a) * t[..., None]).astype(np.uint8)


def fractal_noise(rng, h: int, w: int, octaves: int = 5) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1] (stone, foliage, asphalt, walls)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    base = int(rng.integers(2, 6))
    for o in range(octaves):
        cells = base * 2 ** o
        small = rng.random((cells, max(2, cells * w // max(h, 1)))).astype(np.float32)
        out += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= rng.uniform(0.35, 0.65)
    out /= total
    return np.clip((out - out.min()) / max(1e-6, float(np.ptp(out))), 0, 1)


def texture(rng, h: int, w: int) -> np.ndarray:
    t = fractal_noise(rng, h, w)[..., None]
    a, b = np.array(random_color(rng), np.float32), np.array(random_color(rng), np.float32)
    return (a + (b - a) * t).astype(np.uint8)


def wood(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n = fractal_noise(rng, h, w, 3)
    freq = rng.uniform(0.02, 0.12)
    t = 0.5 + 0.5 * np.sin((yy if rng.random() < 0.5 else xx) * freq + 8 * n)
    a, b = np.array(random_color(rng, 40, 200), np.float32), np.array(random_color(rng), np.float32)
    return (a + (b - a) * t[..., None]).astype(np.uint8)


def pattern(rng, h: int, w: int) -> np.ndarray:
    """Tiles, bricks, windows, stripes: regular edges that must not be read as text."""
    img = np.full((h, w, 3), random_color(rng), np.uint8)
    color = random_color(rng)
    step_y, step_x = int(rng.integers(8, 80)), int(rng.integers(8, 80))
    thick = int(rng.integers(1, 5))
    kind = rng.integers(3)
    if kind == 0:  # grid / windows
        for y in range(0, h, step_y):
            cv2.line(img, (0, y), (w, y), color, thick)
        for x in range(0, w, step_x):
            cv2.line(img, (x, 0), (x, h), color, thick)
    elif kind == 1:  # bricks
        for row, y in enumerate(range(0, h, step_y)):
            cv2.line(img, (0, y), (w, y), color, thick)
            off = (row % 2) * step_x * 2 // 2
            for x in range(off, w, step_x * 2):
                cv2.line(img, (x, y), (x, y + step_y), color, thick)
    else:  # stripes at an angle
        pts = np.arange(-h - w, h + w, step_x)
        for p in pts:
            cv2.line(img, (int(p), 0), (int(p + h * rng.uniform(-1, 1)), h), color, thick * 2)
    return img


def clutter(rng, img: np.ndarray, count: int) -> np.ndarray:
    """Draw random shapes, lines, circles and blobs on img (in place) and return it."""
    h, w = img.shape[:2]
    for _ in range(count):
        color = random_color(rng)
        kind = rng.integers(6)
        x, y = int(rng.integers(w)), int(rng.integers(h))
        size = int(rng.integers(4, max(8, min(h, w) // 3)))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + size, y + int(size * rng.uniform(0.2, 2))), color,
                          -1 if rng.random() < 0.6 else int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.circle(img, (x, y), size // 2, color, -1 if rng.random() < 0.5 else 2)
        elif kind == 2:
            pts = rng.integers(-size, size, size=(int(rng.integers(3, 7)), 2)) + [x, y]
            cv2.fillPoly(img, [pts.astype(np.int32)], color)
        elif kind == 3:
            x2, y2 = x + int(rng.integers(-2 * size, 2 * size)), y + int(rng.integers(-2 * size, 2 * size))
            cv2.line(img, (x, y), (x2, y2), color, int(rng.integers(1, 6)))
        elif kind == 4:
            cv2.ellipse(img, (x, y), (size, max(2, size // 3)), float(rng.uniform(0, 180)), 0,
                        float(rng.uniform(90, 360)), color, int(rng.integers(1, 4)))
        else:  # a short run of bars (barcode / railing / fence)
            n, gap = int(rng.integers(3, 12)), int(rng.integers(2, 8))
            for i in range(n):
                cv2.line(img, (x + i * gap, y), (x + i * gap, y + size), color, int(rng.integers(1, 3)))
    return img


def photo_like(rng, h: int, w: int) -> np.ndarray:
    """Blurred clutter over a texture: out-of-focus shapes like a street photo's background."""
    img = texture(rng, h, w)
    clutter(rng, img, int(rng.integers(10, 40)))
    k = int(rng.integers(1, 5)) * 2 + 1
    return cv2.GaussianBlur(img, (k, k), 0)


def _light(rng, img: np.ndarray) -> None:
    """A bright, soft light source (ceiling lamp, window glare)."""
    h, w = img.shape[:2]
    spot = np.zeros((h, w), np.float32)
    center = (int(rng.integers(w)), int(rng.integers(h)))
    axes = (int(rng.integers(4, max(5, w // 6))), int(rng.integers(2, max(3, h // 12))))
    cv2.ellipse(spot, center, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    spot = cv2.GaussianBlur(spot, (0, 0), float(rng.uniform(2, 12)))[..., None]
    img[:] = np.clip(img + spot * rng.uniform(80, 255), 0, 255).astype(np.uint8)


def street(rng, h: int, w: int) -> np.ndarray:
    """A photo-like built scene: shaded planes with a vanishing point, facades and windows,
    poles, railings, lamps and people-like blobs, partly out of focus."""
    img = gradient(rng, h, w)
    vx, vy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.7) * h
    for _ in range(int(rng.integers(2, 6))):  # planes converging to the vanishing point
        a, b = rng.uniform(0, 2 * np.pi, size=2)
        far = 2 * max(h, w)
        pts = np.float32([[vx, vy], [vx + far * np.cos(a), vy + far * np.sin(a)],
                          [vx + far * np.cos(b), vy + far * np.sin(b)]])
        cv2.fillPoly(img, [pts.astype(np.int32)], random_color(rng))
    for _ in range(int(rng.integers(2, 8))):  # facades / doors / screens with window grids
        x, y = int(rng.integers(w)), int(rng.integers(h))
        bw, bh = int(rng.integers(w // 10, w // 2)), int(rng.integers(h // 10, h // 2))
        cv2.rectangle(img, (x, y), (x + bw, y + bh), random_color(rng), -1)
        if rng.random() < 0.5:
            step = int(rng.integers(6, 30))
            color = random_color(rng)
            for gx in range(x, x + bw, step):
                cv2.line(img, (gx, y), (gx, y + bh), color, 1)
    for _ in range(int(rng.integers(0, 5))):  # poles
        x = int(rng.integers(w))
        cv2.line(img, (x, 0), (x + int(rng.integers(-20, 20)), h), random_color(rng, 0, 120),
                 int(rng.integers(2, 12)))
    if rng.random() < 0.5:  # railing
        y, color = int(rng.integers(h)), random_color(rng)
        for k in range(int(rng.integers(2, 5))):
            cv2.line(img, (0, y + 8 * k), (w, y + 8 * k + int(rng.integers(-30, 30))), color, 2)
    for _ in range(int(rng.integers(0, 6))):  # people-like blobs
        x, y = int(rng.integers(w)), int(rng.integers(h))
        s = int(rng.integers(8, max(9, h // 4)))
        color = random_color(rng, 0, 140)
        cv2.ellipse(img, (x, y + s), (s // 2, s), 0, 0, 360, color, -1)
        cv2.circle(img, (x, y - s // 8), max(2, s // 3), color, -1)
    shade = 0.75 + 0.5 * fractal_noise(rng, h, w, 4)[..., None]  # surface texture and dirt
    img = np.clip(img * shade, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        _light(rng, img)
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 3.0)))
    return img


# Scene presets choose background mixes by these weights (street last so that the original
# mix draws exactly the same backgrounds as before it was added).
_KINDS = (gradient, texture, wood, pattern, photo_like, street)
DEFAULT_WEIGHTS = (0.15, 0.25, 0.1, 0.15, 0.35, 0.0)


def background(rng, h: int, w: int, weights=DEFAULT_WEIGHTS) -> np.ndarray:
    """A random background with some sharp clutter on top (hard negatives)."""
    p = np.asarray(weights, np.float64)
    kind = _KINDS[int(rng.choice(len(_KINDS), p=p / p.sum()))]
    img = np.ascontiguousarray(kind(rng, h, w))
    if rng.random() < 0.7:
        clutter(rng, img, int(rng.integers(1, 15)))
    return img
