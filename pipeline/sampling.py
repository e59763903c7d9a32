"""Frames sampled from a folder / glob / image / video, for INT8 calibration and accuracy checks:
`read_images` gives BGR images, `calibration_inputs` the network inputs made from them exactly
as at runtime. (export/ quantizes from arrays; reading and preprocessing frames is the runtime's.)
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from dbnet.spec import ModelSpec
from engine.errors import SourceError

from .preprocess import preprocess
from .sources import open_source


def read_images(source, count: Optional[int] = None, exclude: Sequence[str] = ()) -> List[np.ndarray]:
    """Up to `count` BGR images from a folder / glob / image / video (frames spread over the whole
    clip, as `calibration_inputs` takes them), skipping `exclude` names."""
    skip = {os.path.basename(str(e)) for e in exclude}
    images = []
    with open_source(str(source)) as src:
        step = _frame_step(src, count)
        for frame in src:
            if frame.index % step or os.path.basename(str(frame.source)) in skip:
                continue
            images.append(frame.image)
            if count and len(images) == count:
                break
    if not images:
        raise SourceError(f"no images read from {source}")
    return images


def calibration_inputs(source, spec: ModelSpec, count: int = 32, limit_side: Optional[int] = None,
                       exclude: Sequence[str] = ()) -> List[np.ndarray]:
    """`count` (1, 3, H, W) inputs from an image folder / glob / file or frames spread evenly over a
    video, preprocessed exactly as at runtime (spec's colour order, normalisation, resize rule).

    `limit_side` overrides the spec's resize target (smaller is faster to calibrate on a CPU);
    `exclude` names image files to skip (e.g. those used for the accuracy report).
    """
    if count < 1:
        raise SourceError("calibration needs at least one image")
    if limit_side:
        spec = spec.replace(limit_side=limit_side)
    skip = {os.path.basename(str(e)) for e in exclude}
    inputs = []
    with open_source(str(source)) as src:
        step = _frame_step(src, count)
        for frame in src:
            if frame.index % step or os.path.basename(str(frame.source)) in skip:
                continue
            inputs.append(preprocess(frame.image, spec)[0][None])
            if len(inputs) == count:
                break
    if not inputs:
        raise SourceError(f"no calibration frames read from {source}")
    return inputs


def _frame_step(src, count: Optional[int]) -> int:
    """Every how many frames one is taken: a video's `count` frames spread over the whole clip
    (its first frames are much alike: `dbrt build --calib clip.mp4` calibrated on the first two
    seconds); images: the first `count` not excluded."""
    if src.kind == "images" or not count:
        return 1
    return max(1, (src.total_frames or count) // count)
