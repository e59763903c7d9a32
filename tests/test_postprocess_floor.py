"""benchmarks/postprocess_floor: the reference's shared calls are counted, the reference is left
as it was, and the floor is a part of the reference's time."""
from __future__ import annotations

import collections

import numpy as np
import pytest

pytest.importorskip("shapely", reason="shapely (dev extra) is the reference's geometry library")

from benchmarks import postprocess_floor as floor  # noqa: E402
from postprocess_maps import dense_map  # noqa: E402
import reference_db  # noqa: E402


def test_instrumented_reference_counts_the_shared_calls_and_is_restored():
    maps = [dense_map(np.random.default_rng(0), 96, 160, 12)]
    config = floor.bench.CONFIG
    ref = floor.bench.reference_impl(config)
    plain = ref(maps[0])
    spent = collections.defaultdict(lambda: [0.0, 0])
    with floor.instrumented(spent):
        timed = ref(maps[0])
    assert reference_db.cv2 is floor.cv2 and reference_db.pyclipper.__name__ == "pyclipper"
    assert len(timed[0]) == len(plain[0]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(timed[0], plain[0]))
    assert spent["findContours"][1] == 1 and spent["pyclipper_offset"][1] >= len(plain[0])
    assert spent["minAreaRect"][1] >= 2 * len(plain[0]) and spent["mean"][1] >= len(plain[0])

    row = floor.floor_row(config, {"tiny": maps}, repeats=1, bias=floor.timer_cost(100))
    assert 0 < row["shared_calls_ms"] <= row["floor_ms"]
    assert row["setting"] == "quad/fast" and row["ceiling"] > 0 and row["speedup_cpu"] > 0
    assert row["approxPolyDP_ms"] == 0 and row["findContours_ms"] > 0  # every call has a column


def test_polygon_mode_books_the_calls_ours_avoids_apart():
    maps = [dense_map(np.random.default_rng(1), 120, 200, 10)]
    config = floor.bench.CONFIG.replace(box_type="poly")
    ref = floor.bench.reference_impl(config)
    plain = ref(maps[0])
    spent = collections.defaultdict(lambda: [0.0, 0])
    with floor.instrumented(spent, config.min_size + 2):
        ref(maps[0])
    assert spent["arcLength"][1] >= len(plain[0]) > 0
    assert spent["minAreaRect_avoided"][1] + spent["minAreaRect"][1] >= len(plain[0])
    assert spent["minAreaRect_avoided"][1] > 0  # the bars here are wide enough

    row = floor.floor_row(config, {"bars": maps}, repeats=1, bias=floor.timer_cost(100))
    # booked apart (the call counts above); their times are bias-corrected and may round to 0
    assert row["avoided_ms"] >= 0 and row["arcLength_ms"] >= 0
    assert abs(row["floor_ms"] - row["shared_calls_ms"] - row["map_read_ms"]) < 0.02
