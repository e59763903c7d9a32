"""What a detector needs around the network: input normalisation, the resize rule, the output's
meaning and the post-processing settings, as one typed `ModelSpec`.

Our exported ONNX files carry it in `metadata_props` (key `dbrt`, a JSON object), so later stages
need no extra flags; foreign DB-family models (PP-OCR, MMOCR) get it from a named preset.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional, Tuple

from engine.errors import ModelError, ShapeError
from engine.shapes import ShapeProfile

from .postprocess_config import PostprocessConfig

METADATA_KEY = "dbrt"
# a shipped model's validation in its training run (export.train.ship), for `dbrt info`
VALIDATION_METADATA_KEY = "dbrt_validation"

# MhLiao/DB: BGR minus this mean, divided by 255 (no per-channel std).
DB_MEAN_BGR = (122.67891434, 116.66876762, 104.00698793)
# torchvision / MMOCR ImageNet statistics in 0..255 pixel units, RGB order.
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
# Resize rules (target_size below): "min" short side = limit_side (MhLiao/DB),
# "max" long side <= limit_side, "min_at_least" short side >= limit_side (PaddleOCR's "min").
LIMIT_TYPES = ("min", "max", "min_at_least")
# Largest network input side (PaddleOCR's max_side_limit): the resize rule is capped here, so a
# 2x4000 strip under "min side 736" gets a 32x4000 input instead of 736x1,472,000 (12 GiB).
MAX_INPUT_SIDE = 4000


@dataclass(frozen=True)
class Resize:
    """How a frame becomes the network input (dbnet.spec.target_size).

    limit_side / limit_type: the resize rule (LIMIT_TYPES); stride: H and W are multiples of it;
    keep_aspect: letterbox (pad) instead of stretching onto the input size.
    """

    limit_side: int = 736
    limit_type: str = "min"
    stride: int = 32
    keep_aspect: bool = False

    def __post_init__(self):
        if self.limit_type not in LIMIT_TYPES:
            raise ModelError(f"limit_type must be one of {', '.join(LIMIT_TYPES)}, "
                             f"got {self.limit_type!r}")
        if self.stride <= 0 or not self.stride <= self.limit_side <= MAX_INPUT_SIDE:
            raise ModelError(f"bad stride {self.stride} / limit_side {self.limit_side} "
                             f"(limit_side must be from the stride to {MAX_INPUT_SIDE})")

    def replace(self, **changes) -> "Resize":
        return replace(self, **changes)

    def input_size(self, frame_h: int, frame_w: int, max_side: int = MAX_INPUT_SIDE) -> Tuple[int, int]:
        """The network (H, W) for a frame of this size."""
        return target_size(frame_h, frame_w, self.limit_side, self.limit_type, self.stride, max_side)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def target_size(frame_h: int, frame_w: int, limit_side: int, limit_type: str = "min",
                stride: int = 32, max_side: int = MAX_INPUT_SIDE) -> Tuple[int, int]:
    """Network input (H, W), multiples of `stride`, following the DB / PaddleOCR resize rule.

    limit_type "min": the short side becomes `limit_side` (MhLiao's 736);
    limit_type "max": the long side is capped at `limit_side` (never upscaled);
    limit_type "min_at_least": the short side is raised to `limit_side` when shorter (PP-OCR).
    Whatever the rule asks, no side exceeds `max_side` (the aspect ratio is kept), so a 2x4000
    strip under "min side 736" gets a 32x4000 input, not 736x1,472,000.
    """
    if frame_h <= 0 or frame_w <= 0:
        raise ShapeError(f"empty frame {frame_h}x{frame_w}")
    if limit_type == "min":
        ratio = limit_side / min(frame_h, frame_w)
        size = _round_to(frame_h * ratio, stride), _round_to(frame_w * ratio, stride)
    elif limit_type == "max":
        ratio = min(1.0, limit_side / max(frame_h, frame_w))
        size = _round_to(frame_h * ratio, stride), _round_to(frame_w * ratio, stride)
    elif limit_type == "min_at_least":
        # PaddleOCR / RapidOCR "min": raise a short side below limit_side, never reduce; they
        # truncate the scaled size before rounding, which matters on x.5 multiples of stride.
        ratio = max(1.0, limit_side / min(frame_h, frame_w))
        size = _round_to(int(frame_h * ratio), stride), _round_to(int(frame_w * ratio), stride)
    else:
        raise ShapeError(f"limit_type must be 'min', 'max' or 'min_at_least', got {limit_type!r}")
    if max(size) <= max_side:
        return size
    ratio = max_side / max(frame_h, frame_w)  # rounded down, so the cap holds
    return tuple(max(stride, int(side * ratio) // stride * stride) for side in (frame_h, frame_w))


@dataclass(frozen=True)
class Int8Notes:
    """What INT8 quantization left in FP32 (recorded by `dbrt export`)."""

    fp32_layers: Tuple[str, ...] = ()
    mac_share: float = 1.0  # share of the convolution MACs that run in INT8


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
    resize: Resize = field(default_factory=Resize)
    output: Optional[str] = None            # name of the probability output (None: the first)
    output_is_prob: bool = True             # False: apply a sigmoid to the output
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    precision: str = "fp32"
    untrained: bool = False                 # random weights: a demo of the pipeline only
    int8: Optional[Int8Notes] = None

    def __post_init__(self):
        if self.color not in ("BGR", "RGB"):
            raise ModelError(f"color must be BGR or RGB, got {self.color!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ModelError("mean and std need three values each and std must be non-zero")
        for name, kind in (("resize", Resize), ("post", PostprocessConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ModelError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}; "
                                 f"set its fields with spec.replace(field=value)")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def replace(self, **changes) -> "ModelSpec":
        """A copy with fields changed; the fields of `resize` and `post` may be named directly
        (`spec.replace(limit_side=640, box_thresh=0.5)`); an unknown name is an error."""
        own = {k: v for k, v in changes.items() if k in _FIELDS}
        resize = {k: v for k, v in changes.items() if k in _RESIZE_FIELDS}
        post = {k: v for k, v in changes.items() if k in _POST_FIELDS}
        unknown = set(changes) - set(own) - set(resize) - set(post)
        if unknown:
            raise ModelError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        if resize:
            own["resize"] = own.get("resize", self.resize).replace(**resize)
        if post:
            own["post"] = own.get("post", self.post).replace(**post)
        return replace(self, **own)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model metadata is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """From `to_json`'s object, or from the flat records of earlier dbrt versions."""
        data = _unflatten(dict(data))
        own = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in _FIELDS}
        own["resize"] = Resize(**data.get("resize") or {})
        own["post"] = PostprocessConfig(**data.get("post") or {})
        int8 = data.get("int8")
        own["int8"] = None if int8 is None else Int8Notes(tuple(int8.get("fp32_layers", ())),
                                                          float(int8.get("mac_share", 1.0)))
        return cls(**own)

    @classmethod
    def from_metadata(cls, props: dict) -> Optional["ModelSpec"]:
        """From an ONNX / engine metadata dict; None when it has no dbrt record."""
        text = props.get(METADATA_KEY)
        return None if text is None else cls.from_json(text)


