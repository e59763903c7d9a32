"""The result types: `Detections` (the text instances of one frame) and `FrameResult` (a frame and
its detections, what the pipeline's stages pass on and the sinks receive).

`Detections` holds instances only, like supervision's: polygons are float32 arrays of (x, y)
points in *frame* pixels (quads have 4 points, polygon mode may have more, so they are a tuple of
arrays parallel to `scores`), and `data` holds further per-instance columns (texts, track ids).
Frame facts (index, timestamp, source, size) live on the `Frame` only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .sources.base import Frame, shown_source

SCORE_DECIMALS = 5  # scores and confidences in every output
TIME_DECIMALS = 6  # timestamps in seconds, to the microsecond


def _as_polygons(polygons: Any) -> Tuple[np.ndarray, ...]:
    """Each polygon as an (N>=3, 2) float32 array; the finite check runs once over all of them
    (a frame can hold hundreds of polygons)."""
    polys = tuple(np.asarray(p, dtype=np.float32) for p in polygons)
    for poly in polys:
        if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
            raise ValueError(f"a polygon must be an (N>=3, 2) array of points, got shape {poly.shape}")
    if polys and not np.isfinite(np.concatenate(polys)).all():
        raise ValueError("a polygon has non-finite coordinates")
    return polys


@dataclass(frozen=True)
class Detections:
    """Text instances of one frame.

    polygons: tuple of (N_i, 2) float32 arrays, frame pixel coordinates (x, y)
    scores:   (n,) float32 confidence of each polygon
    data:     free per-instance columns (name -> array of length n), sliced with the rest
    """

    polygons: Tuple[np.ndarray, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        polys = _as_polygons(self.polygons)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(polys) != len(scores):
            raise ValueError(f"{len(polys)} polygons but {len(scores)} scores")
        if self.data is not None and not isinstance(self.data, Mapping):
            raise TypeError(f"data must be a dict of per-instance columns (name -> array), got "
                            f"{type(self.data).__name__}")
        data = _columns(self.data or {}, len(polys))  # None: none, as from_quads takes it
        object.__setattr__(self, "polygons", polys)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "data", data)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def empty(cls) -> "Detections":
        return cls((), np.zeros(0, np.float32))

    @classmethod
    def from_quads(cls, quads: np.ndarray, scores: Sequence[float], data=None) -> "Detections":
        """From an (n, 4, 2) array of quadrilaterals."""
        quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
        return cls(tuple(quads), scores, data or {})

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.polygons)

    def __eq__(self, other) -> bool:
        """Equal points, scores and data columns (arrays compared by value)."""
        if not isinstance(other, Detections):
            return NotImplemented
        return (len(self) == len(other) and self.data.keys() == other.data.keys()
                and all(np.array_equal(a, b) for a, b in zip(self.polygons, other.polygons))
                and _same(self.scores, other.scores)
                and all(_same(v, other.data[k]) for k, v in self.data.items()))

    __hash__ = None  # holds arrays: compared by value, so not hashable

    def __iter__(self):
        return iter(zip(self.polygons, self.scores))

    def __getitem__(self, index) -> "Detections":
        """Select with an int, a slice, an integer array or a boolean mask (a new Detections
        with its own copies of the selected polygons, scores and columns)."""
        if isinstance(index, (bool, np.bool_)):  # an int to Python: d[True] would be d[1]
            raise IndexError("detections are selected with a boolean mask of one value per "
                             f"detection, not a single {type(index).__name__}")
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
            elif idx.size and idx.dtype.kind not in "iu":  # d[d.scores] meant d[d.scores > t]
                raise IndexError(f"detections are selected with an int, a slice, integers or a "
                                 f"boolean mask, not {idx.dtype} values; columns are in .data")
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and not (-len(self) <= idx.min() and idx.max() < len(self)):
            bad = idx[(idx < -len(self)) | (idx >= len(self))][0]
            raise IndexError(f"index {bad} is out of range for {len(self)} detections")
        # copies, as numpy's selections are: changing a selection's points leaves these be
        return Detections(tuple(self.polygons[i].copy() for i in idx), self.scores[idx],
                          {k: v[idx] for k, v in _columns(self.data, len(self)).items()})

    @property
    def is_quads(self) -> bool:
        return all(len(p) == 4 for p in self.polygons)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """Axis-aligned bounding boxes, (n, 4) float32 as x0, y0, x1, y1."""
        if not self.polygons:
            return np.zeros((0, 4), np.float32)
        return np.stack([np.concatenate([p.min(0), p.max(0)]) for p in self.polygons])

    @property
    def texts(self) -> List[str]:
        """What the recognizer read in each polygon (`data["text"]`); empty when reading is off."""
        return [str(t) for t in self.data["text"]] if "text" in self.data else []

    @property
    def text_scores(self) -> np.ndarray:
        """Confidence of each text (`data["text_score"]`); empty when reading is off."""
        if "text_score" not in self.data:
            return np.zeros(0, np.float32)
        return self.data["text_score"].astype(np.float32)

    def quads(self) -> np.ndarray:
        """(n, 4, 2) array; only valid when every polygon is a quad."""
        if not self.is_quads:
            raise ValueError("not every polygon is a quadrilateral")
        return np.stack(self.polygons) if self.polygons else np.zeros((0, 4, 2), np.float32)

    # -- serialisation ----------------------------------------------------------------------
    def to_records(self, decimals: int = 2) -> List[dict]:
        """One JSON-ready dict per instance: polygon, score and the `data` columns."""
        if not self.polygons:
            return []
        # one rounding and one tolist for all points (per polygon they cost most of an MQTT
        # event or a JSON line), then each polygon's slice of the points
        points = polygon_record(np.concatenate(self.polygons), decimals)
        ends = np.cumsum([len(p) for p in self.polygons]).tolist()
        out = [{"polygon": points[end - len(p):end], "score": score_record(s)}
               for p, end, s in zip(self.polygons, ends, self.scores)]
        for key, value in _columns(self.data, len(self)).items():  # a column added since too
            if value.dtype.kind == "f":  # confidences: no float32 noise in the JSON
                value = np.round(value.astype(np.float64), SCORE_DECIMALS)
            items = value.tolist()
            if value.dtype.kind == "f" and not np.isfinite(value).all():  # JSON has no NaN
                items = [_json_safe(v) for v in items]
            for det, item in zip(out, items):
                det[key] = item
        return out

    def records_json(self, decimals: int = 2) -> str:
        """`to_records` as one compact JSON array (non-ASCII text escaped), kept on the instance
        so that the sinks of one frame (JSON lines, MQTT) encode it once; a column added to
        `data` since, or values changed in place, are seen (the arrays' bytes are its key)."""
        key = (decimals, self._fingerprint())
        cached = self.__dict__.get("_records_json")
        if cached is not None and cached[0] == key and key[1] is not None:
            return cached[1]
        text = json.dumps(self.to_records(decimals), separators=(",", ":"))
        object.__setattr__(self, "_records_json", (key, text))  # frozen: not a field
        return text

    def _fingerprint(self) -> Optional[tuple]:
        """What the JSON depends on, cheaply: a hash of every array's bytes (hundreds of
        numbers a frame, hashed in microseconds; the JSON takes far longer)."""
        columns = []
        for key, value in self.data.items():
            arr = np.asarray(value)
            if arr.dtype.kind != "O":
                columns.append((key, id(value), hash(arr.tobytes())))
                continue
            items = tuple(arr.ravel().tolist())  # texts and None (a track not read yet) only:
            if not all(item is None or isinstance(item, str) for item in items):
                return None  # other Python objects (lists) can change unseen: no caching
            columns.append((key, id(value), hash(items)))
        points = b"".join(p.tobytes() for p in self.polygons) + self.scores.tobytes()
        return hash(points), tuple(columns)

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> "Detections":
        """The inverse of `to_records`: a column of numbers and nulls (a NaN written as null)
        comes back as floats with NaN; see `_column_from_json` for a column of nulls only."""
        extra_keys = sorted({k for det in records for k in det} - {"polygon", "score"})
        return cls(tuple(np.asarray(det["polygon"], np.float32) for det in records),
                   np.asarray([det["score"] for det in records], np.float32),
                   {k: _column_from_json(k, [det.get(k) for det in records]) for k in extra_keys})

    @classmethod
    def from_json(cls, line: str) -> "Detections":
        """The detections of one line written by `FrameResult.to_json` (a JSONL sink)."""
        return cls.from_records(json.loads(line).get("detections", []))


@dataclass(frozen=True)
class FrameResult:
    """A frame and what the stages found in it; unpacks as `frame, detections`."""

    frame: Frame
    detections: Detections

    def __iter__(self):
        return iter((self.frame, self.detections))

    def to_dict(self, decimals: int = 2) -> dict:
        return {**frame_fields(self.frame), "detections": self.detections.to_records(decimals)}

    def to_json(self, decimals: int = 2) -> str:
        """`to_dict` as compact JSON, the detections from `Detections.records_json`."""
        return with_detections_json(frame_fields(self.frame),
                                    self.detections.records_json(decimals))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal arrays, NaN equal to NaN where the values are numbers (a NaN confidence, as an
    FP16 recognizer may give, is kept as it came)."""
    numeric = all(np.issubdtype(x.dtype, np.number) for x in (a, b))
    return np.array_equal(a, b, equal_nan=numeric)


def frame_fields(frame: Frame) -> dict:
    """The frame's facts in a result line: stream (the source's position in the run: two
    streams may read the same source), source, frame_index, timestamp, frame_size."""
    return {"stream": int(frame.stream), "source": shown_source(frame.source),
            "frame_index": int(frame.index), "timestamp": timestamp_record(frame.timestamp),
            "frame_size": [int(v) for v in frame.size]}


def timestamp_record(timestamp: Optional[float]) -> Optional[float]:
    """A frame's timestamp as every output writes it (result lines, text events): seconds to
    the microsecond, None (null) when the frame has none or it is not finite."""
    return None if timestamp is None else _finite(round(float(timestamp), TIME_DECIMALS))


def score_record(score: float) -> Optional[float]:
    """A score or confidence as every output writes it: 5 decimals, None for NaN."""
    return _finite(round(float(score), SCORE_DECIMALS))


def polygon_record(points: np.ndarray, decimals: int = 2) -> list:
    """(N, 2) points as every output writes them: [[x, y], ...] in frame pixels, rounded to
    `decimals` (the float32 values widened first, so 0.1 stays 0.1 and not 0.10000000149)."""
    return np.round(np.asarray(points).astype(np.float64), decimals).tolist()


def _columns(data: dict, n: int) -> dict:
    """Every column as an array of length n (one added to `data` after construction too, e.g.
    a plain list), else a ValueError naming it: a short column would misalign with the
    polygons."""
    columns = {}
    for key, value in data.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.shape[:1] != (n,):
            raise ValueError(f"data[{key!r}] has length {arr.shape[:1]}, expected {n}")
        columns[key] = arr
    return columns


# the number columns dbrt writes that may be null throughout a line (no reading voted yet)
NUMBER_COLUMNS = frozenset({"text_score", "track_text_score"})


def _column_from_json(key: str, values: list) -> np.ndarray:
    """A column of numbers and nulls comes back as floats with NaN; one of nulls only says
    nothing of its type: NaN for dbrt's number columns, else None (a frame whose tracks had
    no voted text yet gave track_text NaN, a float where a string or None was meant)."""
    numbers = [v for v in values if v is not None]
    if not numbers and key not in NUMBER_COLUMNS:
        return np.asarray(values, dtype=object)
    if len(numbers) < len(values) and all(isinstance(v, (int, float)) for v in numbers):
        return np.asarray([np.nan if v is None else v for v in values], np.float64)
    return np.asarray(values)


def _json_safe(item):
    """A row of a float column, NaN / infinity as None at any depth (multi-value columns)."""
    return [_json_safe(v) for v in item] if isinstance(item, list) else _finite(item)


def _finite(value: float):
    """The value, or None (JSON null) for NaN / infinity, which JSON has no words for (a
    recognizer that overflowed in FP16 gives NaN confidences)."""
    return value if math.isfinite(value) else None


def with_detections_json(head: dict, detections_json: str, ensure_ascii: bool = True) -> str:
    """The compact JSON of `head` plus a last key "detections" whose JSON is `detections_json`:
    the same text as json.dumps of the whole dict, without encoding the detections again."""
    text = json.dumps(head, ensure_ascii=ensure_ascii, separators=(",", ":"))
    return f'{text[:-1]},"detections":{detections_json}}}'  # head is never empty
