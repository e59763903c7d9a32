"""What the engine builder and `dbrt info` need to know about an ONNX file, read with `onnx`
(no weights are loaded from external data files)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from .base import TensorInfo
from .errors import ModelError
from .lazy import require

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _external_files(graph) -> list:
    """The external data files (relative locations) the initializers' weights are stored in."""
    external = 1  # TensorProto.EXTERNAL
    return sorted({entry.value for tensor in graph.initializer if tensor.data_location == external
                   for entry in tensor.external_data if entry.key == "location"})


def check_external_data(path: Path, graph) -> list:
    """The external data locations of `graph`, each checked to lie inside the model's folder:
    an absolute location or one leading out of it (`../../etc/passwd`, or a link pointing out)
    is a ModelError, before anything reads it (ONNX Runtime refuses them too)."""
    folder = path.parent.resolve()
    locations = _external_files(graph)
    for location in locations:
        target = (folder / location).resolve()
        if Path(location).is_absolute() or (target != folder and folder not in target.parents):
            raise ModelError(f"{path}: external data location {location!r} is outside the "
                             f"model's folder; refusing to read it (keep the weight files "
                             f"beside the .onnx)")
    return locations


def content_sha256(path: Path, graph) -> str:
    """sha256 of the ONNX file, and of its external weight files when it has some: a model
    retrained and saved with external data keeps a byte-identical .onnx (the graph), so the
    file's hash alone would name its old weights' engine. A missing weight file is left out
    (the parser says it is missing)."""
    files = check_external_data(path, graph)
    if not files:
        return sha256_file(path)
    digest = hashlib.sha256(sha256_file(path).encode())
    for location in files:
        weights = path.parent / location
        digest.update(f"\n{location}\n".encode())
        digest.update(sha256_file(weights).encode() if weights.is_file() else b"missing")
    return digest.hexdigest()


@dataclass(frozen=True)
class OnnxSummary:
    path: Path
    sha256: str                         # content_sha256: the file and its external weights
    opset: int
    producer: str
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    precision: str                      # "fp32", "fp16" (FP16 weights / casts) or "int8" (Q/DQ)
    metadata: Dict[str, str] = field(default_factory=dict)
    node_names: Tuple[str, ...] = ()
    node_ops: Tuple[str, ...] = ()
    fp16_storage: bool = False          # FP16 initializers read through Cast(to=FLOAT)

    def node_label(self, index: int) -> str:
        """'name (OpType)' of node `index`, for error messages."""
        if 0 <= index < len(self.node_names):
            name = self.node_names[index] or f"#{index}"
            return f"{name} ({self.node_ops[index]})"
        return f"#{index}"


def _tensor_info(onnx, value_info) -> TensorInfo:
    ttype = value_info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in ttype.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
    return TensorInfo(value_info.name, dims, dtype)


def _cast_to(node) -> Optional[int]:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _storage_casts(onnx, graph) -> list:
    """Cast(to=FLOAT) nodes reading an FP16 initializer: FP32 weights stored at half size."""
    half = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    half -= {i.name for i in graph.input}
    return [n for n in graph.node if n.op_type == "Cast" and n.input[0] in half
            and _cast_to(n) == onnx.TensorProto.FLOAT]


def expand_fp16_storage(model) -> int:
    """Each storage Cast (`_storage_casts`) -> an FP32 initializer named as its output, with
    the same values (every FP16 value is exact in FP32): the plain FP32 model converters and
    builders expect, whose Conv weights are initializers again. Returns how many."""
    onnx = require("onnx")
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    casts = _storage_casts(onnx, graph)
    for cast in casts:
        value = numpy_helper.to_array(inits[cast.input[0]]).astype("float32")
        graph.initializer.append(numpy_helper.from_array(value, cast.output[0]))
        graph.node.remove(cast)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(casts)


def _precision(onnx, graph) -> str:
    """What the graph computes in. FP16 initializers read only through Cast(to=FLOAT) are
    storage (half the file size; dbrt's shipped model), not FP16 compute."""
    ops = {n.op_type for n in graph.node}
    if ops & _QDQ_OPS:
        return "int8"
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    if any(_cast_to(node) == fp16 for node in graph.node):
        return "fp16"
    half = {t.name for t in graph.initializer if t.data_type == fp16}
    for node in graph.node:
        if half.intersection(node.input) and _cast_to(node) != fp32:
            return "fp16"
    if any(v.type.tensor_type.elem_type == fp16 for v in list(graph.input) + list(graph.output)):
        return "fp16"
    return "fp32"


def load_onnx(path: os.PathLike, load_external_data: bool = True):
    """The ModelProto of an ONNX file; ModelError when it is missing, unreadable or empty.

    Protobuf parses an empty file (and some garbage) as an empty model, so a model without an
    IR version, an opset or a graph output is refused too.
    """
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # onnx raises DecodeError and friends for non-ONNX files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path} is not a readable ONNX model: {first}") from exc
    if proto.ir_version <= 0 or not proto.opset_import or not proto.graph.output:
        raise ModelError(f"{path} is not a readable ONNX model: no graph "
                         f"({path.stat().st_size} bytes)")
    return proto


def summarize_onnx(path: os.PathLike) -> OnnxSummary:
    """Inputs, outputs, opset, precision and metadata of an ONNX file (ModelError if unreadable)."""
    onnx = require("onnx")
    path = Path(path)
    proto = load_onnx(path, load_external_data=False)
    graph = proto.graph
    weights = {t.name for t in graph.initializer}
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxSummary(
        path=path, sha256=content_sha256(path, graph), opset=opset,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        inputs=tuple(_tensor_info(onnx, v) for v in graph.input if v.name not in weights),
        outputs=tuple(_tensor_info(onnx, v) for v in graph.output),
        precision=_precision(onnx, graph),
        metadata={p.key: p.value for p in proto.metadata_props},
        node_names=tuple(n.name for n in graph.node),
        node_ops=tuple(n.op_type for n in graph.node),
        fp16_storage=bool(_storage_casts(onnx, graph)),
    )
