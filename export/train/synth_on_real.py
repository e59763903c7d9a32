"""Synthetic words drawn onto real photographs (SynthText's idea, without its depth and region
segmentation): `--data synth-on:DIR` takes an ICDAR2015-format folder's photos with their own
labels and adds a few lines of small synthetic words where the photo has no labelled text, so a
model sees many more small words in real surroundings than the folder's labels hold.

The words follow ICDAR 2015's small-word sizes (6-40 px tall in the photo, log-uniform, before
the DB paper's scale change), the photo's contrast under them (`scene._text_color`) and mostly
horizontal lines; then the whole photo gets the synthetic scenes' camera effects at half
strength, so pasted ink is no sharper than the photo around it.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.errors import DbrtError

from ..synth.effects import degrade
from ..synth.scene import Scene, SceneConfig, place_lines
from .data import IcdarDataset, make_sample

PREFIX = "synth-on:"
SMALL_WORDS = SceneConfig(min_height=6.0, max_height=40.0, curve_prob=0.0)
LINES = (2, 9)           # lines drawn per photo: uniform in [2, 9)
KEEP_CLEAR = 6           # pixels kept free around each labelled word, ### ones included


def split_prefix(name: str):
    """'synth-on:DIR' -> ('synth-on:', 'DIR'); any other source name -> ('', name)."""
    return (PREFIX, name[len(PREFIX):]) if name.startswith(PREFIX) else ("", name)


def labelled_area(shape, polygons) -> np.ndarray:
    """Boolean map of the photo's labelled words, grown by KEEP_CLEAR pixels."""
    area = np.zeros(shape[:2], np.uint8)
    for poly in polygons:
        cv2.fillPoly(area, [np.round(poly).astype(np.int32)], 1)
    k = 2 * KEEP_CLEAR + 1
    return cv2.dilate(area, np.ones((k, k), np.uint8)) > 0


def add_words(rng, image: np.ndarray, polygons, ignore, config: SceneConfig = SMALL_WORDS):
    """(image, polygons, ignore) with synthetic lines drawn clear of the labelled words; the
    new words are cared-for (ignore False)."""
    image = image.copy()
    scene = Scene(image)
    h, w = image.shape[:2]
    place_lines(rng, image, labelled_area(image.shape, polygons), (0, 0, w, h), config,
                int(rng.integers(*LINES)), scene)
    image = degrade(rng, image, 0.5)
    return image, list(polygons) + scene.polygons, list(ignore) + [False] * len(scene.polygons)


class SynthOnRealDataset(IcdarDataset):
    """Random crops of an ICDAR2015-format folder's photos with synthetic words added."""

    def __getitem__(self, i: int) -> dict:
        path, polys, ignore = self.items[i % len(self.items)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DbrtError(f"cannot read image {path}")
        rng = np.random.default_rng((self.seed, i, 11))
        image, polys, ignore = add_words(rng, image, polys, ignore)
        return make_sample(rng, image, polys, ignore, self.crop, self.aug, self.shrink_ratio)
