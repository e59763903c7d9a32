"""Training datasets: synthetic scenes made on the fly, and ICDAR2015-format folders.

Both yield dicts of NumPy arrays: `image` (3, S, S) float32 normalised as the model expects
(BGR minus the DB mean, / 255) and the DB targets `gt`, `mask`, `thresh_map`, `thresh_mask`.
Sample i of a SynthDataset depends only on (seed, i): runs are reproducible whatever the
number of DataLoader workers.

ICDAR2015 folder layout (either works): `DIR/img_1.jpg` + `DIR/gt_img_1.txt`, or
`DIR/images/img_1.jpg` + `DIR/gts/gt_img_1.txt` (also `DIR/gt/`). Each gt line is
`x1,y1,x2,y2,x3,y3,x4,y4,transcription`; transcription `###` marks a "do not care" word.
A `gt.json` (`[{"image", "polygons", "ignore"}]`) in DIR is read instead when present.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from engine.errors import DbrtError
from engine.modelspec import DB_MEAN_BGR

from ..synth.scene import SceneConfig, make_scene
from .augment import AugmentConfig, augment
from .labels import make_targets

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def normalise(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR uint8 -> (3, H, W) float32, DB normalisation."""
    x = (image.astype(np.float32) - np.float32(DB_MEAN_BGR)) / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def make_sample(rng, image, polygons, ignore, crop: int, aug: AugmentConfig) -> dict:
    image, polygons, ignore = augment(rng, image, polygons, ignore, crop, aug)
    sample = make_targets(polygons, ignore, crop, crop)
    sample["image"] = normalise(image)
    return sample


class SynthDataset:
    """`length` synthetic training samples; sample i is made from seed (seed, i).

    `scene` is a SceneConfig or a function rng -> SceneConfig (a mix, `scene_sampler`)."""

    def __init__(self, length: int, crop: int = 320, seed: int = 0, scene_size: int = 0,
                 scene=SceneConfig(), aug: AugmentConfig = AugmentConfig()):
        self.length, self.crop, self.seed = length, crop, seed
        self.scene_size = scene_size or int(crop * 1.25)
        self.scene, self.aug = scene, aug

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng((self.seed, i))
        config = self.scene(rng) if callable(self.scene) else self.scene
        scene = make_scene(rng, self.scene_size, self.scene_size, config)
        return make_sample(rng, scene.image, scene.polygons, [False] * len(scene.polygons),
                           self.crop, self.aug)


def _read_icdar_txt(path: Path) -> Tuple[List[np.ndarray], List[bool]]:
    polys, ignore = [], []
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        parts = line.strip().split(",")
        if len(parts) < 9:
            continue
        try:
            coords = np.array([float(v) for v in parts[:8]], np.float32).reshape(4, 2)
        except ValueError:
            continue
        polys.append(coords)
        ignore.append(",".join(parts[8:]).strip() == "###")
    return polys, ignore


def _gt_file(root: Path, image: Path) -> Path:
    for folder in (image.parent, root / "gts", root / "gt"):
        candidate = folder / f"gt_{image.stem}.txt"
        if candidate.exists():
            return candidate
    raise DbrtError(f"no ground truth gt_{image.stem}.txt for {image} (see ICDAR2015 layout)")


def read_icdar_folder(root) -> List[Tuple[Path, List[np.ndarray], List[bool]]]:
    """[(image path, polygons, ignore flags)] of an ICDAR2015-format folder (or gt.json)."""
    root = Path(root)
    if not root.is_dir():
        raise DbrtError(f"dataset folder not found: {root}")
    if (root / "gt.json").exists():
        entries = json.loads((root / "gt.json").read_text())
        base = root / "images" if (root / "images").is_dir() else root
        return [(base / e["image"], [np.array(p, np.float32) for p in e["polygons"]],
                 [bool(i) for i in e["ignore"]]) for e in entries]
    folder = root / "images" if (root / "images").is_dir() else root
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DbrtError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return [(img, *_read_icdar_txt(_gt_file(root, img))) for img in images]


class IcdarDataset:
    """Random crops of an ICDAR2015-format folder; `length` samples per epoch, cycling images."""

    def __init__(self, root, length: int, crop: int = 640, seed: int = 0,
                 aug: AugmentConfig = AugmentConfig(scale=(0.5, 2.0))):
        self.items = read_icdar_folder(root)
        self.length, self.crop, self.seed, self.aug = length, crop, seed, aug

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        path, polys, ignore = self.items[i % len(self.items)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DbrtError(f"cannot read image {path}")
        rng = np.random.default_rng((self.seed, i))
        return make_sample(rng, image, polys, ignore, self.crop, self.aug)
