"""Options of the DB post-processing, validated once so that no setting is silently ignored."""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

from engine.errors import DbrtError

SCORE_MODES = ("fast", "slow")
BOX_TYPES = ("quad", "poly")


class PostprocessError(DbrtError):
    """A post-processing option is out of range, or a probability map cannot be processed."""


def _check_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise PostprocessError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise PostprocessError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class PostprocessConfig:
    """The reference's options (PaddleOCR `DBPostProcess`), same names and meaning.

    thresh:         binarisation threshold of the probability map (pixel kept if prob > thresh)
    box_thresh:     a candidate is dropped if its mean probability is below this
    max_candidates: contours considered, in the reference's order (the rest are ignored)
    unclip_ratio:   expansion distance = area * unclip_ratio / perimeter
    min_size:       a candidate's rectangle needs a short side >= min_size (>= min_size + 2 after
                    unclipping)
    use_dilation:   dilate the bitmap with a 2x2 kernel before finding components
    score_mode:     "fast" = mean inside the filled quad (polygon in poly mode), "slow" = mean
                    inside the filled contour
    box_type:       "quad" (rotated rectangles) or "poly" (unclipped approximated contours)
    """

    thresh: float = 0.3
    box_thresh: float = 0.6
    max_candidates: int = 1000
    unclip_ratio: float = 1.5
    min_size: int = 3
    use_dilation: bool = False
    score_mode: str = "fast"
    box_type: str = "quad"

    def __post_init__(self):
        object.__setattr__(self, "thresh", _check_unit("thresh", self.thresh))
        object.__setattr__(self, "box_thresh", _check_unit("box_thresh", self.box_thresh))
        object.__setattr__(self, "max_candidates", _check_int("max_candidates", self.max_candidates, 1))
        object.__setattr__(self, "min_size", _check_int("min_size", self.min_size, 1))
        ratio = self.unclip_ratio
        if (isinstance(ratio, bool) or not isinstance(ratio, numbers.Real)
                or not math.isfinite(ratio) or ratio < 0):
            raise PostprocessError(f"unclip_ratio must be a finite number >= 0, got {ratio!r}")
        object.__setattr__(self, "unclip_ratio", float(ratio))
        if not isinstance(self.use_dilation, bool):
            raise PostprocessError(f"use_dilation must be True or False, got {self.use_dilation!r}")
        if self.score_mode not in SCORE_MODES:
            raise PostprocessError(f"score_mode must be one of {SCORE_MODES}, got {self.score_mode!r}")
        if self.box_type not in BOX_TYPES:
            raise PostprocessError(f"box_type must be one of {BOX_TYPES}, got {self.box_type!r}")

    def replace(self, **changes) -> "PostprocessConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)
