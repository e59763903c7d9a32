"""Load DBNet checkpoints strictly, whatever wrapper or prefix they come with.

    from export.checkpoint import load_checkpoint, model_from_checkpoint
    report = load_checkpoint(model, "db_r18.pth")             # ModelError listing bad keys
    model, report = model_from_checkpoint("db_r18.pth")       # architecture inferred from keys

Accepted layouts: MhLiao/DB files (keys `model.module.backbone...` from DataParallel), plain
state dicts, and `{"state_dict": ...}` / `{"model": ...}` wrappers (extra entries such as
`optimizer` or `epoch` are ignored). Files are read with `torch.load(weights_only=True)`: a
checkpoint is untrusted input. MhLiao's ResNet creates two modules its forward never calls (the
ImageNet classifier `fc` and a 2048->256 `smooth` conv), so every checkpoint its trainer writes,
the released ones included, carries their four tensors: those names exactly are dropped and
reported in one line; any other unexpected key is still an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

from engine.errors import ModelError

if TYPE_CHECKING:
    import torch

    from dbnet.spec import ModelSpec

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
PREFIXES = ("model.module.", "module.", "model.")  # longest first
SOURCE_UNUSED = frozenset({"backbone.fc.weight", "backbone.fc.bias",          # MhLiao/DB ResNet:
                           "backbone.smooth.weight", "backbone.smooth.bias"})  # built, never called
BN_COUNTER = ".num_batches_tracked"                 # absent from old (pre-1.0) checkpoints
_LIST_LIMIT = 12


@dataclass
class LoadReport:
    """What load_checkpoint did: prefix stripped, keys dropped / missing / unexpected."""

    loaded: int = 0
    prefix: str = ""
    dropped: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def notes(self) -> List[str]:
        stripped = f" (stripped prefix '{self.prefix}')" if self.prefix else ""
        out = [f"loaded {self.loaded} tensors{stripped}"]
        if self.dropped:
            out.append(f"dropped {len(self.dropped)} keys MhLiao/DB's ResNet creates but never uses: "
                       f"{_names(self.dropped)}")
        if self.missing:
            out.append(f"missing (left at initial values): {_names(self.missing)}")
        if self.unexpected:
            out.append(f"unexpected (ignored): {_names(self.unexpected)}")
        return out

    def __str__(self) -> str:
        return "; ".join(self.notes())


def _names(keys: List[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f" ... (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def load_file(path):
    """Whatever a checkpoint file holds (tensors, plain containers), loaded with
    `torch.load(weights_only=True)` so nothing in the file runs; one ModelError otherwise."""
    import pickle
    import warnings

    import torch

    check_checkpoint_file(path)
    try:
        with warnings.catch_warnings():  # torch's advice on unsafe pickles: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint not found: {path}") from None
    except (EOFError, OSError) as exc:  # torch reports a truncated zip as EINVAL
        why = getattr(exc, "strerror", None) or str(exc) or "end of file"
        raise ModelError(f"cannot read checkpoint {path}: the file is damaged or truncated "
                         f"({why})") from exc
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, RuntimeError) and "zip archive" in first:  # cut short: not unsafe
            raise ModelError(f"cannot read checkpoint {path}: the file is damaged or truncated "
                             f"({first.split('. ')[0]})") from exc
        raise ModelError(f"cannot read checkpoint {path} with torch.load(weights_only=True): "
                         f"{_refusal(str(exc), first)}. Only tensors and plain containers are "
                         "accepted; re-save the state_dict from trusted code") from exc


def _refusal(message: str, first: str) -> str:
    """Why torch refused the file: the class it pickles where torch names one (a whole model
    saved with torch.save(model)); torch's first line is its advice on loading unsafely, in
    terminal bold, its 'two options' listed on the lines a one-line error drops."""
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if unsupported:
        return f"it pickles {unsupported.group(1)} (an object, not only tensors)"
    return re.sub(r"\x1b\[[0-9;]*m", "", first)


def read_state_dict(path) -> Dict[str, "torch.Tensor"]:
    """The tensors of a checkpoint file, unwrapped (prefixes are still on the keys)."""
    return unwrap(load_file(path), str(path))


def check_checkpoint_file(path) -> None:
    """A clear error for a file torch.save cannot have written (an image, a text file, nothing):
    torch.load would try to unpickle it and fail with anything up to a KeyError."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise ModelError(f"checkpoint {path} is a folder, expected a .pt / .pth file")
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a legacy pickle
        exported = path.suffix.lower() == ".onnx"  # a model exported already: what to do with it
        raise ModelError(f"{path} is not a PyTorch checkpoint (expected a file written by "
                         "torch.save: a zip archive or a pickle)" + (
                             "; an ONNX model is exported already: `dbrt build` makes a TensorRT "
                             "engine of it, `dbrt run --model` runs it" if exported else ""))


def unwrap(obj, where: str = "checkpoint") -> Dict[str, "torch.Tensor"]:
    import torch

    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(f"{where} holds no state dict (found: {keys}); expected tensors or a "
                         f"{' / '.join(WRAPPER_KEYS)} entry")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_tensor_dict(obj: Mapping) -> bool:
    import torch

    return bool(obj) and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= len(obj) / 2


