"""`dbrt info`: what a model or engine takes and gives."""
from __future__ import annotations

from engine.loader import ENGINE_FILE_KINDS

from ._model import TRUST_ENGINE_HELP, check_trust_engine_code

NAME = "info"
HELP = "show inputs, outputs, profiles, precision and metadata of an .onnx or .engine"
ORDER = 60
DESCRIPTION = """Describe an ONNX model (works on any machine: opset, precision, inputs, outputs,
the dbrt pre/post-processing spec) or a TensorRT engine (its build record: source ONNX hash,
precision, profile, TensorRT version and GPU; plus the engine's own tensors and profiles where
TensorRT and a GPU are usable)."""


def add_arguments(parser) -> None:
    parser.add_argument("model", help=f"an .onnx model or a TensorRT engine ({ENGINE_FILE_KINDS})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--trust-engine-code", action="store_true", help=TRUST_ENGINE_HELP)


def run(args) -> int:
    import json

    from engine.describe import describe, format_description

    check_trust_engine_code(args)
    info = describe(args.model, host_code=args.trust_engine_code)
    spec = _model_spec(info)
    if args.json:
        info["spec"] = None if spec is None else json.loads(spec.to_json())
        print(json.dumps(info, indent=2))
    else:
        info["extra_lines"] = ([] if spec is None else [_spec_line(spec)]) + _validation_lines(info)
        print(format_description(info))
    return 0


def _model_spec(info: dict):
    """The dbrt ModelSpec in the model's (or the engine record's) metadata, or None."""
    from dbnet.spec import ModelSpec

    record = info.get("record") or {}
    return ModelSpec.from_metadata(info.get("metadata") or record.get("metadata") or {})


def _validation_lines(info: dict) -> list:
    """The validation a shipped model's training run measured (export.train.ship puts it in
    the ONNX metadata; an engine's record keeps that): one line, none when it has none or
    the entry is not one ship writes."""
    import json

    from dbnet.spec import VALIDATION_METADATA_KEY

    metadata = info.get("metadata") or (info.get("record") or {}).get("metadata") or {}
    try:
        v = json.loads(metadata.get(VALIDATION_METADATA_KEY, "null"))
        scores = f"hmean {v['hmean']:.3f}" + "".join(
            f", {k[0].upper()} {v[k]:.3f}" for k in ("precision", "recall") if k in v)
        split = (v.get("on") or {}).get("val") or "?"
        images = f" ({v['images']} images)" if "images" in v else ""
        post = (f", at thresh {v['thresh']:g} / box_thresh {v['box_thresh']:g} / unclip {v['unclip_ratio']:g}"
                if all(k in v for k in ("thresh", "box_thresh", "unclip_ratio")) else "")
    except (ValueError, TypeError, AttributeError, KeyError):
        return []
    return [f"validation in training (step {v.get('step', '?')}): {scores} on {split}{images}{post}"]


def _spec_line(spec) -> str:
    r, p = spec.resize, spec.post
    return (f"spec: {spec.arch}, {spec.color}, mean {list(spec.mean)}, std {list(spec.std)}, "
            f"limit_side {r.limit_side} ({r.limit_type}), thresh {p.thresh}, "
            f"box_thresh {p.box_thresh}, unclip {p.unclip_ratio}" + _int8_part(spec)
            + ("; UNTRAINED random weights (detections are meaningless)" if spec.untrained else ""))


def _int8_part(spec) -> str:
    """INT8 files: the share of conv MACs still INT8 and the layers kept in FP32."""
    notes = spec.int8
    if spec.precision != "int8" or notes is None:
        return ""
    kept = f", FP32: {', '.join(notes.fp32_layers)}" if notes.fp32_layers else ""
    return f"; INT8 {notes.mac_share:.0%} of conv MACs{kept}"
