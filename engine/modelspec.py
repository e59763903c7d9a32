"""What a detector needs around the network: input normalisation, resize rule, output meaning
and default post-processing thresholds.

Our exported ONNX files carry it in `metadata_props` (key `dbrt`, a JSON object), so later stages
need no extra flags; foreign DB-family models (PP-OCR, MMOCR) get it from a named preset.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Tuple

from .errors import ModelError

METADATA_KEY = "dbrt"

# MhLiao/DB: BGR minus this mean, divided by 255 (no per-channel std).
DB_MEAN_BGR = (122.67891434, 116.66876762, 104.00698793)
# torchvision / MMOCR ImageNet statistics in 0..255 pixel units, RGB order.
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
# Resize rules (pipeline.preprocess.target_size): "min" short side = limit_side (MhLiao/DB),
# "max" long side <= limit_side, "min_at_least" short side >= limit_side (PaddleOCR's "min").
LIMIT_TYPES = ("min", "max", "min_at_least")
# Largest network input side (PaddleOCR's max_side_limit): the resize rule is capped here, so a
# 2x4000 strip under "min side 736" gets a 32x4000 input instead of 736x1,472,000 (12 GiB).
MAX_INPUT_SIDE = 4000


@dataclass(frozen=True)
class ModelSpec:
    """Pre- and post-processing contract of a DB-family detector.

    Normalisation is `(pixel - mean) / std` per channel in the colour order `color`, with
    mean and std in 0..255 pixel units (DB style: std = 255 for every channel).
    """

    arch: str = "unknown"
    color: str = "BGR"                      # channel order the network expects
    mean: Tuple[float, float, float] = DB_MEAN_BGR
    std: Tuple[float, float, float] = (255.0, 255.0, 255.0)
    stride: int = 32                        # H and W must be multiples of this
    limit_side: int = 736                   # resize rule: see pipeline.preprocess.target_size
    limit_type: str = "min"                 # one of LIMIT_TYPES
    output: Optional[str] = None            # name of the probability output (None: the first)
    output_is_prob: bool = True             # False: apply a sigmoid to the output
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.color not in ("BGR", "RGB"):
            raise ModelError(f"color must be BGR or RGB, got {self.color!r}")
        if self.limit_type not in LIMIT_TYPES:
            raise ModelError(f"limit_type must be one of {', '.join(LIMIT_TYPES)}, "
                             f"got {self.limit_type!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ModelError("mean and std need three values each and std must be non-zero")
        if self.stride <= 0 or not self.stride <= self.limit_side <= MAX_INPUT_SIDE:
            raise ModelError(f"bad stride {self.stride} / limit_side {self.limit_side} "
                             f"(limit_side must be from the stride to {MAX_INPUT_SIDE})")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def replace(self, **changes) -> "ModelSpec":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model metadata is not valid JSON: {exc}") from exc
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        extra = dict(data.pop("extra", {}) or {})
        for key in unknown:
            extra[key] = data.pop(key)
        return cls(extra=extra, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    @classmethod
    def from_metadata(cls, props: dict) -> Optional["ModelSpec"]:
        """From an ONNX / engine metadata dict; None when it has no dbrt record."""
        text = props.get(METADATA_KEY)
        return None if text is None else cls.from_json(text)


# Presets for models that carry no dbrt metadata.
PRESETS = {
    # MhLiao/DB and our own models.
    "db": ModelSpec(arch="dbnet"),
    # PaddleOCR PP-OCR det (v3..v6) as RapidOCR runs it (rapidocr 3.x config.yaml, section Det):
    # BGR, pixel/255 then (x - 0.5) / 0.5; the short side is raised to 736 but never reduced;
    # the network ends in a sigmoid; DB post-processing with a 2x2 dilation of the bitmap.
    "ppocr": ModelSpec(arch="ppocr-det", color="BGR", mean=(127.5, 127.5, 127.5),
                       std=(127.5, 127.5, 127.5), limit_side=736, limit_type="min_at_least",
                       thresh=0.3, box_thresh=0.5, unclip_ratio=1.6,
                       extra={"use_dilation": True, "max_candidates": 1000, "score_mode": "fast"}),
    # MMOCR 1.x DBNet (dbnet_resnet18_fpnc, TextDetDataPreprocessor + DBPostprocessor): RGB,
    # ImageNet mean / std, short side 736 keeping the aspect ratio and padding to 32; the
    # exported head returns the (N, H, W) probability map.
    "mmocr": ModelSpec(arch="mmocr-dbnet", color="RGB", mean=IMAGENET_MEAN_RGB,
                       std=IMAGENET_STD_RGB, limit_side=736, limit_type="min",
                       thresh=0.3, box_thresh=0.3, unclip_ratio=1.5,
                       extra={"keep_aspect": True, "max_candidates": 3000}),
}


def preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}") from None


def resolve_spec(metadata: Optional[dict] = None, preset_name: Optional[str] = None,
                 **overrides) -> ModelSpec:
    """The ONE place that decides a model's ModelSpec: an explicit preset wins, then the model's
    own dbrt metadata, then the DB defaults; `overrides` (non-None values only) apply last."""
    if preset_name:
        spec = preset(preset_name)
    else:
        spec = ModelSpec.from_metadata(metadata or {}) or PRESETS["db"]
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - set(ModelSpec.__dataclass_fields__)
    if unknown:
        raise ModelError(f"unknown model option(s): {', '.join(sorted(unknown))}")
    return spec.replace(**changes) if changes else spec
