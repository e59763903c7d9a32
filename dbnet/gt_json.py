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
        polygons = tuple(np.asarray(p, np.float32).reshape(-1, 2) for p in rec["polygons"])
        ignore = tuple(bool(i) for i in rec.get("ignore", [False] * len(polygons)))
        texts = tuple(str(t) for t in rec.get("texts") or ())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GroundTruthError(f"record {index} is not {{image, polygons, ignore}}: {exc!r}") from exc
    if len(ignore) != len(polygons):
        raise GroundTruthError(f"record {index} ({name}): {len(polygons)} polygons but "
                               f"{len(ignore)} ignore flags")
    return GtRecord(str(name), polygons, ignore, texts)
