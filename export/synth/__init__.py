"""Synthetic scene text (torch-free): scenes with word polygons, datasets and the demo video.

    from export.synth import make_scene
    scene = make_scene(seed=0, height=480, width=640)   # .image BGR uint8, .polygons, .texts
"""
from typing import List

import numpy as np

from .scene import Scene, SceneConfig, make_scene

__all__ = ["Scene", "SceneConfig", "make_scene", "synthetic_images"]


def synthetic_images(count: int, height: int = 480, width: int = 640,
                     first_seed: int = 10_000) -> List[np.ndarray]:
    """Deterministic synthetic scene-text images (seeds far from the training range)."""
    return [make_scene(first_seed + i, height, width).image for i in range(count)]