_FIELDS = {f.name for f in fields(ModelSpec)}
_RESIZE_FIELDS = {f.name for f in fields(Resize)}
_POST_FIELDS = {f.name for f in fields(PostprocessConfig)}


def _unflatten(data: dict) -> dict:
    """Earlier records were flat, with optional settings in an `extra` object; unknown keys
    (written by a newer dbrt) are ignored."""
    extra = data.pop("extra", None) or {}
    resize, post = dict(data.get("resize") or {}), dict(data.get("post") or {})
    for key, value in list(data.items()) + list(extra.items()):
        if key in _RESIZE_FIELDS:
            resize[key] = value
        elif key in _POST_FIELDS:
            post[key] = value
    if "untrained" in extra:
        data["untrained"] = bool(extra["untrained"])
    if "int8_fp32_layers" in extra or "int8_mac_share" in extra:
        data["int8"] = {"fp32_layers": extra.get("int8_fp32_layers", ()),
                        "mac_share": extra.get("int8_mac_share", 1.0)}
    data["resize"], data["post"] = resize, post
    return data


# Presets for models that carry no dbrt metadata.
PRESETS = {
    # MhLiao/DB and our own models.
    "db": ModelSpec(arch="dbnet"),
    # PaddleOCR PP-OCR det (v3..v6) as RapidOCR runs it (rapidocr 3.x config.yaml, section Det):
    # BGR, pixel/255 then (x - 0.5) / 0.5; the short side is raised to 736 but never reduced;
    # the network ends in a sigmoid; DB post-processing with a 2x2 dilation of the bitmap.
    "ppocr": ModelSpec(arch="ppocr-det", color="BGR", mean=(127.5, 127.5, 127.5),
                       std=(127.5, 127.5, 127.5), resize=Resize(736, "min_at_least"),
                       post=PostprocessConfig(thresh=0.3, box_thresh=0.5, unclip_ratio=1.6,
                                              use_dilation=True, max_candidates=1000,
                                              score_mode="fast")),
    # MMOCR 1.x DBNet (dbnet_resnet18_fpnc, TextDetDataPreprocessor + DBPostprocessor): RGB,
    # ImageNet mean / std, short side 736 keeping the aspect ratio and padding to 32; the
    # exported head returns the (N, H, W) probability map.
    "mmocr": ModelSpec(arch="mmocr-dbnet", color="RGB", mean=IMAGENET_MEAN_RGB,
                       std=IMAGENET_STD_RGB, resize=Resize(736, "min", keep_aspect=True),
                       post=PostprocessConfig(thresh=0.3, box_thresh=0.3, unclip_ratio=1.5,
                                              max_candidates=3000)),
}


def preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}") from None


def resolve_spec(metadata: Optional[dict] = None, preset_name: Optional[str] = None) -> ModelSpec:
    """The ONE place that decides a model's ModelSpec: an explicit preset wins, then the model's
    own dbrt metadata, then the DB defaults. Change it further with `spec.replace(...)`."""
    if preset_name:
        return preset(preset_name)
    return ModelSpec.from_metadata(metadata or {}) or PRESETS["db"]


def _round_up(value: float, multiple: int) -> int:
    return max(multiple, -(-int(value) // multiple) * multiple)


def default_profile(limit_side: int = 736, limit_type: str = "min", stride: int = 32,
                    max_batch: int = 4) -> ShapeProfile:
    """A profile for video under the model's resize rule (see dbnet.spec.target_size).

    "min" (short side -> limit_side): opt is a 16:9 frame, max allows either orientation up to
    3 x limit_side (21:9 and portrait video). "max" (long side capped): opt is a 16:9 frame with
    its long side at limit_side, max is limit_side square. Batches 1..max_batch, tuned for 1.
    """
    if limit_type == "max":
        opt = (_round_up(limit_side * 9 / 16, stride), _round_up(limit_side, stride))
        top = _round_up(limit_side, stride)
    else:
        opt = (_round_up(limit_side, stride), _round_up(limit_side * 16 / 9, stride))
        top = min(_round_up(3 * limit_side, stride), 4096)
    return ShapeProfile.from_hw((stride, stride), opt, (top, top),
                                batch=(1, 1, max_batch)).validate(stride)


def profile_for(metadata: dict, preset_name: Optional[str] = None) -> ShapeProfile:
    """The engine profile of a model from its metadata (or preset): what `dbrt build` and the
    engine cache use when no profile is given (engine.tensorrt.build calls it for dynamic inputs)."""
    resize = resolve_spec(metadata, preset_name).resize
    return default_profile(resize.limit_side, resize.limit_type, resize.stride)
