"""`python -m benchmarks.triton_bench --only agreement` merges new agreement rows into the
earlier run's results and keeps its round-trip and streams tables (no server needed here)."""
from __future__ import annotations

import json

import pytest

from benchmarks import common, triton_bench

ROUND_TRIP = [dict(mode="local ONNX Runtime", calls=12, median_ms=100.0, per_round_ms="90 / 100 / 110",
                   ratio_to_local=1.0),
              dict(mode="Triton, system shared memory", calls=12, median_ms=103.0,
                   per_round_ms="100 / 103 / 104", ratio_to_local=1.03)]
STREAMS = [dict(streams=1, frames=40, failed=0, wall_s=14.9, aggregate_fps=2.69, per_stream_fps=2.69,
                server_executions=37, mean_server_batch=1.08, server_batches="1x34 2x3")]
NEW = [dict(images="a video, every 25th frame", count=8, identical=8, local_boxes=32,
            triton_boxes=32, box_hmean=1.0)]


@pytest.fixture
def results(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_agreement_rows_replace_only_the_agreement_table(results):
    args = dict(threads=2, rounds=3, repeats=4, stream_side=640, stream_frames=40, argv=["--rounds", "3"])
    (results / "triton.json").write_text(json.dumps(dict(
        args=args, round_trip=ROUND_TRIP, streams=STREAMS, agreement=[], load_average_before=[9.4, 9, 8],
        machine=common.machine_info())))
    assert triton_bench.merge_agreement(triton_bench.previous_results(), NEW, ["--only", "agreement"],
                                        (3.1, 3.0, 2.9)) == 0
    payload = json.loads((results / "triton.json").read_text())
    assert (payload["round_trip"], payload["streams"], payload["agreement"]) == (ROUND_TRIP, STREAMS, NEW)
    assert payload["agreement_run"]["command"] == "python -m benchmarks.triton_bench --only agreement"
    text = (results / "triton.md").read_text()
    assert "**1.030x**" in text and "1x34 2x3" in text and "a video, every 25th frame" in text
    assert "`python -m benchmarks.triton_bench --rounds 3`" in text and "--only agreement" in text


def test_only_agreement_without_an_earlier_run_is_one_line(results):
    with pytest.raises(SystemExit, match="no earlier full run to merge into .*run without --only first"):
        triton_bench.previous_results()
