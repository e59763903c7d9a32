"""What `dbrt info` shows: inputs, outputs, profiles, precision and metadata of an ONNX model
or a TensorRT engine, as a plain dict (JSON-ready) and as text.

ONNX files are read with `onnx` on any machine. Engines are described from their record
(works without a GPU) and, where TensorRT and a GPU are usable, from the deserialized engine.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

from .errors import ModelError
from .loader import ENGINE_SUFFIXES, MODEL_FILE_KINDS, tensorrt_usable
from .tensorrt.dla import dla_summary
from .tensorrt.record import EngineRecord


def _tensors(infos) -> List[dict]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in infos]


def describe_onnx(path: os.PathLike) -> dict:
    from .onnx_info import summarize_onnx

    s = summarize_onnx(path)
    return {"kind": "onnx", "file": str(s.path), "sha256": s.sha256, "opset": s.opset,
            "producer": s.producer, "precision": s.precision, "nodes": len(s.node_names),
            "inputs": _tensors(s.inputs), "outputs": _tensors(s.outputs),
            "metadata": dict(s.metadata)}


def describe_engine(path: os.PathLike, host_code: bool = False) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"engine file not found: {path}")
    record = EngineRecord.load(path)
    info = {"kind": "engine", "file": str(path), "bytes": path.stat().st_size,
            "record": json.loads(record.to_json()) if record else None}
    if not tensorrt_usable():
        if record is None:  # nothing here can tell an engine from any other bytes
            raise ModelError(f"cannot describe {path}: it has no dbrt build record "
                             f"({path.name}.json) and TensorRT 8.6+ or a GPU is not usable here")
        info["note"] = "TensorRT 8.6+ or a GPU is not usable here: showing the build record only"
        return info
    from .tensorrt.runner import TensorRTRunner

    runner = TensorRTRunner(path, record=record, host_code=host_code)
    try:
        with runner:
            info["inputs"] = _tensors(runner.inputs)
            info["outputs"] = _tensors(runner.outputs)
            info["profiles"] = {n: p.to_dict() for n, p in runner.profiles.items()}
    except ModelError as exc:
        if record is None:  # not a TensorRT engine, or one this TensorRT cannot read
            raise
        info["note"] = str(exc)  # the record still says what the engine is and what it needs
    return info


def describe(path: os.PathLike, host_code: bool = False) -> dict:
    """What the model or engine at `path` takes and gives; `host_code`: see TensorRTRunner."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return describe_onnx(path)
    if suffix in ENGINE_SUFFIXES:
        return describe_engine(path, host_code)
    if str(path).startswith("triton://"):
        raise ModelError(f"cannot describe {path}: dbrt info reads .onnx and .engine files; a "
                         "served model's inputs and settings are in its config.pbtxt")
    raise ModelError(f"cannot describe {Path(path).name}: expected {MODEL_FILE_KINDS}")


def _shape(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _dims(shape) -> str:
    """(batch, 3, height, width): symbolic names kept, unknown sizes as '?'."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def format_description(info: dict) -> str:
    """Human-readable text of `describe()`'s dict."""
    lines = [f"{info['kind']}: {info['file']}"]
    record = info.get("record")
    if info["kind"] == "onnx":
        lines.append(f"  opset {info['opset']}, {info['nodes']} nodes, precision {info['precision']}, "
                     f"producer {info['producer'] or '?'}")
        lines.append(f"  sha256 {info['sha256']}")
    elif record:
        lines.append(f"  precision {record['precision']}"
                     f"{' (strongly typed)' if record['strongly_typed'] else ''}, built with "
                     f"TensorRT {record['tensorrt_version']} for {record['gpu_name']} "
                     f"(sm_{record['compute_capability'].replace('.', '')}) {record['created']}")
        lines.append(f"  from {record['onnx_name']} sha256 {record['onnx_sha256']}")
        profile = record["profile"]
        lines.append(f"  profile {record['input_name']}: min {_shape(profile['min'])}, "
                     f"opt {_shape(profile['opt'])}, max {_shape(profile['max'])}")
        dla = (record.get("builder") or {}).get("dla")
        if dla:
            lines.append(f"  {dla_summary(dla)}, the rest on the GPU")
    else:
        lines.append("  no dbrt record (.json sidecar): engine built outside dbrt")
    for key in ("inputs", "outputs"):
        for t in info.get(key, []):
            lines.append(f"  {key[:-1]:6} {t['name']}: {_dims(t['shape'])} {t['dtype']}")
    for name, p in (info.get("profiles") or {}).items():
        lines.append(f"  engine profile {name}: min {_shape(p['min'])}, opt {_shape(p['opt'])}, "
                     f"max {_shape(p['max'])}")
    for line in info.get("extra_lines", ()):  # added by the caller (dbrt info: the model spec)
        lines.append(f"  {line}")
    if info.get("note"):
        lines.append(f"  note: {info['note']}")
    return "\n".join(lines)
