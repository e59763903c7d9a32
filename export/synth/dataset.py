"""Write a synthetic evaluation / training set to disk: `images/NNNNNN.jpg` + `gt.json`.

The gt.json has the realdev layout (`[{"image", "polygons", "ignore", "texts"}]`), so
`dbrt eval --dataset DIR` and `export.train.data.read_icdar_folder` read it directly. Words whose
box is under `min_text_size` pixels high are marked "do not care", as ICDAR does for
unreadable text. `synth.json` says the folder is a synthetic dataset and how it was made: a
dataset is written only into a new or empty folder or over one that holds it, never over files
of another dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from dbnet.files import naming_the_file, write_image, write_text_whole
from engine.errors import DbrtError

from .fonts import FIXED_FONTS
from .scene import SceneConfig, make_scene


def _record(name: str, scene, min_text_size: float) -> dict:
    polys, ignore = [], []
    for p in scene.polygons:
        size = p.max(0) - p.min(0)
        polys.append(np.round(p, 1).tolist())
        ignore.append(bool(size.min() < min_text_size))
    return {"image": name, "polygons": polys, "ignore": ignore, "texts": list(scene.texts)}


# written first into every synthetic dataset folder: how synth recognises its own output
MARKER = "synth.json"


def _check_writable_here(out: Path) -> None:
    """`out` is new, empty, or a synthetic dataset (it holds MARKER): synth overwrites gt.json
    and images/NNNNNN.jpg, which in another dataset are its ground truth and photos."""
    if not out.is_dir() or (out / MARKER).is_file():
        return
    found = sorted(p.name for p in out.iterdir())
    if found:
        raise DbrtError(f"{out} holds files dbrt synth did not write (e.g. {found[0]}; a synthetic "
                        f"dataset holds {MARKER}): write it into a new or empty folder")


def write_dataset(out_dir, count: int, seed: int = 10_000, height: int = 720, width: int = 1280,
                  config: SceneConfig = SceneConfig(min_height=10, max_height=90,
                                                    fonts=FIXED_FONTS),
                  min_text_size: float = 8, quality: int = 92) -> Path:
    """Write `count` scenes made from seeds (seed, i); returns the gt.json path."""
    out = Path(out_dir)
    _check_writable_here(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    made = {"generator": "dbrt synth", "count": count, "seed": seed, "size": [width, height]}
    with naming_the_file(out / MARKER):  # a few bytes: even a cut-short one marks the folder
        (out / MARKER).write_bytes(json.dumps(made).encode() + b"\n")
    path = out / "gt.json"
    # an earlier run's gt.json would describe the images this run overwrites: a run stopped
    # half-way must leave no ground truth, never the wrong one
    path.unlink(missing_ok=True)
    records = []
    for i in range(count):
        scene = make_scene(np.random.default_rng((seed, i)), height, width, config)
        name = f"{i:06d}.jpg"
        write_image(out / "images" / name, scene.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        records.append(_record(name, scene, min_text_size))
    write_text_whole(path, json.dumps(records))
    return path
