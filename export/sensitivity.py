"""Which layers INT8 hurts: per-layer quantization sensitivity and the compute each one costs.

    ranked = quantize.int8_layer_ranking("m.onnx", inputs)         # most sensitive first
    keep = [layer.name for layer in ranked[:20]]                    # leave these in FP32 / FP16
    quantize.to_int8("m.onnx", "m_int8.onnx", inputs, keep_fp32_nodes=keep)  # = keep_fp32_sensitive=20

A layer's sensitivity is the mean squared difference between the FP32 probability map and the
map of a model in which only that layer is quantized (same calibrated ranges as the full INT8
model), on the calibration inputs. It needs no labels and never looks at evaluation images.
Each layer also reports its multiply-accumulates at the inputs' size, so the cost of keeping it
in higher precision is visible (`int8_mac_share`): DBNet's sensitive layers are the stride-4
ones near the image, which also carry much of the compute.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from engine.lazy import require
from engine.onnxruntime.int8_cpu import exact_int8_config


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    op_type: str
    mse: float      # FP32 vs "only this layer INT8", probability map
    macs: int       # multiply-accumulates for one probe input (0 for Add)

    def to_dict(self) -> dict:
        return dict(name=self.name, op=self.op_type, mse=self.mse, macs=self.macs)


CONVS = ("Conv", "ConvTranspose", "DeformConv")


def conv_macs(proto, shape: Sequence[int]) -> Dict[str, int]:
    """Multiply-accumulates of every Conv / ConvTranspose / DeformConv for an input of `shape`
    (N, C, H, W) (a DeformConv's as a Conv's of its shape: its sampling comes on top)."""
    onnx = require("onnx")
    static = onnx.ModelProto()
    static.CopyFrom(proto)
    dims = static.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape):
        dim.Clear()
        dim.dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(static)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    for node in proto.graph.node:  # fp16 weight storage (the shipped model): Cast(initializer)
        if node.op_type == "Cast" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    macs = {}
    for node in proto.graph.node:
        if node.op_type not in CONVS or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        if node.op_type != "ConvTranspose":  # each output element: Cin/groups * kh * kw MACs
            out = shapes.get(node.output[0])
            macs[node.name] = int(np.prod(out)) * int(np.prod(w[1:])) if out and all(out) else 0
        else:                        # each input element scatters into Cout/groups * kh * kw
            inp = shapes.get(node.input[0])
            macs[node.name] = int(np.prod(inp)) * int(np.prod(w[1:])) if inp and all(inp) else 0
    return macs


def int8_sensitivity(fp32_path: str, inputs: Sequence[np.ndarray], cache: str, options: dict,
                     tmp: str, probe: int = 8) -> List[LayerSensitivity]:
    """Rank the quantizable layers of `fp32_path` by sensitivity, most sensitive first.

    `cache` holds the calibrated ranges, `options` the quantize_static arguments of the full INT8
    model (its nodes_to_exclude are ignored here); `probe` inputs spread over `inputs` are used."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    q = require("onnxruntime.quantization")

    proto = onnx.load(fp32_path)
    layers = [n for n in proto.graph.node if n.op_type in options["op_types_to_quantize"]]
    step = max(1, len(inputs) // probe)
    chosen = list(inputs)[::step][:probe]
    name = proto.graph.input[0].name
    exact = ort.SessionOptions()  # the INT8 arithmetic, also where ORT's integer kernels saturate
    for key, value in exact_int8_config().items():
        exact.add_session_config_entry(key, value)
    session = lambda path, opts=None: ort.InferenceSession(  # noqa: E731
        path, sess_options=opts, providers=["CPUExecutionProvider"])
    reference = session(fp32_path)
    ref_maps = [reference.run(None, {name: x})[0] for x in chosen]
    macs = conv_macs(proto, chosen[0].shape)
    one = os.path.join(tmp, "one_layer_int8.onnx")
    ranked = []
    for layer in layers:
        others = [n.name for n in layers if n.name != layer.name]
        q.quantize_static(fp32_path, one, None, calibration_cache_path=cache,
                          **dict(options, nodes_to_exclude=others))
        candidate = session(one, exact)
        mse = float(np.mean([np.mean((candidate.run(None, {name: x})[0] - r) ** 2)
                             for x, r in zip(chosen, ref_maps)]))
        ranked.append(LayerSensitivity(layer.name, layer.op_type, mse, macs.get(layer.name, 0)))
    return sorted(ranked, key=lambda s: -s.mse)


def int8_mac_share(proto, shape: Sequence[int], kept: Sequence[str]) -> float:
    """Fraction of the convolution MACs that stay INT8 when the `kept` nodes are left
    unquantized; deformable convolutions are never quantized (INT8_OPS), so they count as kept."""
    macs = conv_macs(proto, shape)
    total = sum(macs.values())
    kept = set(kept) | {n.name for n in proto.graph.node if n.op_type == "DeformConv"}
    return sum(v for k, v in macs.items() if k not in kept) / total if total else 0.0
