"""Optimisation profiles: the NCHW input range an engine accepts (min <= opt <= max)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .errors import ShapeError

Shape = Tuple[int, ...]


def parse_shape(text: str) -> Shape:
    """'1x3x736x1280' (NCHW) or '736x1280' (HxW) -> tuple of ints."""
    try:
        dims = tuple(int(d) for d in str(text).lower().replace(",", "x").split("x"))
    except ValueError:
        raise ShapeError(f"bad shape {text!r}: expected NxCxHxW or HxW, e.g. 1x3x736x1280") from None
    if len(dims) not in (2, 4) or any(d <= 0 for d in dims):
        raise ShapeError(f"bad shape {text!r}: expected NxCxHxW or HxW with positive sizes")
    return dims


def parse_batch(text: str) -> Tuple[int, int, int]:
    """'4' -> a fixed batch (4, 4, 4); '1:8' -> (1, 1, 8); '1:2:8' -> (1, 2, 8) as min:opt:max."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        raise ShapeError(f"bad batch range {text!r}: expected N, MIN:MAX or MIN:OPT:MAX") from None
    if len(parts) == 1:
        parts = parts * 3
    elif len(parts) == 2:
        parts = [parts[0], parts[0], parts[1]]
    if len(parts) != 3 or not 0 < parts[0] <= parts[1] <= parts[2]:
        raise ShapeError(f"bad batch range {text!r}: need 0 < MIN <= OPT <= MAX")
    return tuple(parts)


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


DEFAULT_MULTIPLES = (32, 32)  # a DB-family detector downsamples H and W by 32


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max NCHW shapes of the image input. TensorRT tunes kernels for `opt`.

    multiples: the model's shape rule, (H, W) multiples every shape must be: (32, 32) for a
    DB-family detector; a recognizer of fixed height 48 whose crop widths are bucketed by 32
    takes (48, 32)."""

    min: Shape
    opt: Shape
    max: Shape
    multiples: Tuple[int, int] = DEFAULT_MULTIPLES

    def __post_init__(self):
        for field in ("min", "opt", "max", "multiples"):
            object.__setattr__(self, field, tuple(int(d) for d in getattr(self, field)))
        if len(self.multiples) != 2 or min(self.multiples) < 1:
            raise ShapeError(f"profile multiples must be two positive (H, W) steps, got {self.multiples}")

    @classmethod
    def from_hw(cls, min_hw: Sequence[int], opt_hw: Sequence[int], max_hw: Sequence[int],
                batch: Sequence[int] = (1, 1, 1), channels: int = 3,
                multiples: Sequence[int] = DEFAULT_MULTIPLES) -> "ShapeProfile":
        return cls((batch[0], channels, *min_hw), (batch[1], channels, *opt_hw),
                   (batch[2], channels, *max_hw), tuple(multiples))

    @classmethod
    def static(cls, shape: Sequence[int]) -> "ShapeProfile":
        return cls(tuple(shape), tuple(shape), tuple(shape))

    def validate(self, stride: Optional[int] = None) -> "ShapeProfile":
        """Raise ShapeError unless this is a usable NCHW profile whose H and W follow the shape
        rule: multiples of `stride` when given, else of the profile's own `multiples`."""
        if not len(self.min) == len(self.opt) == len(self.max) == 4:
            raise ShapeError(f"profile {self} must have NCHW shapes")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ShapeError(f"profile {self} needs min <= opt <= max in every dimension")
        if not self.min[1] == self.opt[1] == self.max[1]:
            raise ShapeError(f"profile {self}: the channel count must not vary")
        step_h, step_w = (stride, stride) if stride else self.multiples
        for shape in (self.min, self.opt, self.max):
            if shape[2] % step_h or shape[3] % step_w:
                rule = (f"H and W must be multiples of {step_h} (the model downsamples by {step_h})"
                        if step_h == step_w else
                        f"H must be a multiple of {step_h} and W of {step_w} (the model's shape rule)")
                raise ShapeError(f"profile {self}: {rule}")
        return self

    def pinned(self, dims: Sequence) -> "ShapeProfile":
        """This profile with every axis the model fixes (an int > 0 in `dims`, the ONNX input's
        shape) at that size: a default profile (a loader's, from the model's metadata) follows a
        model exported with, e.g., a fixed batch or a fixed width."""
        fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
        if len(fixed) != len(self.min) or not any(fixed):
            return self
        shapes = [tuple(f or d for f, d in zip(fixed, shape)) for shape in (self.min, self.opt, self.max)]
        multiples = tuple(f or m for f, m in zip(fixed[2:], self.multiples))
        return ShapeProfile(*shapes, multiples)

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def describe(self) -> str:
        return f"min {_fmt(self.min)}, opt {_fmt(self.opt)}, max {_fmt(self.max)}"

    def __str__(self) -> str:
        return f"{_fmt(self.min)}:{_fmt(self.opt)}:{_fmt(self.max)}"

    def to_dict(self) -> dict:
        out = {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}
        if self.multiples != DEFAULT_MULTIPLES:  # a detector's record (and cache key) unchanged
            out["multiples"] = list(self.multiples)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ShapeProfile":
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]),
                   tuple(data.get("multiples", DEFAULT_MULTIPLES)))


def check_in_profile(name: str, shape: Sequence[int], profile: ShapeProfile) -> None:
    """Raise ShapeError naming the accepted range when `shape` is outside `profile`."""
    if not profile.contains(shape):
        raise ShapeError(f"input {name!r} shape {_fmt(shape)} is outside the engine's profile "
                         f"({profile.describe()}); resize the input, or rebuild the engine with "
                         "dbrt build --min/--opt/--max covering it")
