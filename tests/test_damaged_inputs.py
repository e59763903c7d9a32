"""A damaged input never costs the results of the good ones: a truncated video writes every
frame it decoded, an unreadable image is skipped, and the run then ends with one error line
that says what was wrong (non-zero exit)."""
from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.runner import Pipeline
from pipeline.sources import VideoFileSource

from media import FakeDetector, write_truncated_video, write_video


def _decodable_frames(path, threads: int = 1) -> int:
    """Frames FFmpeg decodes from `path`, packets it rejects skipped (0 threads: FFmpeg's
    choice, whose frame threads drop a damaged frame quietly instead of rejecting its packet)."""
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        try:
            for packet in container.demux(stream):
                try:
                    count += len(packet.decode())
                except av.InvalidDataError:
                    continue
        except av.FFmpegError:
            pass
    return count


def _run(tmp_path, capsys, *args):
    out = tmp_path / "out"
    rc = main(["run", *args, "-o", str(out), "--threads", "1", "--quiet", "--max-side", "128"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    return rc, errors, lines, out


def _video_frames(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("decode_threads", ["0", "1"])
def test_truncated_video_writes_every_decoded_frame_then_fails(tmp_path, tiny_onnx, capsys,
                                                               decode_threads):
    """Before: FFmpeg's threaded decoder ended quietly (exit 0 after 74 of 935 frames); one
    decoding thread raised, which aborted the run and lost the frames in flight."""
    video = write_truncated_video(tmp_path / "cut.mp4", frames=200)
    decoded = _decodable_frames(video, int(decode_threads))
    assert 0 < decoded < 200
    rc, errors, lines, out = _run(tmp_path, capsys, str(video), "--model", str(tiny_onnx),
                                  "--decode-threads", decode_threads)
    assert rc == 2 and len(errors) == 1
    assert "ended early" in errors[0] and f"{decoded} of 200 frames" in errors[0], errors
    assert [x["frame_index"] for x in lines] == list(range(decoded))
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == decoded and report["lost"] == 0
    assert _video_frames(out / "annotated.mp4") == decoded
    # report.json said the source 'failed' without why (only /api/status had its error)
    (source,) = report["sources"]
    assert source["state"] == "failed" and f"{decoded} of 200 frames" in source["error"]


def test_complete_video_is_not_called_truncated(tmp_path, tiny_onnx, capsys):
    video = write_truncated_video(tmp_path / "whole.mp4", frames=30, keep=1.0)
    rc, errors, lines, _ = _run(tmp_path, capsys, str(video), "--model", str(tiny_onnx))
    assert rc == 0 and errors == [] and len(lines) == 30


def test_a_damaged_packet_mid_file_costs_only_its_own_frames(tmp_path, tiny_onnx, capsys):
    """Garbage over a stretch in the middle of an MP4: the frames after it are still read and
    written (decoding stopped at the first bad packet), then the run fails naming the damage."""
    video = write_video(tmp_path / "hit.mp4", frames=100, fps=25)
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(range(256)) + bytes(44)
    video.write_bytes(bytes(data))
    decoded = _decodable_frames(video)
    assert 90 < decoded < 100
    rc, errors, lines, _ = _run(tmp_path, capsys, str(video), "--model", str(tiny_onnx),
                                "--decode-threads", "1")
    assert rc == 2 and len(errors) == 1 and "packet(s) could not be decoded" in errors[0], errors
    assert [x["frame_index"] for x in lines] == list(range(decoded))


@pytest.mark.parametrize("keep", [0.6, 1.0])
def test_a_matroska_file_cut_short_is_an_error_and_a_whole_one_is_not(tmp_path, keep):
    """Matroska has no frame index: the check uses the length its header states."""
    from engine.errors import SourceError
    from pipeline.sources import open_source

    whole = write_video(tmp_path / "whole.mkv", frames=100, fps=25)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * keep)])
    frames = []
    with open_source(str(cut)) as source:
        if keep == 1.0:
            frames = list(source)
        else:
            with pytest.raises(SourceError, match="ended early"):
                frames.extend(source)
    assert len(frames) == 100 if keep == 1.0 else 0 < len(frames) < 100


def test_a_whole_matroska_file_whose_audio_outlasts_its_video_is_not_called_truncated(tmp_path):
    """Its stated length is the longest stream's: only a video-only file is checked against it."""
    from fractions import Fraction

    import av
    import numpy as np

    from pipeline.sources import open_source

    path = tmp_path / "talk.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(50):  # 2 s of video
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for start in range(0, 5 * 16000, 1024):  # 5 s of audio
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                                 layout="mono")
            samples.sample_rate, samples.pts = 16000, start
            container.mux(audio.encode(samples))
        container.mux(audio.encode(None))
    with open_source(str(path)) as source:
        assert len(list(source)) == 50


def _not_an_image(path):
    path.write_text("this is a text file named like an image")
    return path


def test_unreadable_image_next_to_a_video_keeps_the_video(tmp_path, tiny_onnx, capsys):
    video = write_video(tmp_path / "clip.mp4", frames=8, height=72, width=128)
    fake = _not_an_image(tmp_path / "fake.jpg")
    rc, errors, lines, out = _run(tmp_path, capsys, str(video), str(fake), "--model",
                                  str(tiny_onnx))
    assert rc == 2 and len(errors) == 1 and "fake.jpg" in errors[0], errors
    assert [x["frame_index"] for x in lines if x["source"] == str(video)] == list(range(8))
    assert _video_frames(out / "annotated_0_clip.mp4") == 8


def test_unreadable_image_in_a_folder_is_skipped_and_counted(tmp_path, tiny_onnx, capsys):
    import cv2
    import numpy as np

    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(folder / name), np.full((40, 60, 3), 128, np.uint8))
    _not_an_image(folder / "b.jpg")
    rc, errors, lines, out = _run(tmp_path, capsys, str(folder), "--model", str(tiny_onnx))
    assert rc == 2 and len(errors) == 1
    assert f"1 of 3 images in {folder} could not be read" in errors[0] and "b.jpg" in errors[0], errors
    assert [x["source"].split("/")[-1] for x in lines] == ["a.png", "c.png"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["0_00000_a.png", "0_00002_c.png"]
    report = json.loads((out / "report.json").read_text())
    assert report["sources"][0]["skipped"] == 1 and report["frames"] == 2


def test_a_failing_source_does_not_stop_the_others(tmp_path):
    good = write_video(tmp_path / "good.mp4", frames=7)
    bad = write_video(tmp_path / "bad.mp4", frames=12)

    class BrokenVideo(VideoFileSource):
        def __iter__(self):
            for frame in super().__iter__():
                if frame.index == 4:
                    raise OSError("disk vanished")
                yield frame

    seen = []
    pipe = Pipeline([BrokenVideo(bad), good], FakeDetector(), batch=2,
                    callbacks=[lambda f, d: seen.append((f.stream, f.index))])
    with pytest.raises(OSError, match="disk vanished"):
        pipe.run()
    assert [i for s, i in seen if s == 0] == list(range(4))
    assert [i for s, i in seen if s == 1] == list(range(7))

