"""Frames sampled from a folder / glob / image / video, for INT8 calibration and accuracy checks:
`read_images` gives BGR images, `calibration_inputs` the network inputs made from them exactly
as at runtime. (export/ quantizes from arrays; reading and preprocessing frames is the runtime's.)
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence

import numpy as np

from dbnet.spec import ModelSpec
from engine.errors import SourceError

from .preprocess import preprocess
from .sources import open_source


def read_images(source, count: Optional[int] = None, exclude: Sequence[str] = ()) -> List[np.ndarray]:
    """Up to `count` BGR images from a folder / glob / image / video (frames spread over the whole
    clip, as `calibration_inputs` takes them), skipping `exclude` names."""
    images = list(_sampled(source, count, exclude))
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
    inputs = [preprocess(image, spec)[0][None] for image in _sampled(source, count, exclude)]
    if not inputs:
        raise SourceError(f"no calibration frames read from {source}")
    return inputs


def _sampled(source, count: Optional[int], exclude: Sequence[str]) -> Iterator[np.ndarray]:
    """Up to `count` images of `source` (all: None), spread over a video, none named in `exclude`."""
    skip = {os.path.basename(str(e)) for e in exclude}
    taken = 0
    with open_source(str(source)) as src:
        step = _frame_step(src, count)
        for frame in src:
            if frame.index % step or os.path.basename(str(frame.source)) in skip:
                continue
            yield frame.image
            taken += 1
            if count and taken == count:
                return


def _frame_step(src, count: Optional[int]) -> int:
    """Every how many frames one is taken: a video's `count` frames spread over the whole clip
    (its first frames are much alike: `dbrt build --calib clip.mp4` calibrated on the first two
    seconds); images: the first `count` not excluded."""
    if src.kind == "images" or not count:
        return 1
    return max(1, (src.total_frames or count) // count)
