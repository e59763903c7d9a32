"""Time-based segments with retention (`dbrt run --segment-time / --keep-segments`,
pipeline/segments.py): a service that runs for ever writes one file per segment of wall-clock
time instead of files that grow until the disk is full. The clock is injected (one reading per
frame written), so the boundaries do not depend on how fast the machine runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import segments as segments_module
from pipeline.cli import main
from pipeline.reading.events import TextEventSink
from pipeline.segments import Segments
from pipeline.sinks import JsonlSink, VideoSink
from pipeline.sources import Frame

from media import frame_image, index_of, write_video

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z, a multiple of 10 s


class SteppingClock:
    """Unix time that moves on by `step` seconds at every reading."""

    def __init__(self, start: float = T0, step: float = 0.5):
        self.now, self.step = start - step, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _step_per_frame(monkeypatch, clock: SteppingClock) -> None:
    """A run's wall clock that moves on at each reading, read once per frame: the sink thread
    reads it again while no frame comes for IDLE_S (a segment's time over without a frame),
    which a pause on a loaded machine would make a reading more, shifting the segments these
    runs count; those idle readings are left out here (tests/test_segments_idle.py has them)."""
    from pipeline import stages

    monkeypatch.setattr(segments_module, "wall_clock", clock)
    monkeypatch.setattr(stages, "IDLE_S", 3600.0)


def _frames(count: int, stream: int = 0, source: str = "cam"):
    return [Frame(frame_image(i, 48, 64), i, i / 10, source, stream) for i in range(count)]


def _stamp(path: Path) -> str:
    return path.name.rsplit("-", 1)[1].split(".")[0]


def _decoded(path: Path) -> list:
    """(index % 16 the picture says, key frame?) of every frame of a video file."""
    import av

    with av.open(str(path)) as container:
        return [(index_of(f.to_ndarray(format="bgr24")), f.key_frame)
                for f in container.decode(video=0)]


def test_segments_start_on_multiples_of_their_length_and_never_go_back():
    clock = SteppingClock(T0 + 3.2, step=0)  # the run starts 3.2 s into a 10 s segment
    segments = Segments(10, clock=clock)
    frames = _frames(4)
    assert segments.start_for(frames[0]) == T0 + 3.2  # the first segment: from the run's start
    clock.now = T0 + 10.1
    assert segments.start_for(frames[1]) == T0 + 10
    assert segments.start_for(frames[1]) == T0 + 10  # one reading per frame, whoever asks
    clock.now = T0 + 2  # the clock set back: the segment goes on
    assert segments.start_for(frames[2]) == T0 + 10 == segments.current()
    clock.now = T0 + 3600
    assert segments.start_for(frames[3]) == T0 + 3600
    assert segments.path("out/detections.jsonl", T0 + 3.2) == Path("out/detections-20261130T005323Z.jsonl")
    assert segments.path("out/annotated_1_cam.mp4", T0 + 10).name == "annotated_1_cam-20261130T005330Z.mp4"


@pytest.mark.parametrize("bad", [dict(seconds=0), dict(seconds=1.5), dict(seconds=True),
                                 dict(seconds=60, keep=0), dict(seconds=60, keep=2.5)])
def test_segments_refuse_nonsense(bad):
    with pytest.raises(ValueError, match="Segments"):
        Segments(**bad, clock=SteppingClock())


@pytest.mark.parametrize("bad", [dict(seconds="3600"), dict(seconds=None),
                                 dict(seconds=float("inf")), dict(seconds=60, keep=float("nan")),
                                 dict(seconds=60, keep=float("inf")), dict(seconds=60, keep="2")])
def test_segments_refuse_what_is_no_number_in_one_error_naming_the_argument(bad):
    """Text, None, NaN or infinity gave Python's own TypeError ('<' not supported ...), a
    ValueError or an OverflowError that named no argument."""
    name = "keep" if "keep" in bad else "seconds"
    with pytest.raises(ValueError, match=rf"^Segments\({name}=\) must be a "):
        Segments(**bad, clock=SteppingClock())
    with pytest.raises(TypeError, match=r"^Segments\(clock=\) takes a function"):
        Segments(60, clock=T0)
    assert Segments(60.0, keep=2.0, clock=SteppingClock()).keep == 2  # whole floats: numbers


def test_one_spare_file_is_spared_whole_not_letter_by_letter(tmp_path):
    """spare='clip.mp4' was taken letter by letter: the file itself was not spared."""
    source = tmp_path / "detections-20000101T000000Z.jsonl"
    source.write_text("read as this run's source\n")
    segments = Segments(1, keep=1, clock=SteppingClock(T0), spare=str(source))
    JsonlSink(tmp_path / "detections.jsonl", segments=segments).close()
    assert source.exists() and segments.removed == 0


@pytest.mark.parametrize("make", [
    lambda path, segments: JsonlSink(path / "detections.jsonl", segments=segments),
    lambda path, segments: VideoSink(path / "annotated.mp4", segments=segments),
    lambda path, segments: TextEventSink(path / "events.jsonl", segments=segments)])
@pytest.mark.parametrize("segments", [3600, True, "3600"])
def test_a_sinks_segments_that_is_not_a_segments_is_refused_when_made(tmp_path, make, segments):
    """segments=3600 (the seconds meant) was an AttributeError, or for VideoSink taken and
    failing at the first frame in the pipeline's sink thread."""
    with pytest.raises(TypeError, match=r"\(segments=\) takes a pipeline.segments.Segments"):
        make(tmp_path, segments)


@pytest.mark.parametrize("live", [False, True])
def test_video_and_lines_segments_hold_every_frame_once_each_video_whole(tmp_path, live):
    """10 frames, half a second apart, in 1 s segments: the JSON lines of the segments, read in
    the order of their names, are the unsegmented file's; each video segment opens alone,
    starts at a keyframe, and their frames are all the frames, in order (a live stream's
    encoder, which writes fragments without look-ahead, too)."""
    clock = SteppingClock(T0 + 0.25)
    segments = Segments(1, clock=clock)
    frames = _frames(10)
    plain = JsonlSink(tmp_path / "plain" / "detections.jsonl")
    sinks = [JsonlSink(tmp_path / "detections.jsonl", segments=segments),
             VideoSink(tmp_path / "annotated.mp4", live_streams={0} if live else (),
                       segments=segments), plain]
    from pipeline.detections import Detections

    for frame in frames:
        for sink in sinks:
            sink.write(frame, Detections.empty())
    for sink in sinks:
        sink.close()
    lines = sorted(tmp_path.glob("detections-*.jsonl"))
    assert [_stamp(p) for p in lines] == [
        "20261130T005320Z", "20261130T005321Z", "20261130T005322Z", "20261130T005323Z",
        "20261130T005324Z", "20261130T005325Z"]
    joined = "".join(p.read_text() for p in lines)
    assert joined == (tmp_path / "plain" / "detections.jsonl").read_text()
    assert [len(p.read_text().splitlines()) for p in lines] == [1, 2, 2, 2, 2, 1]
    videos = sorted(tmp_path.glob("annotated-*.mp4"))
    assert [_stamp(p) for p in videos] == [_stamp(p) for p in lines]
    decoded = [_decoded(p) for p in videos]
    assert [len(d) for d in decoded] == [1, 2, 2, 2, 2, 1]
    assert all(d[0][1] for d in decoded)  # each starts at a keyframe
    assert [index for d in decoded for index, _ in d] == list(range(10))
    assert segments.written(tmp_path / "annotated.mp4") == [str(p) for p in videos]


def test_keep_deletes_the_oldest_segments_never_the_one_written(tmp_path):
    (tmp_path / "detections-20000101T000000Z.jsonl").write_text("an earlier run's\n")
    (tmp_path / "detections.jsonl").write_text("not a segment\n")
    (tmp_path / "detections-notes.jsonl").write_text("not a segment\n")
    segments = Segments(1, keep=2, clock=SteppingClock(T0, step=1))
    sink = JsonlSink(tmp_path / "detections.jsonl", segments=segments)
    from pipeline.detections import Detections

    for frame in _frames(4):
        sink.write(frame, Detections.empty())
        assert len(list(tmp_path.glob("detections-2*.jsonl"))) <= 2
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "detections-20261130T005323Z.jsonl", "detections-20261130T005324Z.jsonl",
        "detections-notes.jsonl", "detections.jsonl"]
    assert segments.removed == 4  # the earlier run's and three of this run's
    assert [Path(p).name for p in segments.written(tmp_path / "detections.jsonl")] == [
        "detections-20261130T005323Z.jsonl", "detections-20261130T005324Z.jsonl"]
    keep_one = Segments(1, keep=1, clock=SteppingClock(T0 + 10, step=1))
    JsonlSink(tmp_path / "detections.jsonl", segments=keep_one).close()
    assert sorted(p.name for p in tmp_path.glob("detections-2*")) == ["detections-20261130T005330Z.jsonl"]


