"""Will TensorRT's ONNX parser take this model? A CPU-only check against the documented support.

    from export.trt_compat import check_onnx
    report = check_onnx("model.onnx", target="8.6")   # "8.5", "8.6", "10", "10.3", "11", ...
    print(report)                                      # one line per offending node
    report.raise_for_issues()                          # ModelError naming the nodes

Rules come from onnx-tensorrt's `docs/operators.md` for each release line and the TensorRT
migration notes (see docs in ../shared/docs/tensorrt.md): the opset range a parser accepts, the
operator list, attribute restrictions (Resize modes, 2D/3D convolution and pooling, DeformConv
from 10.1 with symmetric pads), and explicit quantization rules (Q/DQ zero points must be 0,
INT8 only before 10.0, constant scales). A target given as "10" means 10.0, the most restrictive
10.x; name the exact version you deploy to (JetPack 6.1 and 6.2 ship 10.3, JetPack 6.0 8.6,
JetPack 5.1 8.5).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from engine.errors import ModelError
from engine.lazy import require
from engine.onnx_info import load_onnx

# Operators every target from 8.5 on parses (onnx-tensorrt operators.md, 8.x tables).
_BASE_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GRU
HardSigmoid HardSwish Identity If ImageScaler InstanceNormalization IsNaN LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul
Neg NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform
RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Upsample Where Xor
""".split())
# Added in the 10.x tables.
_OPS_10 = frozenset("""
BlackmanWindow CastLike DeformConv Gelu GridSample GroupNormalization HammingWindow HannWindow
Hardmax IsInf MeanVarianceNormalization Mish Mod NonZero OneHot RandomNormal RandomNormalLike
Reciprocal RoiAlign
""".split())

_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_INT8, _UINT8 = 3, 2                              # onnx.TensorProto data types
_FP8_TYPES = {17, 18, 19, 20}
_INT4 = 22


@dataclass(frozen=True)
class TrtTarget:
    """A TensorRT release line as far as its ONNX parser is concerned."""

    version: Tuple[int, int]

    @classmethod
    def parse(cls, text) -> "TrtTarget":
        try:
            parts = [int(p) for p in str(text).strip().split(".")[:2]]
        except ValueError:
            raise ModelError(f"bad TensorRT target {text!r}; use e.g. 8.6, 10, 10.3 or 11") from None
        major, minor = parts[0], parts[1] if len(parts) > 1 else 0
        # 8.6 was the last 8.x; 9.x shipped only for large language models (no rules here)
        if (major, minor) < (8, 5) or (major, minor) > (8, 6) and major < 10 or major > 11:
            raise ModelError(f"TensorRT target {text} is not covered; supported: 8.5 / 8.6, 10.x, 11.x")
        return cls((major, minor))

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def opsets(self) -> Tuple[int, int]:
        if self.version[0] == 8:
            return 9, 17
        if self.version[0] == 10:
            return 9, 24 if self.version >= (10, 13) else 20
        return 9, 25

    @property
    def ops(self) -> frozenset:
        return _BASE_OPS | (_OPS_10 if self.version[0] >= 10 else frozenset())

    @property
    def deform_conv(self) -> bool:
        return self.version >= (10, 1)

    @property
    def quantized_types(self) -> set:
        return {_INT8} if self.version[0] == 8 else {_INT8, _INT4} | _FP8_TYPES


@dataclass(frozen=True)
class Issue:
    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.message}"


@dataclass
class CompatReport:
    target: TrtTarget
    opset: int
    op_counts: Dict[str, int]
    issues: List[Issue] = field(default_factory=list)
    source: str = "<model>"

    @property
    def ok(self) -> bool:
        return not self.issues

    def __str__(self) -> str:
        verdict = "compatible" if self.ok else f"{len(self.issues)} problem(s)"
        head = (f"{self.source}: opset {self.opset}, {sum(self.op_counts.values())} nodes, "
                f"TensorRT {self.target.name}: {verdict}")
        return "\n".join([head] + [f"  {issue}" for issue in self.issues])

    def raise_for_issues(self) -> "CompatReport":
        if self.issues:
            names = ", ".join(sorted({i.node for i in self.issues}))
            raise ModelError(f"{self.source} will not parse in TensorRT {self.target.name}: "
                             f"{self.issues[0].message} (offending nodes: {names})")
        return self


