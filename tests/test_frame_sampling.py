"""`--sample-fps` / `Pipeline(sample_fps=...)`: at most N frames per second of each video or
stream, spread evenly by timestamp, the same frames on every run of a file, the rest counted as
sampled out (never dropped or lost), images untouched, and the counts in every report."""
import json

import pytest
from media import FakeDetector, SimulatedCamera, write_video

from pipeline.decoding import FrameSampler
from pipeline.runner import Pipeline


def _kept(sampler, times, connections=None):
    connections = connections or [0] * len(times)
    return [t for t, c in zip(times, connections) if sampler.keep(t, c)]


def test_thirty_fps_sampled_at_seven_keeps_seven_a_second_evenly():
    times = [round(i / 30, 6) for i in range(90)]  # rounded as containers store them
    kept = _kept(FrameSampler(7), times)
    assert len(kept) == 21  # 7 a second, not every 5th frame (6) or every 4th (7.5)
    gaps = [b - a for a, b in zip(kept, kept[1:])]
    assert min(gaps) >= 4 / 30 - 1e-6 and max(gaps) <= 5 / 30 + 1e-6
    assert _kept(FrameSampler(7), times) == kept  # a file gives the same frames every run


def test_a_rate_at_or_above_the_source_keeps_every_frame_and_images_are_not_sampled():
    times = [i / 25 for i in range(50)]
    assert _kept(FrameSampler(25), times) == times
    assert _kept(FrameSampler(100), times) == times
    assert FrameSampler(1).keep(None) and FrameSampler(1).keep(None)


def test_the_grid_starts_again_when_the_clock_goes_back_or_the_connection_changes():
    sampler = FrameSampler(2)
    assert _kept(sampler, [10.0, 10.1, 10.5, 10.6]) == [10.0, 10.5]
    assert sampler.keep(0.2)        # the stream restarted its clock: not held until 11.0
    assert not sampler.keep(0.3)
    assert sampler.keep(0.35, connection=1)  # a reconnect: a new grid at once
    assert sampler.keep(100.0, connection=1)  # a jump ahead keeps the next frame


def test_a_file_run_keeps_its_sampled_frames_and_counts_the_rest(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=30, fps=10)  # 3 s
    pipe = Pipeline([video], FakeDetector(), sample_fps=2)
    assert pipe.total_frames == 6
    indices = [frame.index for frame, _ in pipe]
    assert indices == [0, 5, 10, 15, 20, 25]
    report = pipe.report()
    src = report["sources"][0]
    assert (src["read"], src["delivered"], src["sampled_out"], src["dropped"]) == (30, 6, 24, 0)
    assert report["frames"] == 6 and report["sampled_out"] == 24 and report["lost"] == 0
    assert report["sample_fps"] == 2


def test_max_frames_counts_the_frames_run(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=30, fps=10)
    pipe = Pipeline([video], FakeDetector(), sample_fps=5, max_frames=4)
    assert [frame.index for frame, _ in pipe] == [0, 2, 4, 6]
    assert pipe.report()["lost"] == 0


def test_a_live_source_is_sampled_by_its_clock():
    camera = SimulatedCamera(total=300, fps=200, reconnect=None)  # timestamps: frame / 100 s
    pipe = Pipeline([camera], FakeDetector(), sample_fps=10)
    frames = [frame for frame, _ in pipe]
    src = pipe.report()["sources"][0]
    assert src["read"] == src["delivered"] + src["dropped"] + src["sampled_out"]
    assert len(frames) == src["delivered"] and 0 < len(frames) <= 30 and src["sampled_out"] > 0
    slots = [round((f.timestamp - frames[0].timestamp) * 10, 6) // 1 for f in frames]
    assert all(a < b for a, b in zip(slots, slots[1:]))  # one frame per tenth of a second at most
    assert pipe.report()["lost"] == 0


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_a_bad_rate_is_refused(tmp_path, bad):
    video = write_video(tmp_path / "v.mp4", frames=3)
    with pytest.raises(ValueError, match="sample_fps must be a number of frames per second > 0"):
        Pipeline([video], FakeDetector(), sample_fps=bad)


def test_dbrt_run_sample_fps(tmp_path, tiny_onnx, capsys):
    from pipeline.cli import main

    video = write_video(tmp_path / "v.mp4", frames=20, fps=10, height=64, width=96)
    out = tmp_path / "out"
    assert main(["run", str(video), "--model", str(tiny_onnx), "-o", str(out), "--no-video",
                 "--sample-fps", "2.5", "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == [0, 4, 8, 12, 16]
    report = json.loads((out / "report.json").read_text())
    assert report["sampled_out"] == 15 and report["sources"][0]["sampled_out"] == 15
    assert report["sample_fps"] == 2.5
    capsys.readouterr()
    assert main(["run", str(video), "--model", str(tiny_onnx), "-o", str(out), "--sample-fps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--sample-fps" in err and err.count("\n") == 1


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_the_annotated_video_lasts_as_long_as_its_source(tmp_path, suffix):
    import av

    from pipeline.sinks import VideoSink

    video = write_video(tmp_path / "v.mp4", frames=30, fps=10)  # 3 s
    path = tmp_path / f"annotated{suffix}"
    with Pipeline([video], FakeDetector(), sample_fps=2, sinks=[VideoSink(path)]) as pipe:
        pipe.run()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(frame.time) for frame in container.decode(stream)]
        length = container.duration / 1e6
    assert times == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5], abs=1e-3)
    assert length == pytest.approx(3.0, abs=0.02)  # its last frame lasts 0.5 s, not 0.1 s


def test_a_video_file_makes_no_picture_of_a_frame_left_out(tmp_path, monkeypatch):
    """Every frame of a video is decoded (each depends on the ones before), but its BGR picture,
    a quarter of the decoding's CPU (1080x1920: 9.5 ms decoding, 3.3 ms converting), is made
    only for the frames run."""
    from pipeline.sources import video as video_source

    made = []
    convert = video_source.upright_bgr
    monkeypatch.setattr(video_source, "upright_bgr", lambda vframe: made.append(1) or convert(vframe))
    video = write_video(tmp_path / "v.mp4", frames=30, fps=10)
    pipe = Pipeline([video], FakeDetector(), sample_fps=2)
    assert [frame.index for frame, _ in pipe] == [0, 5, 10, 15, 20, 25]
    assert len(made) == 6
    src = pipe.report()["sources"][0]
    assert (src["read"], src["delivered"], src["sampled_out"]) == (30, 6, 24)
