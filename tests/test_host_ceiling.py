"""benchmarks/host_ceiling.py: the pipeline with a model that costs nothing (the shipped
model's maps replayed) processes every frame in every mode, and the replayed maps give the
detections the model itself gives."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from media import write_video

pytest.importorskip("av")


def _text_frame(height: int = 96, width: int = 160) -> np.ndarray:
    image = np.full((height, width, 3), 30, np.uint8)
    cv2.putText(image, "OPEN", (12, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (240, 240, 240), 3)
    return image


def test_the_replayed_maps_give_the_models_own_detections():
    from benchmarks.host_ceiling import ReplayRunner
    from pipeline.detector import Detector

    frames = [_text_frame(), np.roll(_text_frame(), 20, axis=1)]
    with Detector(device="cpu") as model:
        wanted = [model.detect(frame) for frame in frames]
        maps = [model.runner.infer(model.prepare([f])[0])[model.output_name] for f in frames]
        replayed = Detector(ReplayRunner(model.runner, maps, every=1), model.spec)
    kept = [m.copy() for m in maps]
    got = [replayed.detect(frame) for frame in frames]
    assert len(wanted[0]) > 0 and replayed.runner.frames == 2
    assert all(np.array_equal(m, k) for m, k in zip(maps, kept))  # replayed again unchanged
    for mine, theirs in zip(got, wanted):
        assert mine == theirs and mine.records_json(6) == theirs.records_json(6)


def test_every_mode_processes_every_frame(tmp_path, monkeypatch):
    from benchmarks import host_ceiling

    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "res"))
    video = write_video(tmp_path / "v.mp4", frames=9, height=48, width=64)
    assert host_ceiling.main(["--video", str(video), "--rounds", "2", "--map-every", "4",
                              "--no-read"]) == 0
    result = json.loads((tmp_path / "res" / "host_ceiling.json").read_text())
    [measured] = result["videos"]
    assert result["every_frame_processed"] and result["read_track"] == "left out (--no-read)"
    assert measured["maps"] == 3 and [p["frames"] for p in measured["passes"]] == [9] * 6
    assert [s["mode"] for s in measured["summary"]] == ["decode only", "JSON lines", "+ annotated video"]
    assert measured["serial_cpu_ms_per_frame"]["frames"] == 9
    assert (tmp_path / "res" / "host_ceiling.md").is_file()


def test_a_missing_video_is_one_line_naming_it(tmp_path, capsys):
    from benchmarks import host_ceiling

    assert host_ceiling.main(["--video", str(tmp_path / "none.mp4")]) == 2
    assert capsys.readouterr().err.strip() == f"host_ceiling: error: --video {tmp_path / 'none.mp4'}: not found"