class _Graph:
    """Constant lookups over a graph: initializers and Constant-node outputs."""

    def __init__(self, graph):
        self.consts = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = node.attribute[0].t

    def array(self, name: str) -> Optional[np.ndarray]:
        tensor = self.consts.get(name)
        return None if tensor is None else require("onnx.numpy_helper").to_array(tensor)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            value = require("onnx.helper").get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_resize(node, g, target) -> List[str]:
    problems = []
    mode = _attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        problems.append(f"Resize mode {mode!r} (only nearest / linear)")
    coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if coord not in _RESIZE_COORD:
        problems.append(f"coordinate_transformation_mode {coord!r} is unsupported")
    nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest not in _RESIZE_NEAREST:
        problems.append(f"nearest_mode {nearest!r} is unsupported")
    if _attr(node, "antialias", 0):
        problems.append("antialias is unsupported")
    if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        problems.append("keep_aspect_ratio_policy other than stretch is unsupported")
    return problems


def _check_conv(node, g, target) -> List[str]:
    problems = []
    kernel = _attr(node, "kernel_shape")
    if kernel is not None and len(kernel) not in (2, 3):
        problems.append(f"{len(kernel)}D convolution (only 2D / 3D)")
    # Weights computed in the graph parse from 8.5 on (the parser's multi-input convolution);
    # "W must be an initializer" held up to 8.4, below every target here.
    return problems


def _check_pool(node, g, target) -> List[str]:
    problems = []
    kernel = _attr(node, "kernel_shape") or []
    if len(kernel) not in (2, 3):
        problems.append(f"{len(kernel)}D pooling (only 2D / 3D)")
    if len(node.output) > 1 and node.output[1]:
        problems.append("the Indices output is unsupported")
    if any(d != 1 for d in (_attr(node, "dilations") or [])):
        problems.append("dilations must be all ones")
    return problems


def _check_deform_conv(node, g, target) -> List[str]:
    if not target.deform_conv:
        return [f"DeformConv is parsed natively only from TensorRT 10.1 (target {target.name}); "
                "export without DCN, or build with the OSS ModulatedDeformConv plugin"]
    pads = _attr(node, "pads") or []
    half = len(pads) // 2
    if pads and list(pads[:half]) != list(pads[half:]):
        return [f"DeformConv pads {list(pads)} must be the same at both ends"]
    return []


def _check_qdq(node, g, target) -> List[str]:
    problems = []
    scale = g.array(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        problems.append("scale must be a constant")
    elif not np.all(scale > 0):
        problems.append("scale must be positive")
    if len(node.input) > 2 and node.input[2]:
        zero = g.array(node.input[2])
        if zero is None:
            problems.append("zero point must be a constant")
        else:
            if np.any(zero != 0):
                problems.append("zero point must be 0 (symmetric quantization), found "
                                f"{zero.ravel()[:4].tolist()}")
            dtype = g.consts[node.input[2]].data_type
            if dtype not in target.quantized_types:
                problems.append(f"quantized type {_type_name(dtype)} is unsupported on {target.name}")
    return problems


def _type_name(dtype: int) -> str:
    return require("onnx").TensorProto.DataType.Name(dtype)


_NODE_CHECKS = {"Resize": _check_resize, "Conv": _check_conv, "ConvTranspose": _check_conv,
                "MaxPool": _check_pool, "AveragePool": _check_pool, "DeformConv": _check_deform_conv,
                "QuantizeLinear": _check_qdq, "DequantizeLinear": _check_qdq}


def check_onnx(model, target="10") -> CompatReport:
    """Check a model (path or ModelProto) against a TensorRT target; never raises on problems."""
    onnx = require("onnx")
    target = target if isinstance(target, TrtTarget) else TrtTarget.parse(target)
    source = "<model>"
    if not isinstance(model, onnx.ModelProto):
        source, model = os.fspath(model), load_onnx(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    graph = model.graph
    report = CompatReport(target, opset, dict(Counter(n.op_type for n in graph.node)), source=source)
    low, high = target.opsets
    if not low <= opset <= high:
        advice = f"re-export with --opset {min(max(opset, low), high)}"
        report.issues.append(Issue("<model>", "opset", f"opset {opset} is outside TensorRT "
                                   f"{target.name}'s range {low}-{high}; {advice}"))
    g = _Graph(graph)
    for index, node in enumerate(graph.node):
        name = node.name or f"node_{index}"
        report.issues += [Issue(name, node.op_type, m) for m in _node_problems(node, g, target)]
    return report


def _node_problems(node, g: _Graph, target: TrtTarget) -> List[str]:
    if node.domain not in ("", "ai.onnx"):
        return [f"custom-domain op ({node.domain}) needs a plugin"]
    if node.op_type not in target.ops and node.op_type != "DeformConv":  # DeformConv: own message
        return [f"{node.op_type} is not supported by TensorRT {target.name}'s ONNX parser"]
    check = _NODE_CHECKS.get(node.op_type)
    return check(node, g, target) if check else []
