"""`RecSpec`: how a CTC recognizer wants its crops (height, widths, normalisation, channel
order), and the named presets for models made elsewhere."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Tuple

from engine.errors import ModelError
from engine.loader import ENGINE_SUFFIXES, RunnerOptions, tensorrt_usable
from engine.shapes import ShapeProfile


@dataclass(frozen=True)
class RecSpec:
    """height:      crop height the model takes (pixels)
    min_width / max_width: crop widths are clamped to this range (a longer line is squeezed)
    width_step:  batch widths are rounded up to a multiple of this (fewer shapes, little padding)
    mean / std:  per-channel normalisation of x / 255, in the model's channel order
    bgr:         the model takes BGR (OpenCV order, PaddleOCR's) rather than RGB
    batch_size:  crops per engine call (bounds memory on a frame with many texts)
    margin:      each crop reaches this fraction of the text's height beyond its polygon on
                 every side (PP-OCR rec learned from loose crops; a detector's tight box cuts
                 into the first and last letters)
    """

    height: int = 48
    min_width: int = 16
    max_width: int = 1600
    width_step: int = 32
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    bgr: bool = True
    batch_size: int = 32
    margin: float = 0.05

    def __post_init__(self):
        if not (8 <= self.height <= 256 and 1 <= self.min_width <= self.max_width
                and self.width_step >= 1 and self.batch_size >= 1 and 0 <= self.margin <= 1):
            raise ModelError(f"invalid recognizer settings {self}")

    def replace(self, **changes) -> "RecSpec":
        return replace(self, **changes)

    def profile(self, opt_batch: int = 8, opt_width: int = 320) -> ShapeProfile:
        """The TensorRT optimisation profile of the recognizer's input: height fixed, widths
        from the narrowest to the widest bucket, batches 1..batch_size (tuned for `opt_batch`
        crops of `opt_width` pixels, PaddleOCR's rec shape)."""
        height, widest = self.height, self.batch_width(self.max_width)
        opt_w = min(self.batch_width(opt_width), widest)
        return ShapeProfile.from_hw(
            (height, self.batch_width(self.min_width)), (height, opt_w), (height, widest),
            batch=(1, min(opt_batch, self.batch_size), self.batch_size),
            multiples=(height, self.width_step)).validate()

    def batch_width(self, width: int) -> int:
        """The padded width of a batch whose widest crop is `width` pixels."""
        step = self.width_step
        return min(max(-(-int(width) // step) * step, self.min_width), _round_up(self.max_width, step))


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


# PaddleOCR's PP-OCR rec as RapidOCR runs it: height 48, (x/255 - 0.5) / 0.5, BGR, dynamic width.
PRESETS = {"ppocr": RecSpec()}


def preset(name: str) -> RecSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown recognizer preset {name!r}; choose one of "
                         f"{', '.join(sorted(PRESETS))}") from None


def runner_options(profile: Callable[[], ShapeProfile], path: Path, backend: str, device: str,
                   options: Optional[RunnerOptions]) -> RunnerOptions:
    """The options for a reading model's runner (the recognizer's, the direction classifier's):
    the dynamic-shape `profile` for an engine built from the .onnx (a function, so ONNX Runtime
    and prebuilt engines ignore it) and, on ONNX Runtime by default, sleeping idle threads."""
    if options is None:
        tensorrt = (backend == "tensorrt" or path.suffix.lower() in ENGINE_SUFFIXES
                    or (backend == "auto" and device != "cpu" and tensorrt_usable()))
        options = RunnerOptions() if tensorrt else RunnerOptions(spin=False)
    if options.profile is None:
        options = dataclasses.replace(options, profile=lambda metadata: profile())
    return options


def rapidocr_model_path(file_name: str, missing: str) -> Path:
    """A model the `rapidocr` wheel ships (pip install 'dbrt[read]'); `missing` says what it
    is for and which flag gives one instead, when the wheel is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    path = Path(spec.origin).parent / "models" / file_name if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelError(missing.format(file=file_name))
    return path
