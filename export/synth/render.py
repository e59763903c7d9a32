"""Render one line of words into a scene with rotation, perspective and light curvature.

A line is drawn once as a grey-level mask in its own flat patch (PIL), bent (cv2.remap) and
warped by a homography into the scene, then blended with a colour (plus optional outline or
shadow). Each word's polygon is mapped with the same bend and homography, so the ground truth
follows the ink exactly: 4 points for straight text, 2*k points for curved text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .fonts import pick_font


@dataclass
class LineStyle:
    height: float                # target cap-to-descender height of the text, pixels
    angle: float = 0.0           # degrees, counter-clockwise
    perspective: float = 0.0     # corner jitter as a fraction of the line height
    curve: float = 0.0           # sagitta of the bend as a fraction of the line width
    color: Tuple[int, int, int] = (0, 0, 0)
    outline: Optional[Tuple[int, int, int]] = None
    shadow: bool = False
    stroke: int = 0
    tracking: float = 0.0        # extra letter spacing as a fraction of the height


def _pieces(word: str, font, tracking: float):
    """[(text, x offset)] drawing `word`: one piece, or one per letter when letter-spaced."""
    if tracking <= 0:
        return [(word, 0.0)], font.getlength(word)
    pieces, x = [], 0.0
    for ch in word:
        pieces.append((ch, x))
        x += font.getlength(ch) + tracking
    return pieces, x - tracking


def _draw_patch(words: List[str], font, stroke: int, tracking: float = 0.0):
    """Mask of the words on one line and each word's ink box (x0, y0, x1, y1) in the patch.

    `tracking` is extra space between letters in pixels (lightbox / shop-sign lettering)."""
    from PIL import Image, ImageDraw

    space = font.getlength(" ") * 1.0 + 2 * tracking
    layout, boxes, x = [], [], 0.0
    for word in words:
        pieces, advance = _pieces(word, font, tracking)
        ink = [font.getbbox(t, stroke_width=stroke) for t, _ in pieces]
        boxes.append((x + min(b[0] + o for b, (_, o) in zip(ink, pieces)), min(b[1] for b in ink),
                      x + max(b[2] + o for b, (_, o) in zip(ink, pieces)), max(b[3] for b in ink)))
        layout += [(t, x + o) for t, o in pieces]
        x += advance + space + 2 * stroke
    left = min(b[0] for b in boxes)
    top = min(b[1] for b in boxes)
    pad = 4 + stroke
    width = int(np.ceil(max(b[2] for b in boxes) - left)) + 2 * pad
    height = int(np.ceil(max(b[3] for b in boxes) - top)) + 2 * pad
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    shift = (pad - left, pad - top)
    for text, x in layout:
        draw.text((x + shift[0], shift[1]), text, font=font, fill=255, stroke_width=stroke,
                  stroke_fill=255)
    boxes = [(b[0] + shift[0], b[1] + shift[1], b[2] + shift[0], b[3] + shift[1]) for b in boxes]
    return np.asarray(img), boxes


def _bend(mask: np.ndarray, curve: float):
    """Bend the patch along a parabola; returns (mask, dy(x) function). Pads vertically."""
    h, w = mask.shape
    sag = curve * w
    pad = int(np.ceil(abs(sag))) + 1
    mask = cv2.copyMakeBorder(mask, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=0)

    def dy(x):
        t = (np.asarray(x, np.float32) / max(w - 1, 1)) * 2 - 1
        return sag * (1 - t ** 2) - sag / 2 + pad

    xs = np.arange(w, dtype=np.float32)
    map_x = np.tile(xs, (mask.shape[0], 1))
    map_y = np.arange(mask.shape[0], dtype=np.float32)[:, None] - dy(xs)[None, :] + pad
    bent = cv2.remap(mask, map_x, map_y.astype(np.float32), cv2.INTER_LINEAR, borderValue=0)
    return bent, dy


def _word_polygon(box, dy, samples: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    xs = np.linspace(x0, x1, samples, dtype=np.float32)
    shift = dy(xs)
    top = np.stack([xs, y0 + shift], 1)
    bottom = np.stack([xs[::-1], y1 + shift[::-1]], 1)
    return np.concatenate([top, bottom]).astype(np.float32)


def _homography(rng, pw: int, ph: int, center, style: LineStyle) -> np.ndarray:
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    half = np.float32([[-pw, -ph], [pw, -ph], [pw, ph], [-pw, ph]]) / 2
    jitter = rng.uniform(-1, 1, size=(4, 2)).astype(np.float32) * style.perspective * ph
    a = np.deg2rad(style.angle)
    rot = np.float32([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    dst = (half + jitter) @ rot.T + np.float32(center)
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _blend(scene: np.ndarray, alpha: np.ndarray, color, x0: int, y0: int) -> None:
    h, w = alpha.shape
    roi = scene[y0:y0 + h, x0:x0 + w].astype(np.float32)
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    scene[y0:y0 + h, x0:x0 + w] = (roi * (1 - a) + np.float32(color) * a).astype(np.uint8)


def render_line(rng, scene: np.ndarray, words: List[str], center, style: LineStyle,
                occupied: Optional[np.ndarray] = None, fonts: Optional[tuple] = None):
    """Draw `words` centred at `center` on scene (in place) and return the word polygons.

    Returns None (drawing nothing) when the warped line would leave the image or touch text
    already marked in the boolean `occupied` map, which is updated otherwise.
    """
    font = pick_font(rng, int(round(style.height * 1.25)), fonts)
    mask, boxes = _draw_patch(words, font, style.stroke, style.tracking * style.height)
    samples = 2
    if style.curve:
        mask, dy = _bend(mask, style.curve)
        samples = 6
    else:
        dy = lambda x: np.zeros_like(np.asarray(x, np.float32))  # noqa: E731
    ph, pw = mask.shape
    H = _homography(rng, pw, ph, center, style)
    corners = cv2.perspectiveTransform(
        np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])[None], H)[0]
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    sh, sw = scene.shape[:2]
    if x0 < 0 or y0 < 0 or x1 > sw or y1 > sh:
        return None
    T = np.float64([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ H
    alpha = cv2.warpPerspective(mask, T, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    if occupied is not None:
        k = max(3, int(style.height * 0.6) | 1)
        footprint = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        if (occupied[y0:y1, x0:x1] & footprint).any():
            return None
        occupied[y0:y1, x0:x1] |= footprint
    if style.shadow:
        off = max(1, int(style.height * 0.08))
        shadow = np.roll(np.roll(alpha, off, 0), off, 1)
        _blend(scene, (shadow * 0.6).astype(np.uint8), (20, 20, 20), x0, y0)
    if style.outline is not None:
        k = max(3, int(style.height * 0.12) | 1)
        _blend(scene, cv2.dilate(alpha, np.ones((k, k), np.uint8)), style.outline, x0, y0)
    _blend(scene, alpha, style.color, x0, y0)
    return [cv2.perspectiveTransform(_word_polygon(b, dy, samples)[None], H)[0] for b in boxes]