def test_a_long_run_remembers_only_the_segments_it_keeps(tmp_path):
    """A service of weeks opens thousands of segments of each file: the run's list of its own
    grew by one path per segment for ever (memory, and a longer scan at every new segment),
    though all but `keep` were deleted."""
    segments = Segments(1, keep=3, clock=SteppingClock(T0, step=1))
    sink = JsonlSink(tmp_path / "detections.jsonl", segments=segments)
    from pipeline.detections import Detections

    for frame in _frames(200):
        sink.write(frame, Detections.empty())
    sink.close()
    assert segments.removed >= 197
    assert len(segments.files[tmp_path / "detections.jsonl"]) == 3
    assert segments.written(tmp_path / "detections.jsonl") == sorted(
        str(p) for p in tmp_path.glob("detections-*.jsonl"))


def test_a_segment_never_writes_over_an_earlier_runs_of_the_same_name(tmp_path):
    """A box without a clock battery boots with its clock set back and comes to names its
    earlier run wrote: that file stays whole, the new one gets -2 after its time (and counts
    as a segment of the series)."""
    earlier = tmp_path / "detections-20261130T005320Z.jsonl"
    earlier.write_text("an earlier run's line\n")
    (tmp_path / "detections-20261130T005320Z-2.jsonl").write_text("and another's\n")
    segments = Segments(10, keep=3, clock=SteppingClock(T0, step=1))
    sink = JsonlSink(tmp_path / "detections.jsonl", segments=segments)
    from pipeline.detections import Detections

    sink.write(_frames(1)[0], Detections.empty())
    sink.close()
    assert earlier.read_text() == "an earlier run's line\n"
    written = tmp_path / "detections-20261130T005320Z-3.jsonl"
    assert segments.written(tmp_path / "detections.jsonl") == [str(written)]
    assert json.loads(written.read_text())["frame_index"] == 0
    Segments(10, keep=1, clock=SteppingClock(T0 + 10)).opened(tmp_path / "detections.jsonl", T0 + 10)
    assert not list(tmp_path.glob("detections-*.jsonl"))  # the -N ones are segments too


