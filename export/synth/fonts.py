"""Fonts for synthetic text: every TrueType/OpenType font the system has, plus Pillow's own.

Fonts are found once (fc-list when available, else the usual font folders) and cached per
(path, size); the order is sorted so a seed picks the same font on every machine with the same
fonts installed.
"""
from __future__ import annotations

import functools
import glob
import shutil
import subprocess
from typing import List, Optional

PILLOW_DEFAULT = "<pillow-default>"
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
              "C:/Windows/Fonts")
# Symbol / maths fonts render boxes or glyphs that are not text.
_SKIP = ("Math", "Symbol", "Emoji", "Dingbat", "ExtraLight")


def _fc_list() -> List[str]:
    if shutil.which("fc-list") is None:
        return []
    try:
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True,
                             text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _globbed() -> List[str]:
    found = []
    for root in _FONT_DIRS:
        for ext in ("ttf", "otf", "TTF", "OTF"):
            found += glob.glob(f"{root}/**/*.{ext}", recursive=True)
    return found


@functools.lru_cache(maxsize=1)
def font_paths() -> tuple:
    """Sorted usable font files, with Pillow's bundled font last (always present)."""
    paths = {p for p in _fc_list() + _globbed() if p.lower().endswith((".ttf", ".otf"))}
    usable = sorted(p for p in paths if not any(s in p for s in _SKIP))
    return tuple(usable) + (PILLOW_DEFAULT,)


@functools.lru_cache(maxsize=512)
def load_font(path: str, size: int):
    """A PIL FreeType font of `size` pixels; Pillow's bundled font for PILLOW_DEFAULT."""
    from PIL import ImageFont

    size = int(max(4, size))
    if path == PILLOW_DEFAULT:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return ImageFont.load_default(size=size)


def pick_font(rng, size: int, paths: Optional[tuple] = None):
    paths = paths or font_paths()
    return load_font(paths[int(rng.integers(len(paths)))], size)
