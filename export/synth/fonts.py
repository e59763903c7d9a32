"""Fonts for synthetic text: every TrueType/OpenType font the system has, plus Pillow's own.

Fonts are found once (fc-list when available, else the usual font folders) and cached per
(path, size); the order is sorted so a seed picks the same font on every machine with the same
fonts installed. The demo video and the held-out test scenes (`dbrt synth --dataset`) pick from
a fixed list instead (`FIXED_FONTS`, `named_fonts`): their words and pictures, and the scores
measured on them, must not depend on what else a machine has installed.
"""
from __future__ import annotations

import functools
import glob
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Tuple

PILLOW_DEFAULT = "<pillow-default>"
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
              "C:/Windows/Fonts")
# Symbol / maths fonts render boxes or glyphs that are not text.
_SKIP = ("Math", "Symbol", "Emoji", "Dingbat", "ExtraLight")
# The fonts pipeline/assets/demo.mp4 was rendered with (Debian's fonts-dejavu-core and -extra):
# picked by a seed from all of a machine's fonts, the demo drew other fonts, and so placed other
# words, on a machine with more of them (Liberation, Noto, URW with a browser installed), and
# the held-out synthetic set scored 0.867 there instead of 0.884.
FIXED_FONTS = tuple(f"DejaVu{face}.ttf" for face in (
    "Sans-Bold", "Sans-BoldOblique", "Sans-Oblique", "Sans", "SansCondensed-Bold",
    "SansCondensed-BoldOblique", "SansCondensed-Oblique", "SansCondensed", "SansMono-Bold",
    "SansMono-BoldOblique", "SansMono-Oblique", "SansMono", "Serif-Bold", "Serif-BoldItalic",
    "Serif-Italic", "Serif", "SerifCondensed-Bold", "SerifCondensed-BoldItalic",
    "SerifCondensed-Italic", "SerifCondensed"))


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
def _font_files() -> Tuple[str, ...]:
    """Every TrueType / OpenType file of the machine, sorted."""
    return tuple(sorted({p for p in _fc_list() + _globbed() if p.lower().endswith((".ttf", ".otf"))}))


@functools.lru_cache(maxsize=1)
def font_paths() -> tuple:
    """Sorted usable font files, with Pillow's bundled font last (always present)."""
    return tuple(p for p in _font_files() if not any(s in p for s in _SKIP)) + (PILLOW_DEFAULT,)


@functools.lru_cache(maxsize=8)
def named_fonts(names: Tuple[str, ...]) -> tuple:
    """The files named `names` (in that order; Pillow's font for one this machine lacks), with
    Pillow's font last, as in font_paths(): a list a seed picks from alike on every machine."""
    found = {}
    for path in _font_files():
        found.setdefault(Path(path).name, path)
    return tuple(found.get(name, PILLOW_DEFAULT) for name in names) + (PILLOW_DEFAULT,)


def missing_fonts(names: Tuple[str, ...]) -> List[str]:
    """Those of `names` this machine does not have."""
    return [name for name, path in zip(names, named_fonts(names)) if path == PILLOW_DEFAULT]


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