def strip_prefix(state: Mapping[str, object]) -> Tuple[Dict[str, object], str]:
    """Remove the DataParallel / wrapper prefix that every key shares."""
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return dict(state), ""


def normalise_keys(state: Mapping[str, object]) -> Tuple[Dict[str, object], str, List[str]]:
    """(state with our key names, stripped prefix, dropped source-unused keys)."""
    state, prefix = strip_prefix(state)
    dropped = sorted(k for k in state if k in SOURCE_UNUSED)
    return {k: v for k, v in state.items() if k not in dropped}, prefix, dropped


def load_checkpoint(model, source, strict: bool = True) -> LoadReport:
    """Load `source` (a path or a state dict) into `model`; strict: any key problem is an error."""
    raw = unwrap(source) if isinstance(source, Mapping) else read_state_dict(source)
    state, prefix, dropped = normalise_keys(raw)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(BN_COUNTER))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in state if k in own and state[k].shape != own[k].shape)
    if shapes:
        raise ModelError(f"checkpoint does not fit this architecture; shape mismatch: {_names(shapes)}")
    # else loaded without a word: the export then 'differed from PyTorch by nan', or with
    # --no-parity wrote a model whose every map is NaN (no box on any image)
    broken = sorted(k for k in state if k in own and _non_finite(state[k]))
    if broken:
        raise ModelError(f"checkpoint has NaN or infinite values in {_names(broken)} (a training "
                         "run that diverged?); take a checkpoint saved before it")
    if strict and (missing or unexpected):
        parts = [f"missing keys: {_names(missing)}" if missing else "",
                 f"unexpected keys: {_names(unexpected)}" if unexpected else ""]
        raise ModelError("checkpoint keys do not match the model (strict); "
                         + "; ".join(p for p in parts if p))
    usable = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(usable, strict=False)
    return LoadReport(len(usable), prefix, dropped, missing, unexpected)


def _non_finite(tensor) -> bool:
    import torch

    return bool(tensor.is_floating_point() and not torch.isfinite(tensor).all())


def infer_architecture(state: Mapping[str, object]) -> Dict[str, object]:
    """arch (resnet18/34/50), dcn, width and decoder inner channels from key names and shapes."""
    state, _, _ = normalise_keys(state)
    if "backbone.conv1.weight" not in state or "decoder.in5.weight" not in state:
        raise ModelError("not a DBNet checkpoint: backbone.conv1.weight / decoder.in5.weight missing "
                         f"(first keys: {_names(sorted(state)[:5])})")
    bottleneck = any(k.startswith("backbone.layer1.0.conv3.") for k in state)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
    if bottleneck:
        arch = "resnet50"
    elif len(blocks) == 2:
        arch = "resnet18"
    elif len(blocks) == 6:
        arch = "resnet34"
    else:
        raise ModelError(f"unrecognised ResNet depth ({len(blocks)} blocks in layer3, "
                         f"{'bottleneck' if bottleneck else 'basic'} blocks)")
    return {"arch": arch, "dcn": any(".conv2_offset." in k for k in state),
            "width": _width_of(state), "inner_channels": int(state["decoder.in5.weight"].shape[0])}


def _width_of(state: Mapping[str, object]) -> float:
    """The width whose stage channels the checkpoint has (each stage is rounded on its own, so
    no one layer tells it): the roundest such value, 0.3 rather than 0.30078."""
    from .model import stage_channels

    keys = [f"backbone.layer{i}.0.conv1.weight" for i in (1, 2, 3, 4)]
    if not all(k in state for k in keys):
        return state["backbone.conv1.weight"].shape[0] / 64.0
    channels = [int(state[k].shape[0]) for k in keys]
    near = channels[3] / 512.0
    for decimals in (2, 3, 4):
        step = 10.0 ** -decimals
        for k in sorted(range(-20, 21), key=abs):
            width = round(round(near / step) * step + k * step, decimals)
            if width > 0 and stage_channels(width) == channels:
                return width
    return near


def same_width(a: float, b: float) -> bool:
    """Whether two widths build the same network."""
    from .model import stage_channels

    return stage_channels(a) == stage_channels(b)


def _sidecar(path) -> Optional[dict]:
    """The record saved next to a checkpoint (`NAME.json`, as the shipped
    export/assets/dbnet_default.json), or None when there is none."""
    import json

    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read the checkpoint's metadata {side}: {exc}") from exc
    return data if isinstance(data, dict) else None


def sidecar_record(path) -> dict:
    """The whole record next to a checkpoint (`NAME.json`), {} when there is none."""
    return _sidecar(path) or {}


def sidecar_train_config(path) -> dict:
    """The training settings in a checkpoint's record ("train_config"), {} when it has none."""
    data = _sidecar(path) or {}
    return data["train_config"] if isinstance(data.get("train_config"), dict) else {}


def sidecar_spec(path) -> Optional["ModelSpec"]:
    """The ModelSpec in a checkpoint's record (its "spec" object), so an export keeps the
    thresholds the model was tuned with."""
    import json

    from dbnet.spec import ModelSpec

    data = _sidecar(path) or {}
    return ModelSpec.from_json(json.dumps(data["spec"])) if isinstance(data.get("spec"), dict) else None