def test_a_clock_set_back_deletes_the_earlier_runs_segments_first_not_this_runs(tmp_path):
    """A box booted with its clock an hour behind, before network time: this run's names sort
    before the earlier run's. Retention still deletes the earlier run's segments first: it
    deleted each of this run's segments as soon as it was finished, and kept the stale ones."""
    for stamp in ("20261130T015320Z", "20261130T015330Z", "20261130T015340Z"):
        (tmp_path / f"detections-{stamp}.jsonl").write_text("an earlier run's line\n")
    segments = Segments(10, keep=3, clock=SteppingClock(T0, step=10))
    sink = JsonlSink(tmp_path / "detections.jsonl", segments=segments)
    from pipeline.detections import Detections

    for frame in _frames(3):  # segments 005330Z, 005340Z, 005350Z after the run's first
        sink.write(frame, Detections.empty())
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "detections-20261130T005330Z.jsonl", "detections-20261130T005340Z.jsonl",
        "detections-20261130T005350Z.jsonl"]
    assert segments.removed == 4  # the earlier run's three, then this run's first


def test_empty_segments_of_runs_without_frames_push_out_no_real_one(tmp_path):
    """A crash loop while a camera is down (each run gives up, the service restarts it): each
    run's first file, opened before any frame, stays empty. Those are deleted and not counted:
    they pushed the recorded segments out, one a restart, until none was left."""
    for stamp, text in (("20261130T004000Z", "a line\n"), ("20261130T004500Z", "a line\n"),
                        ("20261130T005000Z", ""), ("20261130T005100Z", ""),
                        ("20261130T005200Z", "")):
        (tmp_path / f"detections-{stamp}.jsonl").write_text(text)
    segments = Segments(10, keep=3, clock=SteppingClock(T0, step=1))
    JsonlSink(tmp_path / "detections.jsonl", segments=segments).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "detections-20261130T004000Z.jsonl", "detections-20261130T004500Z.jsonl",
        "detections-20261130T005320Z.jsonl"]
    assert segments.removed == 3


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("segments") / "clip.mp4", frames=12, height=72,
                       width=128)


