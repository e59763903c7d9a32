"""The one result type: the text instances found in one frame.

Every stage speaks it: the post-processors produce it, the sinks draw and serialise it, the
evaluator scores it. Polygons are float32 arrays of (x, y) points in *frame* pixels; quads have 4
points, polygon mode may have more, so they are kept as a tuple of arrays, parallel to `scores`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Tuple

import numpy as np


def _as_polygon(points: Any) -> np.ndarray:
    poly = np.asarray(points, dtype=np.float32)
    if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
        raise ValueError(f"a polygon must be an (N>=3, 2) array of points, got shape {poly.shape}")
    if not np.all(np.isfinite(poly)):
        raise ValueError("a polygon has non-finite coordinates")
    return poly


@dataclass(frozen=True)
class Detections:
    """Text instances of one frame.

    polygons:    tuple of (N_i, 2) float32 arrays, frame pixel coordinates (x, y)
    scores:      (n,) float32 confidence of each polygon
    frame_index: index of the frame in its source (0-based)
    timestamp:   presentation time in seconds, or None when the source has none
    source:      identifier of the source (file path, URL, camera id, image name)
    frame_size:  (height, width) of the frame the polygons refer to, or None
    data:        free per-instance extras (name -> array of length n), sliced with the rest
    """

    polygons: Tuple[np.ndarray, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    frame_index: int = 0
    timestamp: Optional[float] = None
    source: str = ""
    frame_size: Optional[Tuple[int, int]] = None
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        polys = tuple(_as_polygon(p) for p in self.polygons)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(polys) != len(scores):
            raise ValueError(f"{len(polys)} polygons but {len(scores)} scores")
        if self.frame_index < 0:
            raise ValueError(f"frame_index must be >= 0, got {self.frame_index}")
        data = {}
        for key, value in self.data.items():
            arr = np.asarray(value)
            if arr.shape[:1] != (len(polys),):
                raise ValueError(f"data[{key!r}] has length {arr.shape[:1]}, expected {len(polys)}")
            data[key] = arr
        object.__setattr__(self, "polygons", polys)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "frame_index", int(self.frame_index))
        if self.frame_size is not None:
            object.__setattr__(self, "frame_size", (int(self.frame_size[0]), int(self.frame_size[1])))
        object.__setattr__(self, "data", data)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def empty(cls, **meta) -> "Detections":
        return cls((), np.zeros(0, np.float32), **meta)

    @classmethod
    def from_quads(cls, quads: np.ndarray, scores: Sequence[float], **meta) -> "Detections":
        """From an (n, 4, 2) array of quadrilaterals."""
        quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
        return cls(tuple(quads), scores, **meta)

    def with_meta(self, **meta) -> "Detections":
        """A copy with frame_index / timestamp / source / frame_size replaced."""
        fields = dict(frame_index=self.frame_index, timestamp=self.timestamp, source=self.source,
                      frame_size=self.frame_size)
        fields.update(meta)
        return Detections(self.polygons, self.scores, data=self.data, **fields)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.polygons)

    def __iter__(self):
        return iter(zip(self.polygons, self.scores))

    def __getitem__(self, index) -> "Detections":
        """Select with an int, a slice, an integer array or a boolean mask."""
        if isinstance(index, (int, np.integer)):
            idx = np.array([index])
        elif isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise IndexError(f"boolean mask of shape {idx.shape} for {len(self)} detections")
                idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        return Detections(
            tuple(self.polygons[i] for i in idx), self.scores[idx], frame_index=self.frame_index,
            timestamp=self.timestamp, source=self.source, frame_size=self.frame_size,
            data={k: v[idx] for k, v in self.data.items()})

    @property
    def is_quads(self) -> bool:
        return all(len(p) == 4 for p in self.polygons)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """Axis-aligned bounding boxes, (n, 4) float32 as x0, y0, x1, y1."""
        if not self.polygons:
            return np.zeros((0, 4), np.float32)
        return np.stack([np.concatenate([p.min(0), p.max(0)]) for p in self.polygons])

    def quads(self) -> np.ndarray:
        """(n, 4, 2) array; only valid when every polygon is a quad."""
        if not self.is_quads:
            raise ValueError("not every polygon is a quadrilateral")
        return np.stack(self.polygons) if self.polygons else np.zeros((0, 4, 2), np.float32)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self, decimals: int = 2) -> dict:
        out = {
            "source": self.source,
            "frame_index": self.frame_index,
            "timestamp": None if self.timestamp is None else round(float(self.timestamp), 6),
            "frame_size": None if self.frame_size is None else list(self.frame_size),
            "detections": [
                {"polygon": np.round(p.astype(np.float64), decimals).tolist(),
                 "score": round(float(s), 5)}
                for p, s in zip(self.polygons, self.scores)
            ],
        }
        for key, value in self.data.items():
            for det, item in zip(out["detections"], value.tolist()):
                det[key] = item
        return out

    def to_json(self, decimals: int = 2) -> str:
        return json.dumps(self.to_dict(decimals), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "Detections":
        dets = d.get("detections", [])
        extra_keys = sorted({k for det in dets for k in det} - {"polygon", "score"})
        return cls(
            tuple(np.asarray(det["polygon"], np.float32) for det in dets),
            np.asarray([det["score"] for det in dets], np.float32),
            frame_index=d.get("frame_index", 0), timestamp=d.get("timestamp"),
            source=d.get("source", ""),
            frame_size=None if d.get("frame_size") is None else tuple(d["frame_size"]),
            data={k: np.asarray([det.get(k) for det in dets]) for k in extra_keys})

    @classmethod
    def from_json(cls, line: str) -> "Detections":
        return cls.from_dict(json.loads(line))


def concat(parts: Iterable[Detections], **meta) -> Detections:
    """Concatenate detections (of one frame, e.g. from tiles); meta taken from the first."""
    parts = list(parts)
    if not parts:
        return Detections.empty(**meta)
    first = parts[0]
    fields = dict(frame_index=first.frame_index, timestamp=first.timestamp, source=first.source,
                  frame_size=first.frame_size)
    fields.update(meta)
    keys = set(first.data)
    return Detections(
        tuple(p for d in parts for p in d.polygons),
        np.concatenate([d.scores for d in parts]),
        data={k: np.concatenate([d.data[k] for d in parts]) for k in keys
              if all(k in d.data for d in parts)},
        **fields)
