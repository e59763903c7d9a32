"""Small ONNX graph edits used by the exporter and the quantizer (onnx + numpy only, no torch).

- `fold_batchnorm(model)`: BatchNormalization after Conv / ConvTranspose / DeformConv is folded
  into the producer's weights (the TorchScript exporter only folds Conv + BN itself).
- `set_metadata` / `get_metadata`: `metadata_props` entries (our "dbrt" ModelSpec JSON).
- `consumers`, `initializers`: lookups shared by the quantizer and the TensorRT check.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List

import numpy as np

# op type -> (weight input index, bias input index, output-channel axis of the weight)
_FOLDABLE = {"Conv": (1, 2, 0), "ConvTranspose": (1, 2, 1), "DeformConv": (1, 3, 0)}


def initializers(graph) -> Dict[str, object]:
    return {t.name: t for t in graph.initializer}


def consumers(graph) -> Dict[str, List[object]]:
    """tensor name -> nodes reading it (graph outputs count as a pseudo-consumer None)."""
    users = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                users[name].append(node)
    for out in graph.output:
        users[out.name].append(None)
    return users


def _array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _replace(graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    for i, tensor in enumerate(graph.initializer):
        if tensor.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))


def _bn_scale_shift(bn, inits) -> tuple:
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    gamma, beta, mean, var = (_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _fold_one(graph, conv, bn, inits) -> None:
    w_idx, b_idx, axis = _FOLDABLE[conv.op_type]
    scale, shift = _bn_scale_shift(bn, inits)
    weight = _array(inits[conv.input[w_idx]]).astype(np.float64)
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if axis == 1 and group != 1:  # ConvTranspose weight is (Cin, Cout/group, ...): keep simple
        raise ValueError("grouped ConvTranspose")
    shape = [1] * weight.ndim
    shape[axis] = -1
    weight = weight * scale.reshape(shape)
    has_bias = len(conv.input) > b_idx and conv.input[b_idx]
    bias = _array(inits[conv.input[b_idx]]).astype(np.float64) if has_bias else 0.0
    _replace(graph, conv.input[w_idx], weight)
    bias_name = conv.input[b_idx] if has_bias else f"{conv.name or conv.output[0]}.folded_bias"
    _replace(graph, bias_name, bias * scale + shift)
    while len(conv.input) <= b_idx:
        conv.input.append("")
    conv.input[b_idx] = bias_name
    conv.output[0] = bn.output[0]  # the conv now produces what the BN produced
    graph.node.remove(bn)


def _foldable(conv, bn, users, inits) -> bool:
    if conv is None or conv.op_type not in _FOLDABLE or len(users[conv.output[0]]) != 1:
        return False
    if len(bn.output) != 1 or not all(n in inits for n in bn.input[1:5]):
        return False
    w_idx, b_idx, _ = _FOLDABLE[conv.op_type]
    params = [conv.input[w_idx]]
    if len(conv.input) > b_idx and conv.input[b_idx]:
        params.append(conv.input[b_idx])
    # Weights must be constants used by this node only (we rewrite them in place).
    return all(p in inits and len(users[p]) == 1 for p in params)


def fold_batchnorm(model) -> int:
    """Fold every foldable BatchNormalization into its producer; returns how many were folded."""
    graph = model.graph
    folded = 0
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        inits, users = initializers(graph), consumers(graph)
        producer = next((n for n in graph.node if bn.input[0] in n.output), None)
        if not _foldable(producer, bn, users, inits):
            continue
        try:
            _fold_one(graph, producer, bn, inits)
        except ValueError:
            continue
        folded += 1
    remove_unused_initializers(model)
    return folded


def bypass_constant_identities(model) -> int:
    """Drop Identity nodes that only alias an initializer (the exporter's dedup of equal weights)."""
    graph = model.graph
    inits = initializers(graph)
    outputs = {o.name for o in graph.output}
    aliases = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits
               and n.output[0] not in outputs]
    for node in aliases:
        for user in graph.node:
            for i, name in enumerate(user.input):
                if name == node.output[0]:
                    user.input[i] = node.input[0]
        graph.node.remove(node)
    return len(aliases)


def remove_unused_initializers(model) -> int:
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    stale = [t for t in graph.initializer if t.name not in used]
    for tensor in stale:
        graph.initializer.remove(tensor)
    return len(stale)


def set_metadata(model, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def get_metadata(model) -> Dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
