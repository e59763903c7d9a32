"""`TextAnnotator`: what was read, drawn above each polygon in a real font with Pillow
(OpenCV's Hershey fonts have no accents, no CJK, no Arabic)."""
from __future__ import annotations

import functools
import glob
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from engine.lazy import require

from .detections import Detections

# Fonts tried in turn (the first found wins); Pillow's own scalable font is the last resort.
_FONT_NAMES = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc", "Arial.ttf",
               "arial.ttf", "LiberationSans-Regular.ttf")
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
              "/System/Library/Fonts", "C:/Windows/Fonts")


@functools.lru_cache(maxsize=1)
def default_font_path() -> Optional[str]:
    """A Unicode TrueType font of this system (None: Pillow's bundled one)."""
    for name in _FONT_NAMES:
        for root in _FONT_DIRS:
            found = sorted(glob.glob(f"{root}/**/{name}", recursive=True))
            if found:
                return found[0]
    return None


@functools.lru_cache(maxsize=64)
def _font(path: Optional[str], size: int):
    image_font = require("PIL.ImageFont")
    if path is None:
        return image_font.load_default(size=size)
    return image_font.truetype(path, size)


@dataclass(frozen=True)
class TextAnnotator:
    """Writes each polygon's text (and its confidence with `show_score`) on a dark label above
    the polygon; polygons without text get none. `font`: a .ttf/.otf file (default: a system
    Unicode font). Text size follows the polygon's height, within [min_size, max_size]."""

    color: Tuple[int, int, int] = (255, 255, 255)  # BGR
    background: Tuple[int, int, int] = (20, 110, 20)
    font: Optional[str] = None
    show_score: bool = False
    min_size: int = 12
    max_size: int = 28

    def annotate(self, scene: np.ndarray, detections: Detections) -> np.ndarray:
        """Draws in place on `scene` (BGR uint8) and returns it."""
        texts = detections.texts
        if not any(texts):
            return scene
        image_mod, draw_mod = require("PIL.Image"), require("PIL.ImageDraw")
        canvas = image_mod.fromarray(np.ascontiguousarray(scene[:, :, ::-1]))
        draw = draw_mod.Draw(canvas)
        path = self.font or default_font_path()
        scores = detections.text_scores  # empty for texts read elsewhere: labels without one
        for k, (poly, text) in enumerate(zip(detections.polygons, texts)):
            if text:
                label = f"{text} {scores[k]:.2f}" if self.show_score and len(scores) else text
                self._label(draw, poly, label, path)
        scene[:] = np.asarray(canvas)[:, :, ::-1]
        return scene

    def _label(self, draw, poly: np.ndarray, label: str, path: Optional[str]) -> None:
        x0, y0 = poly.min(0)
        height = float(poly[:, 1].max() - y0)
        size = int(np.clip(height * 0.6, self.min_size, self.max_size))
        font = _font(path, size)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        # inside the picture where it fits: a word at the right edge keeps its whole label
        x = int(min(max(0, x0), max(0, draw.im.size[0] - (right - left) - 6)))
        y = int(max(0, y0 - (bottom - top) - 6))
        draw.rectangle((x, y, x + right - left + 6, y + bottom - top + 6), fill=self.background[::-1])
        draw.text((x + 3 - left, y + 3 - top), label, font=font, fill=self.color[::-1])
