"""Synthetic scene text (torch-free): scenes with word polygons, datasets and the demo video.

    from export.synth import make_scene
    scene = make_scene(seed=0, height=480, width=640)   # .image BGR uint8, .polygons, .texts
"""
from .scene import Scene, SceneConfig, make_scene

__all__ = ["Scene", "SceneConfig", "make_scene"]
