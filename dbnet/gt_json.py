"""The gt.json ground-truth format, read once for evaluation (pipeline.datasets) and training
(export.train.data): a JSON list of {"image", "polygons", "ignore"?, "texts"?} records, one per
image, polygons as lists of (x, y) points in the image's pixels, `ignore` the "do not care" flags
(default: none ignored).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from engine.errors import DbrtError


class GroundTruthError(DbrtError):
    """A gt.json that cannot be read; the message does not name the file (callers do)."""


# no photo is a million pixels across: a coordinate beyond that is a broken label, not a word
MAX_COORDINATE = 1e6


def check_coordinates(values) -> np.ndarray:
    """The coordinates as float64, or a GroundTruthError for the first one that is not a finite
    number or lies beyond MAX_COORDINATE (training drew garbage targets from them, evaluation
    dropped or scored them as words nobody can find)."""
    values = np.asarray(values, np.float64)
    flat = values.ravel()
    bad = ~np.isfinite(flat) | (np.abs(flat) > MAX_COORDINATE)
    if bad.any():
        first = flat[bad][0]
        why = "not a finite number" if not np.isfinite(first) else \
            f"beyond {MAX_COORDINATE:,.0f} pixels"
        raise GroundTruthError(f"coordinate {first:g} is {why}")
    return values


@dataclass(frozen=True)
class GtRecord:
    image: str
    polygons: Tuple[np.ndarray, ...]  # (N, 2) float32 each
    ignore: Tuple[bool, ...]
    texts: Tuple[str, ...]            # () when the record has none


def read_gt_records(path) -> List[GtRecord]:
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise GroundTruthError(f"cannot read it as JSON: {exc}") from exc
    if not isinstance(records, list):
        raise GroundTruthError("expected a JSON list of {image, polygons, ignore} records")
    return [_record(i, rec) for i, rec in enumerate(records)]


def _record(index: int, rec) -> GtRecord:
    try:
        name = rec["image"]
        polygons = tuple(np.asarray(p, np.float64).reshape(-1, 2) for p in rec["polygons"])
        ignore = tuple(bool(i) for i in rec.get("ignore", [False] * len(polygons)))
        texts = tuple(str(t) for t in rec.get("texts") or ())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GroundTruthError(f"record {index} is not {{image, polygons, ignore}}: {exc!r}") from exc
    for k, polygon in enumerate(polygons):
        try:
            check_coordinates(polygon)
        except GroundTruthError as exc:
            raise GroundTruthError(f"record {index} ({name}), polygon {k}: {exc}") from None
    polygons = tuple(p.astype(np.float32) for p in polygons)
    if len(ignore) != len(polygons):
        raise GroundTruthError(f"record {index} ({name}): {len(polygons)} polygons but "
                               f"{len(ignore)} ignore flags")
    return GtRecord(str(name), polygons, ignore, texts)
