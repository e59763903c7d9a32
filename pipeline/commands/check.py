"""`dbrt check`: will TensorRT's ONNX parser take this model? (CPU only, no TensorRT needed)."""
from __future__ import annotations

NAME = "check"
HELP = "check an ONNX model against TensorRT's documented ONNX support (opset, ops, Q/DQ)"
ORDER = 25
DESCRIPTION = """Check every node of an ONNX model against the ONNX parser of the TensorRT
versions you deploy to: opset range, operator support, attribute restrictions (Resize modes,
2D/3D convolution and pooling, DeformConv from 10.1), and explicit-quantization rules (Q/DQ zero
points 0, INT8 only on 8.x). Prints one line per offending node; exits 1 when any target fails.
Targets: 8.5 (JetPack 5.1), 8.6 (JetPack 6.0), 10.x (10.3 = JetPack 6.1 / 6.2; plain 10 means
10.0), 11.x."""


def add_arguments(parser) -> None:
    parser.add_argument("model", help="ONNX file")
    parser.add_argument("--target", nargs="+", default=["8.6", "10.3", "11"], type=_target,
                        help="TensorRT version(s) to check against")


def _target(text: str) -> str:
    """Each --target checked while parsing: a bad one after good ones printed their reports
    and then stopped with exit 2."""
    import argparse

    from engine.errors import ModelError
    from export.trt_compat import TrtTarget

    try:
        TrtTarget.parse(text)
    except ModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run(args) -> int:
    from export.trt_compat import check_onnx

    failed = 0
    for target in args.target:
        report = check_onnx(args.model, target)
        print(report)
        failed += not report.ok
    return 1 if failed else 0
