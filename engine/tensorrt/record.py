"""The engine record: a JSON sidecar (`model.engine.json`) saying what an engine was built from,
how, and for which TensorRT and GPU.

A TensorRT plan only runs on the TensorRT version and GPU architecture that built it; checking
the record first turns TensorRT's cryptic deserialisation failure into an actionable message.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Optional

from ..cuda import DeviceInfo
from ..errors import ModelError
from ..files import write_whole
from ..shapes import ShapeProfile

FORMAT = 1


# across major versions TensorRT runs version-compatible engines of these majors only (the
# developer guide's "Version Compatibility": 8 -> 9 and 10 (10.x guide), 10 -> 11 (11.x guide))
_CROSS_MAJOR = {(8, 9), (8, 10), (9, 10), (10, 11)}


def version_compatible_runs(built: str, here: str) -> bool:
    """Whether a version-compatible engine built by TensorRT `built` runs on `here`."""
    b, h = _release(built), _release(here)
    if not b or not h or h < b:
        return False
    return b[0] == h[0] or (b[0], h[0]) in _CROSS_MAJOR


def _release(version: str) -> tuple:
    """'10.3.0.26' -> (10, 3, 0, 26), for ordering versions (never for feature checks)."""
    return tuple(int(p) for p in re.findall(r"\d+", version))


def sidecar_path(engine_path: os.PathLike) -> Path:
    return Path(f"{os.fspath(engine_path)}.json")


@dataclass(frozen=True)
class EngineRecord:
    onnx_sha256: str
    onnx_name: str
    precision: str                      # fp32 / fp16 / int8
    strongly_typed: bool
    input_name: str
    profile: ShapeProfile
    tensorrt_version: str
    gpu_name: str
    compute_capability: str             # "8.9"
    metadata: Dict[str, str] = field(default_factory=dict)   # the ONNX metadata_props (dbrt spec)
    builder: Dict[str, object] = field(default_factory=dict)  # workspace, opt level, cache...
    created: str = ""
    format: int = FORMAT

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(self.gpu_name, self.compute_capability)

    # -- persistence ----------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        data["profile"] = self.profile.to_dict()
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EngineRecord":
        try:
            data = json.loads(text)
            data["profile"] = ShapeProfile.from_dict(data["profile"])
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"engine record is damaged ({exc}); rebuild the engine") from exc

    def save(self, engine_path: os.PathLike) -> Path:
        path = sidecar_path(engine_path)
        record = self if self.created else self._stamped()
        write_whole(path, (record.to_json() + "\n").encode())
        return path

    def _stamped(self) -> "EngineRecord":
        return replace(self, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @classmethod
    def load(cls, engine_path: os.PathLike) -> Optional["EngineRecord"]:
        """The record next to `engine_path`, or None for engines built outside dbrt."""
        path = sidecar_path(engine_path)
        if not path.is_file():
            return None
        try:
            return cls.from_json(path.read_text())
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc

    # -- compatibility --------------------------------------------------------------------
    def mismatches(self, tensorrt_version: str, device: DeviceInfo) -> list:
        """Human-readable reasons this engine cannot run here (empty when it can).

        Version-compatible engines run on a later TensorRT of the same major version, and
        across majors 8 -> 9 / 10, 9 -> 10 and 10 -> 11; hardware-compatible ones on any
        Ampere or newer discrete GPU, not a Jetson's or DRIVE's (TensorRT's own rules, support
        matrix: no hardware compatibility on JetPack or DRIVE OS).
        """
        reasons = []
        if self.tensorrt_version != tensorrt_version and not (
                self.builder.get("version_compatible")
                and version_compatible_runs(self.tensorrt_version, tensorrt_version)):
            reasons.append(f"it was built with TensorRT {self.tensorrt_version}, "
                           f"this machine has TensorRT {tensorrt_version}")
        if self.compute_capability != device.compute_capability and not (
                self.builder.get("hardware_compatible") and not device.integrated
                and _release(device.compute_capability) >= (8,)):
            reasons.append(f"it was built for {self.device}, this GPU is {device}")
        return reasons

    def check_runtime(self, engine_name: str, tensorrt_version: str, device: DeviceInfo) -> None:
        reasons = self.mismatches(tensorrt_version, device)
        if reasons:
            raise ModelError(f"engine {engine_name} cannot run here: {'; '.join(reasons)}. "
                             f"Rebuild it from {self.onnx_name} with `dbrt build {self.onnx_name}`, "
                             "or run the .onnx directly (dbrt builds and caches an engine)")
