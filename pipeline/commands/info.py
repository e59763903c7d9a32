"""`dbrt info`: what a model or engine takes and gives."""
from __future__ import annotations

NAME = "info"
HELP = "show inputs, outputs, profiles, precision and metadata of an .onnx or .engine"
ORDER = 60
DESCRIPTION = """Describe an ONNX model (works on any machine: opset, precision, inputs, outputs,
the dbrt pre/post-processing spec) or a TensorRT engine (its build record: source ONNX hash,
precision, profile, TensorRT version and GPU; plus the engine's own tensors and profiles where
TensorRT and a GPU are usable)."""


def add_arguments(parser) -> None:
    parser.add_argument("model", help="an .onnx model or a TensorRT .engine / .plan")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args) -> int:
    import json

    from engine.describe import describe, format_description

    info = describe(args.model)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0
