"""Phone videos: portrait video stored as landscape frames plus a display rotation tag; frames,
detections and the annotated video come out upright."""
from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.sources import VideoFileSource

from media import write_video

@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_frames_come_upright_like_opencv_shows_them(tmp_path, rotation):
    """Phones store portrait video as landscape frames plus a rotation tag; OpenCV (an
    independent reader) applies the tag, and so must we."""
    import cv2
    import numpy as np

    video = write_video(tmp_path / "phone.mp4", frames=3, height=48, width=64, rotation=rotation)
    ours = [f.image for f in VideoFileSource(video).open()]
    capture = cv2.VideoCapture(str(video))
    theirs = [capture.read()[1] for _ in range(3)]
    capture.release()
    expected_shape = (48, 64, 3) if rotation == 180 else (64, 48, 3)
    for mine, reference in zip(ours, theirs):
        assert mine.shape == reference.shape == expected_shape
        assert np.abs(mine.astype(int) - reference.astype(int)).mean() < 8


def test_dbrt_run_on_a_rotated_video_writes_upright_output(tmp_path, tiny_onnx, capsys):
    video = write_video(tmp_path / "phone.mp4", frames=4, height=72, width=128, rotation=-90)
    out = tmp_path / "out"
    assert main(["run", str(video), "--model", str(tiny_onnx), "-o", str(out), "--threads", "1",
                 "--quiet"]) == 0
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert all(x["frame_size"] == [128, 72] for x in lines) and len(lines) == 4
    import av

    with av.open(str(out / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.height, stream.width) == (128, 72)