def sidecar_calib_method(path) -> Optional[str]:
    """The INT8 calibration method a checkpoint's record chose for it on validation
    ("int8_calibration": {"method": ...}), or None when it names none."""
    from .quantize import CALIB_METHODS

    chosen = (_sidecar(path) or {}).get("int8_calibration")
    method = chosen.get("method") if isinstance(chosen, dict) else None
    if method is not None and method not in CALIB_METHODS:
        raise ModelError(f"{Path(path).with_suffix('.json')}: int8_calibration method {method!r} "
                         f"is not one of {', '.join(CALIB_METHODS)}")
    return method


POST_KEYS = ("thresh", "box_thresh", "unclip_ratio")


def validation_records(text: str, bad_line=None) -> list:
    """The records (JSON objects) of a run's val.jsonl text; `bad_line(number)` hears of each
    line that is none (one cut short by a kill)."""
    import json

    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            records.append(dict(json.loads(line)))
        except (ValueError, TypeError):
            if bad_line is not None:
                bad_line(number)
    return records


def logged_validation(path, step) -> Optional[dict]:
    """A run checkpoint's validation as the run logged it: the latest line for `step` of the
    val.jsonl beside it (last.pt's or a snapshot's; best.pt holds its own), None when there is
    none. The file is only read (a shipped run's folder may be read-only)."""
    log = Path(path).parent / "val.jsonl"
    records = validation_records(log.read_text()) if log.is_file() else []
    return next((r for r in reversed(records) if r.get("step") == step and "hmean" in r), None)


def trained_post_settings(path, _depth: int = 0) -> dict:
    """The post-processing thresholds a training checkpoint carries: those its validation
    chose or scored at (in best.pt; for last.pt or a snapshot, its step's line in the run's
    val.jsonl), else those its run recorded when it started (the config's
    `post`), else, for a run before they were recorded, those of the model it started from (its
    --init, by `shipping_post`'s rule, so a chain of fine-tunes keeps them); {} when none says."""
    data = load_file(path)
    if not isinstance(data, Mapping):
        return {}
    tuned = data.get("validation")
    if not isinstance(tuned, Mapping) and "step" in data:
        tuned = logged_validation(path, data["step"])
    if isinstance(tuned, Mapping) and all(k in tuned for k in POST_KEYS):
        return {k: float(tuned[k]) for k in POST_KEYS}
    config = data.get("config") if isinstance(data.get("config"), Mapping) else {}
    recorded = config.get("post")  # the run's own, kept when it started: its --init may be gone
    if isinstance(recorded, Mapping):
        return {k: float(recorded[k]) for k in POST_KEYS if k in recorded}
    init = config.get("init")
    if not init or not Path(init).is_file() or _depth >= 8:  # 8: a cycle of --init stops
        return {}
    return shipping_post(init, _depth + 1)


def shipping_post(path, _depth: int = 0) -> dict:
    """The thresholds a checkpoint ships with: its own record's (NAME.json), else those of
    `trained_post_settings`; {} (DB's defaults) when none says. `dbrt export`, the shipping
    tool and `dbrt train`'s validation all go by it."""
    spec = sidecar_spec(path)
    if spec is not None:
        return {k: float(getattr(spec.post, k)) for k in POST_KEYS}
    return trained_post_settings(path, _depth)


def trained_shrink_ratio(path) -> Optional[float]:
    """The shrink ratio a checkpoint's map was trained with: its record's train_config, else
    the training config inside the checkpoint (a run's best.pt / last.pt); None when neither."""
    ratio = sidecar_train_config(path).get("shrink_ratio")
    if ratio is None:
        data = load_file(path)
        config = data.get("config") if isinstance(data, Mapping) else None
        ratio = config.get("shrink_ratio") if isinstance(config, Mapping) else None
    return None if ratio is None else float(ratio)


def model_from_checkpoint(source, arch: Optional[str] = None, dcn: Optional[bool] = None,
                          width: Optional[float] = None, strict: bool = True):
    """Build the DBNet a checkpoint describes (explicit arguments win) and load it: (model, report)."""
    from .model import DBNet

    raw = unwrap(source) if isinstance(source, Mapping) else read_state_dict(source)
    found = infer_architecture(raw)
    chosen = {"arch": arch or found["arch"], "dcn": found["dcn"] if dcn is None else dcn,
              "width": found["width"] if width is None else width}
    conflicts = [f"{k}={chosen[k]} but the checkpoint has {k}={found[k]}"
                 for k in ("arch", "dcn", "width") if chosen[k] != found[k]
                 and not (k == "width" and same_width(chosen[k], found[k]))]
    if conflicts and strict:
        raise ModelError("checkpoint does not match the requested model: " + "; ".join(conflicts))
    model = DBNet(chosen["arch"], dcn=chosen["dcn"], width=chosen["width"],
                  inner_channels=found["inner_channels"])
    report = load_checkpoint(model, raw, strict=strict)
    return model.eval(), report