def _run(clip, out, tiny_onnx, *flags) -> int:
    return main(["run", str(clip), "--model", str(tiny_onnx), "--output", str(out), "--threads",
                 "1", "--max-side", "128", "--box-thresh", "0.1", "--quiet", *flags])


def test_dbrt_run_writes_segments_that_add_up_to_the_unsegmented_run(tmp_path, clip, tiny_onnx,
                                                                     monkeypatch, capsys):
    plain = tmp_path / "plain"
    assert _run(clip, plain, tiny_onnx, "--track") == 0
    _step_per_frame(monkeypatch, SteppingClock(T0, step=1))
    out = tmp_path / "out"
    assert _run(clip, out, tiny_onnx, "--track", "--segment-time", "2") == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    report = json.loads((out / "report.json").read_text())["outputs"]
    events = len(report["events"])  # the first (from the run's start) and those with lines
    assert printed == (f"wrote {out}/detections-<UTC start>.jsonl (7 segments), "
                       f"{out}/events-<UTC start>.jsonl ({events} segment{'s' * (events > 1)}, "
                       f"every 2 s), {out}/report.json and annotated output under {out}/")
    lines = sorted(out.glob("detections-*.jsonl"))
    assert report["jsonl"] == [str(p) for p in lines] and len(lines) == 7
    assert [len(p.read_text().splitlines()) for p in lines] == [1, 2, 2, 2, 2, 2, 1]
    assert "".join(p.read_text() for p in lines) == (plain / "detections.jsonl").read_text()
    events = sorted(out.glob("events-*.jsonl"))
    assert report["events"] == [str(p) for p in events]
    assert "".join(p.read_text() for p in events) == (plain / "events.jsonl").read_text()
    videos = sorted(out.glob("annotated-*.mp4"))
    assert report["videos"] == {"0": [str(p) for p in videos]} and len(videos) == 7
    assert sum(len(_decoded(p)) for p in videos) == 12
    assert report["segments"] == {"seconds": 2, "keep": None, "removed": 0}
    assert not (out / "detections.jsonl").exists() and not (out / "annotated.mp4").exists()



def test_the_summary_says_the_older_segments_removed_are_of_every_file():
    """The count of older segments deleted is of all the run's segmented files (detections,
    events, videos); printed beside the last file as '17 older removed', it read as that
    file's."""
    from pipeline.commands._segments import results_named

    def named(removed: int) -> str:
        return results_named(dict(jsonl=["d1", "d2"], events=["e1"], segments=dict(
            seconds=3600, keep=2, removed=removed)), Path("out"))

    assert named(17) == ("out/detections-<UTC start>.jsonl (2 segments), out/events-<UTC start>"
                         ".jsonl (1 segment, every 3600 s, the newest 2 kept, 17 older segment "
                         "files of all kinds removed)")
    assert named(1).endswith(", 1 older segment file of all kinds removed)")
    assert named(0).endswith("(1 segment, every 3600 s, the newest 2 kept)")

