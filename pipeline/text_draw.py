"""`TextAnnotator`: what was read, drawn above each polygon in a real font with Pillow
(OpenCV's Hershey fonts have no accents, no CJK, no Arabic)."""
from __future__ import annotations

import functools
import glob
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from engine.lazy import require

from .detections import Detections

# Fonts tried in turn for each label: the first found that draws all its characters wins (DejaVu
# Sans has Latin, Greek, Cyrillic, Arabic but no CJK; a PP-OCR recognizer reads Chinese), else the
# first found; Pillow's own scalable font is the last resort.
_FONT_NAMES = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc",
               "DroidSansFallbackFull.ttf", "wqy-microhei.ttc", "Arial.ttf", "arial.ttf",
               "LiberationSans-Regular.ttf")
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
              "/System/Library/Fonts", "C:/Windows/Fonts")
# a noncharacter no font maps: what a font draws for it is its missing-glyph box
_NO_GLYPH = "\U0010FFFF"


@functools.lru_cache(maxsize=1)
def default_font_paths() -> Tuple[str, ...]:
    """The Unicode TrueType fonts of this system named in _FONT_NAMES, in that order."""
    found = []
    for name in _FONT_NAMES:
        for root in _FONT_DIRS:
            paths = sorted(glob.glob(f"{root}/**/{name}", recursive=True))
            if paths:
                found.append(paths[0])
                break
    return tuple(found)


def default_font_path() -> Optional[str]:
    """The first of `default_font_paths` (None: Pillow's bundled one)."""
    paths = default_font_paths()
    return paths[0] if paths else None


def font_for(label: str, paths: Sequence[Optional[str]]) -> Optional[str]:
    """The first font of `paths` that has a glyph for every character of `label`, else the
    first: one without them draws a row of missing-glyph boxes."""
    for path in paths:
        if all(ch.isspace() or _has_glyph(path, ch) for ch in label):
            return path
    return paths[0] if paths else None


@functools.lru_cache(maxsize=4096)
def _has_glyph(path: Optional[str], char: str) -> bool:
    font = _font(path, 16)
    drawn, missing = font.getmask(char), font.getmask(_NO_GLYPH)
    return drawn.size != missing.size or bytes(drawn) != bytes(missing)


@functools.lru_cache(maxsize=64)
def _font(path: Optional[str], size: int):
    image_font = require("PIL.ImageFont")
    if path is None:
        return image_font.load_default(size=size)
    return image_font.truetype(path, size)


@dataclass(frozen=True)
class TextAnnotator:
    """Writes each polygon's text (and its confidence with `show_score`) on a dark label above
    the polygon; polygons without text get none. `font`: a .ttf/.otf file (default: per label,
    the first system Unicode font that has all its characters). Text size follows the
    polygon's height, within [min_size, max_size]."""

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
        paths = (self.font,) if self.font else default_font_paths() or (None,)
        scores = detections.text_scores  # empty for texts read elsewhere: labels without one
        for k, (poly, text) in enumerate(zip(detections.polygons, texts)):
            if text:
                label = f"{text} {scores[k]:.2f}" if self.show_score and len(scores) else text
                self._label(draw, poly, label, font_for(label, paths))
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
