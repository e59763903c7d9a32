"""The demo video: readable synthetic scene text with camera motion, deterministic by seed.

Each shot is one large synthetic scene seen through a moving, slowly zooming window (a camera
pan), with a scrolling text ticker in some shots; shots are joined by hard cuts. Frames are
encoded as H.264 with PyAV.

    write_demo_video("pipeline/assets/demo.mp4")     # 640x360, 25 fps, 10 s, about 1 MB
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from engine.errors import DbrtError
from engine.lazy import require

from .fonts import FIXED_FONTS, named_fonts
from .render import LineStyle, render_line
from .scene import SceneConfig, make_scene

# Big, clean, high-contrast text: the demo must be readable and the default model must find it.
# The same fonts on every machine: the same words and pictures for a seed.
DEMO_SCENE = SceneConfig(min_height=22, max_height=70, max_lines=7, negative_prob=0.0,
                         panel_prob=0.9, curve_prob=0.0, degrade=0.3, fonts=FIXED_FONTS)


def _ticker(rng, width: int, height: int):
    """A long strip of text on a dark band, wider than the frame, scrolled right to left, and
    the words on it."""
    strip = np.zeros((height, width * 3, 3), np.uint8)
    strip[:] = (40, 30, 20)
    words = ["BREAKING", "NEWS", "OPEN", "24H", "SALE", "50%", "OFF", "WELCOME", "CITY", "CENTER",
             "METRO", "LINE", "2", "PARKING", "EXIT"]
    x, style = height * 2, LineStyle(height=height * 0.55, color=(240, 240, 240))
    written = []
    while x < strip.shape[1] - height * 6:
        n = int(rng.integers(1, 3))
        chosen = [words[int(i)] for i in rng.integers(len(words), size=n)]
        if render_line(rng, strip, chosen, (x + height * 2.5, height / 2), style,
                       fonts=named_fonts(FIXED_FONTS)) is not None:
            x += int(height * 7)
            written += chosen
        else:
            break
    return strip, written


def _shot_setup(rng, seed: int, w: int, h: int, ticker: bool):
    """A shot's scene, camera path (start, end, zoom), ticker strip and the words of both."""
    big_w, big_h = int(w * 1.5), int(h * 1.5)
    scene = make_scene(np.random.default_rng(seed), big_h, big_w, DEMO_SCENE)
    start = np.array([rng.uniform(0, big_w - w), rng.uniform(0, big_h - h)])
    end = np.array([rng.uniform(0, big_w - w), rng.uniform(0, big_h - h)])
    zoom = rng.uniform(1.0, 1.15)
    strip, ticker_words = _ticker(rng, w, h // 9) if ticker else (None, [])
    return scene.image, (start, end, zoom), strip, list(scene.texts) + ticker_words


def _shot(rng, seed: int, w: int, h: int, frames: int, ticker: bool) -> Iterator[np.ndarray]:
    scene, (start, end, zoom), strip, _ = _shot_setup(rng, seed, w, h, ticker)
    band_h = h // 9
    for i in range(frames):
        t = i / max(1, frames - 1)
        cx, cy = start * (1 - t) + end * t + np.array([w, h]) / 2
        s = 1 + (zoom - 1) * t  # slow zoom in
        m = np.float32([[s, 0, w / 2 - s * cx], [0, s, h / 2 - s * cy]])
        frame = cv2.warpAffine(scene, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        if strip is not None:
            off = int(i * 4) % (strip.shape[1] - w)
            frame[h - band_h:] = strip[:, off:off + w]
        yield frame


def demo_frames(seed: int = 2024, width: int = 640, height: int = 360, fps: int = 25,
                seconds: float = 10.0, shots: int = 4) -> Iterator[np.ndarray]:
    """BGR uint8 frames of the demo video (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    total = int(round(fps * seconds))
    per = [total // shots + (1 if i < total % shots else 0) for i in range(shots)]
    for k, n in enumerate(per):
        yield from _shot(rng, seed * 100 + k, width, height, n, ticker=k % 2 == 1)


def demo_words(seed: int = 2024, width: int = 640, height: int = 360, shots: int = 4) -> set:
    """Every word drawn in the demo video's scenes and tickers (the camera shows a part of
    each scene, so a run reads a subset)."""
    rng = np.random.default_rng(seed)
    words = set()
    for k in range(shots):
        words.update(_shot_setup(rng, seed * 100 + k, width, height, ticker=k % 2 == 1)[3])
    return words


def write_demo_video(path, seed: int = 2024, width: int = 640, height: int = 360, fps: int = 25,
                     seconds: float = 10.0, crf: int = 26) -> Path:
    """Encode demo_frames() as H.264 (yuv420p) MP4 at `path`; returns the path."""
    av = require("av")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside it (same suffix: FFmpeg picks the container by it), then renamed: a run
    # stopped half-way leaves the earlier video, never a truncated one under its name
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    # FFmpeg opens the file at the first packet: a bad path fails there, not at av.open
    try:
        with av.open(str(partial), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # Fixed options and one thread: the same bytes on every run of the same libx264.
            stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
            for frame in demo_frames(seed, width, height, fps, seconds):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(partial, path)
    except (OSError, ValueError) as exc:
        raise DbrtError(f"cannot write the video {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return path