def test_keep_segments_deletes_the_oldest_an_earlier_runs_too(tmp_path, clip, tiny_onnx,
                                                             monkeypatch, capsys):
    """A restarted service goes on with its series: the earlier run's segments are kept and
    counted by --keep-segments; the earlier run's whole files are removed as before (this run
    does not write them)."""
    out = tmp_path / "out"
    assert _run(clip, out, tiny_onnx) == 0  # an unsegmented run first
    _step_per_frame(monkeypatch, SteppingClock(T0, step=1))
    assert _run(clip, out, tiny_onnx, "--segment-time", "2") == 0
    assert "removed the earlier run's annotated.mp4, detections.jsonl" in capsys.readouterr().err
    first = sorted(p.name for p in out.glob("*-*Z.*"))
    assert len(first) == 14  # 7 of the detections, 7 of the video
    _step_per_frame(monkeypatch, SteppingClock(T0 + 100, step=1))
    assert _run(clip, out, tiny_onnx, "--segment-time", "2", "--keep-segments", "8") == 0
    printed = capsys.readouterr()
    assert "removed the earlier run's" not in printed.err
    assert "every 2 s, the newest 8 kept, 12 older segment files of all kinds removed)" in \
        printed.out.splitlines()[-1]  # 6 of the detections, 6 of the video
    names = sorted(p.name for p in out.glob("detections-*.jsonl"))
    assert names[0] == [n for n in first if n.startswith("detections")][-1]  # the earlier run's
    assert len(names) == 8 and len(list(out.glob("annotated-*.mp4"))) == 8
    report = json.loads((out / "report.json").read_text())["outputs"]
    assert [Path(p).name for p in report["jsonl"]] == names[1:]  # this run's
    assert report["segments"] == {"seconds": 2, "keep": 8, "removed": 12}
    assert _run(clip, out, tiny_onnx) == 0  # unsegmented again: the segments stay
    assert len(list(out.glob("detections-*.jsonl"))) == 8 and (out / "detections.jsonl").is_file()
    # a segment read as a source is never deleted, however few are kept
    oldest = sorted(out.glob("annotated-*.mp4"))[0]
    assert main(["run", str(oldest), "--model", str(tiny_onnx), "--output", str(out), "--threads",
                 "1", "--max-side", "128", "--quiet", "--segment-time", "2", "--keep-segments",
                 "1"]) == 0
    assert oldest.is_file() and len(list(out.glob("annotated-*.mp4"))) == 2
    assert len(list(out.glob("detections-*.jsonl"))) == 1


def test_a_live_streams_segments_hold_every_frame_written_once(tmp_path, tiny_onnx, monkeypatch):
    """A live MPEG-TS stream on 127.0.0.1 (live encoder settings, fragmented MP4): the frames
    written are in the segments once each, in order, and every video segment plays alone."""
    from media import TsServer, mpegts_bytes

    _step_per_frame(monkeypatch, SteppingClock(T0, step=1))
    server = TsServer(mpegts_bytes(frames=50, height=72, width=128)).start()
    out = tmp_path / "out"
    try:
        assert main(["run", server.url, "--model", str(tiny_onnx), "--output", str(out),
                     "--threads", "1", "--max-side", "128", "--quiet", "--max-frames", "12",
                     "--segment-time", "2", "--reconnect", "0"]) == 0
    finally:
        server.stop()
    report = json.loads((out / "report.json").read_text())
    lines = [json.loads(line) for p in sorted(out.glob("detections-*.jsonl"))
             for line in p.read_text().splitlines()]
    indices = [line["frame_index"] for line in lines]
    assert len(indices) == report["frames"] == 12 and indices == sorted(set(indices))
    videos = sorted(out.glob("annotated-*.mp4"))
    assert [str(p) for p in videos] == report["outputs"]["videos"]["0"] and len(videos) == 7
    decoded = [_decoded(p) for p in videos]
    assert all(d and d[0][1] for d in decoded) and sum(map(len, decoded)) == 12


