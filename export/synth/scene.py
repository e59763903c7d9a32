"""One synthetic scene: background, signs / boards / screens, words on them and in the open,
then camera degradations. `make_scene(seed, h, w)` is deterministic by seed.

    scene = make_scene(7, 480, 640)
    scene.image        # (480, 640, 3) uint8 BGR
    scene.polygons     # one (K, 2) float32 array per word, K = 4 (straight) or 12 (curved)
    scene.texts        # the words
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import cv2
import numpy as np

from .background import DEFAULT_WEIGHTS, background, random_color
from .effects import degrade
from .fonts import named_fonts
from .render import LineStyle, render_line
from .words import random_line


@dataclass(frozen=True)
class SceneConfig:
    min_height: float = 8.0        # text height range in pixels (log-uniform)
    max_height: float = 72.0
    max_lines: int = 12
    negative_prob: float = 0.08    # scenes with no text at all (hard negatives)
    panel_prob: float = 0.6        # chance of signs / boards / screens carrying text
    curve_prob: float = 0.1
    degrade: float = 1.0           # strength of camera effects (0: clean)
    tracking_prob: float = 0.0     # chance of widely letter-spaced lines (lightbox, shop signs)
    backgrounds: tuple = DEFAULT_WEIGHTS  # gradient, texture, wood, pattern, photo_like, street
    fonts: tuple = ()              # font file names to pick from (fonts.named_fonts); (): all


# Named scene mixes for training: "default" made the first stage of the shipped model,
# "street" adds photo-like built scenes, "signs" the default backgrounds with more large,
# letter-spaced lettering (lightboxes, shop signs) for a fine-tuning stage.
SCENE_PRESETS = {
    "default": SceneConfig(),
    "street": SceneConfig(max_height=110.0, tracking_prob=0.15,
                          backgrounds=(0.1, 0.15, 0.05, 0.1, 0.25, 0.35)),
    "signs": SceneConfig(max_height=96.0, tracking_prob=0.3, panel_prob=0.7),
}
# Mixes: each training scene is drawn from one of the presets, with these probabilities.
SCENE_MIXES = {
    "mixed": (("default", 0.6), ("signs", 0.4)),
}
SCENE_CHOICES = (*SCENE_PRESETS, *SCENE_MIXES)


def scene_sampler(name: str):
    """A function rng -> SceneConfig for a preset or a mix name."""
    if name in SCENE_PRESETS:
        config = SCENE_PRESETS[name]
        return lambda rng: config
    names, weights = zip(*SCENE_MIXES[name])
    configs = [SCENE_PRESETS[n] for n in names]
    p = np.asarray(weights, np.float64) / sum(weights)
    return lambda rng: configs[int(rng.choice(len(configs), p=p))]


@dataclass
class Scene:
    image: np.ndarray
    polygons: List[np.ndarray] = field(default_factory=list)
    texts: List[str] = field(default_factory=list)


def _luma(color) -> float:
    b, g, r = color
    return 0.114 * b + 0.587 * g + 0.299 * r


def _text_color(rng, under: np.ndarray):
    """A colour that contrasts with the mean colour under the text (mostly), rarely a weak one."""
    mean = under.reshape(-1, 3).mean(0) if under.size else np.full(3, 128.0)
    bright = _luma(mean) > 128
    for _ in range(8):
        color = random_color(rng)
        gap = abs(_luma(color) - _luma(mean))
        if gap > (25 if rng.random() < 0.1 else 70):
            return color
    return (20, 20, 20) if bright else (235, 235, 235)


def _style(rng, config: SceneConfig, height: float) -> LineStyle:
    r = rng.random()
    angle = rng.normal(0, 4) if r < 0.7 else rng.uniform(-35, 35) if r < 0.95 else rng.choice([-90, 90])
    return LineStyle(
        height=height, angle=float(angle),
        perspective=float(rng.uniform(0, 0.5)) if rng.random() < 0.5 else 0.0,
        curve=float(rng.uniform(-0.08, 0.08)) if rng.random() < config.curve_prob else 0.0,
        stroke=int(rng.integers(0, 3)) if rng.random() < 0.2 else 0,
        shadow=bool(rng.random() < 0.1),
        tracking=float(rng.uniform(0.1, 0.8)) if config.tracking_prob
        and rng.random() < config.tracking_prob else 0.0)


def _panel(rng, img: np.ndarray):
    """Draw a sign / board / screen quad; returns its axis-aligned box (x0, y0, x1, y1)."""
    h, w = img.shape[:2]
    pw, ph = int(w * rng.uniform(0.25, 0.8)), int(h * rng.uniform(0.12, 0.5))
    x0, y0 = int(rng.integers(0, max(1, w - pw))), int(rng.integers(0, max(1, h - ph)))
    quad = np.float32([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]])
    quad += rng.uniform(-0.06, 0.06, size=(4, 2)).astype(np.float32) * [pw, ph]
    color = random_color(rng)
    cv2.fillPoly(img, [quad.astype(np.int32)], color, lineType=cv2.LINE_AA)
    if rng.random() < 0.5:
        cv2.polylines(img, [quad.astype(np.int32)], True, random_color(rng),
                      int(rng.integers(2, 8)), lineType=cv2.LINE_AA)
    return x0, y0, x0 + pw, y0 + ph


def _place_lines(rng, img, occupied, box, config, count, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    log_lo, log_hi = np.log(config.min_height), np.log(config.max_height)
    for _ in range(count * 3):  # a few tries per line; collisions are rejected
        if count <= 0:
            return
        height = float(np.exp(rng.uniform(log_lo, min(log_hi, np.log(max(8, (y1 - y0) * 0.8))))))
        center = (rng.uniform(x0, x1), rng.uniform(y0, y1))
        half = max(2, int(height))
        cx, cy = int(center[0]), int(center[1])
        under = img[max(0, cy - half):cy + half, max(0, cx - 3 * half):cx + 3 * half]
        style = _style(rng, config, height)
        style.color = _text_color(rng, under)
        if rng.random() < 0.1:
            style.outline = (255 - style.color[0], 255 - style.color[1], 255 - style.color[2])
        words = random_line(rng, 4 if height < 30 else 2)
        polys = render_line(rng, img, words, center, style, occupied,
                            named_fonts(config.fonts) if config.fonts else None)
        if polys is not None:
            scene.polygons += polys
            scene.texts += words
            count -= 1


def make_scene(seed, height: int, width: int, config: Optional[SceneConfig] = None) -> Scene:
    """A deterministic synthetic scene for `seed` (an int or a NumPy Generator)."""
    config = config or SceneConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    img = background(rng, height, width, config.backgrounds)
    scene = Scene(img)
    if rng.random() >= config.negative_prob:
        occupied = np.zeros((height, width), bool)
        if rng.random() < config.panel_prob:  # all panels first: none may cover earlier text
            boxes = [_panel(rng, img) for _ in range(int(rng.integers(1, 3)))]
            for box in boxes:
                _place_lines(rng, img, occupied, box, config, int(rng.integers(1, 4)), scene)
        free = int(rng.integers(1, config.max_lines + 1))
        _place_lines(rng, img, occupied, (0, 0, width, height), config, free, scene)
    scene.image = degrade(rng, img, config.degrade)
    return scene