@pytest.mark.parametrize("flags, says", [
    (["--segment-time", "0"], "--segment-time: must be an integer >= 1, got '0'"),
    (["--segment-time", "1.5"], "--segment-time: must be an integer >= 1"),
    (["--keep-segments", "3"], "--keep-segments N keeps the newest N segments of --segment-time"),
    (["--segment-time", "60", "--keep-segments", "0"], "--keep-segments: must be an integer >= 1"),
])
def test_bad_segment_flags_are_refused_in_one_line(tmp_path, clip, tiny_onnx, capsys, flags, says):
    assert _run(clip, tmp_path / "out", tiny_onnx, *flags) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_segments_of_images_alone_are_refused(tmp_path, tiny_onnx, capsys):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), frame_image(0))
    assert main(["run", str(tmp_path / "a.png"), "--model", str(tiny_onnx), "--output",
                 str(tmp_path / "out"), "--segment-time", "60", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--segment-time splits the results of videos, streams and cameras "
                            "by time; the sources are images: drop --segment-time")



def test_a_segments_used_again_for_another_run_leaves_no_empty_file_of_the_last_run(tmp_path):
    """A second run's JsonlSink on the same Segments opened a file named after the first run's
    last segment (-2 after its time, the name being taken), which stayed empty as its first
    frame went to the segment of its own time."""
    from pipeline.detections import Detections

    clock = SteppingClock(T0 + 3, step=0)
    segments = Segments(10, clock=clock)
    for run in range(2):
        with JsonlSink(tmp_path / "detections.jsonl", segments=segments) as sink:
            for frame in _frames(2):
                sink.write(frame, Detections.empty())
        clock.now += 600
    files = sorted(tmp_path.iterdir())
    assert [_stamp(p) for p in files] == ["20261130T005323Z", "20261130T010320Z"]
    assert [len(p.read_text().splitlines()) for p in files] == [2, 2]


def test_two_pipelines_sharing_a_segments_keep_each_frames_sinks_in_one_segment():
    """The clock was read again for a frame whose sinks another sink thread (a second Pipeline
    on the same Segments) had asked between: at a boundary its JSON line and its video frame
    went to segments of different names."""
    import threading

    clock = SteppingClock(T0 + 9.5, step=0)
    segments = Segments(10, clock=clock)
    first, second = _frames(1, stream=0)[0], _frames(1, stream=0)[0]
    asked, other_asked, starts = threading.Event(), threading.Event(), []

    def run_one():  # its JSON line, then (after the other run's frame) its video frame
        starts.append(segments.start_for(first))
        asked.set()
        other_asked.wait(5)
        starts.append(segments.start_for(first))

    def run_two():
        asked.wait(5)
        clock.now = T0 + 10.5  # the boundary passes between the first frame's sinks
        starts.append(segments.start_for(second))
        other_asked.set()

    threads = [threading.Thread(target=run_one), threading.Thread(target=run_two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert starts == [T0 + 9.5, T0 + 10, T0 + 9.5]


def test_keep_deletes_an_earlier_runs_segments_first_even_with_the_clock_set_back(tmp_path):
    """Names sorted as text: `...Z-2` before `...Z`, `-10` before `-2`; and a box booted with
    its clock set back (no clock battery, no network time yet) named this run's segments
    before the last run's, so this run's were the ones deleted."""
    later = ["detections-20300101T000000Z.jsonl", "detections-20300101T000000Z-2.jsonl",
             "detections-20300101T000000Z-10.jsonl"]
    for name in later:
        (tmp_path / name).write_text("an earlier run's\n")
    from pipeline.detections import Detections

    segments = Segments(1, keep=3, clock=SteppingClock(T0, step=1))  # 2026: before them
    sink = JsonlSink(tmp_path / "detections.jsonl", segments=segments)
    for frame in _frames(3):
        sink.write(frame, Detections.empty())
        if frame.index == 0:  # its empty first file gone, one being written: the newest two kept
            assert sorted(p.name for p in tmp_path.glob("detections-2030*")) == sorted(later[1:])
    sink.close()
    ours = [Path(p).name for p in segments.written(tmp_path / "detections.jsonl")]
    assert len(ours) == 3 and sorted(p.name for p in tmp_path.iterdir()) == sorted(ours)
