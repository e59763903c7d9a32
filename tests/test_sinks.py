"""Sinks and annotators: JSON lines flushed per frame, PyAV video, images, filtering, window."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import DbrtError
from pipeline.detections import Detections
from pipeline.draw import BannerAnnotator, PolygonAnnotator, annotate
from pipeline.sinks import FilteredSink, ImageSink, JsonlSink, VideoSink, WindowSink
from pipeline.sources import Frame

QUAD = np.array([[[10, 10], [40, 10], [40, 30], [10, 30]]], np.float32)


def make_frame(index, stream=0, h=48, w=64):
    return Frame(np.full((h, w, 3), 90, np.uint8), index, index / 10, f"src{stream}", stream)


def dets_for(frame):
    return Detections.from_quads(QUAD, [0.9])



def test_jsonl_lines_are_complete_while_writing(tmp_path):
    sink = JsonlSink(tmp_path / "sub" / "d.jsonl")
    for i in range(3):
        frame = make_frame(i)
        sink.write(frame, dets_for(frame))
        lines = (tmp_path / "sub" / "d.jsonl").read_text().splitlines()  # flushed already
        assert len(lines) == i + 1
    sink.close()
    back = [Detections.from_json(line) for line in lines]
    assert [json.loads(line)["frame_index"] for line in lines] == [0, 1, 2]
    np.testing.assert_allclose(back[0].polygons[0], QUAD[0])


def test_video_sink_writes_one_decodable_file_per_stream_with_even_size(tmp_path):
    av = pytest.importorskip("av")
    sink = VideoSink(lambda f: tmp_path / f"s{f.stream}.mp4", fps_by_stream={0: 10})
    with sink:
        for i in range(5):
            for stream, (h, w) in ((0, (48, 64)), (1, (31, 45))):
                frame = make_frame(i, stream, h, w)
                frame.timestamp = None if stream == 1 else frame.timestamp  # images: 25 fps
                sink.write(frame, dets_for(frame))
    for stream, size, fps in ((0, (48, 64), 10), (1, (30, 44), 25)):
        with av.open(str(tmp_path / f"s{stream}.mp4")) as container:
            vs = container.streams.video[0]
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(vs)]
            assert len(frames) == 5 and frames[0].shape[:2] == size
            assert float(vs.average_rate) == pytest.approx(fps)
    green = frames[0][20, 10]  # on the drawn outline
    assert green[1] > 150 and green[0] < 120


def test_image_sink_and_filter(tmp_path):
    import cv2

    images = ImageSink(lambda f: tmp_path / f"{f.index}.png")
    only_stream_1 = FilteredSink(images, lambda f: f.stream == 1)
    for stream in (0, 1):
        frame = make_frame(stream, stream)
        only_stream_1.write(frame, dets_for(frame))
    only_stream_1.close()
    assert images.written == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["1.png"]
    drawn = cv2.imread(str(tmp_path / "1.png"))
    assert tuple(drawn[10, 25]) == (0, 255, 0) and tuple(drawn[20, 25]) == (90, 90, 90)


def test_annotators_draw_on_a_copy():
    frame = make_frame(0)
    out = annotate(frame.image, dets_for(frame), [PolygonAnnotator(show_score=True),
                                                  BannerAnnotator("UNTRAINED")])
    assert (frame.image == 90).all()  # the original is untouched
    assert (out != 90).any() and out[2, 2].sum() < 90 * 3  # banner background is dark
    empty = PolygonAnnotator().annotate(frame.image.copy(), Detections.empty())
    assert (empty == 90).all()


def test_window_sink_on_headless_opencv_says_what_to_install():
    import cv2

    try:
        sink = WindowSink()
    except DbrtError as exc:
        assert "opencv-python" in str(exc)
    else:  # a GUI build with a display: the window works
        sink.close()
        assert hasattr(cv2, "imshow")


def test_video_sink_scales_frames_of_a_new_size_into_the_file(tmp_path):
    """A live stream that reconnects at another resolution: the whole picture stays in
    annotated.mp4 (scaled to the file's size, letterboxed), not just its top-left corner."""
    av = pytest.importorskip("av")
    empty = Detections.from_quads(np.zeros((0, 4, 2), np.float32), [])

    def frame(i, h, w):
        image = np.zeros((h, w, 3), np.uint8)
        image[h // 2:, w // 2:] = 255  # bright bottom-right quadrant
        return Frame(image, i, i / 10, "live", 0)

    with VideoSink(tmp_path / "a.mp4", fps=10) as sink:
        for i, (h, w) in enumerate([(48, 64)] * 3 + [(96, 128)] * 3 + [(48, 160)] * 3):
            sink.write(frame(i, h, w), empty)
    with av.open(str(tmp_path / "a.mp4")) as container:
        out = [f.to_ndarray(format="bgr24").astype(float) for f in container.decode(video=0)]
    assert len(out) == 9 and all(o.shape == (48, 64, 3) for o in out)
    for o in out[:6]:  # same aspect ratio: fills the frame
        assert o[30:, 40:].mean() > 200 and o[:18, :26].mean() < 40
    for o in out[6:]:  # 48x160 into 48x64: 20 px high band in the middle, black above / below
        assert o[:12].mean() < 40 and o[36:].mean() < 40
        assert o[26:33, 40:].mean() > 200 and o[15:22, :26].mean() < 40


def test_an_empty_annotator_list_draws_nothing():
    from pipeline.draw import annotate

    image = np.zeros((20, 30, 3), np.uint8)
    dets = Detections.from_quads(np.float32([[[2, 2], [20, 2], [20, 10], [2, 10]]]), [0.9])
    assert np.array_equal(annotate(image, dets, []), image)
    assert not np.array_equal(annotate(image, dets), image)


def test_a_stream_that_ends_gets_a_playable_video_while_the_others_go_on(tmp_path):
    """Its file was finished (and playable) only when the whole run ended: a camera running
    beside it, and a process killed meanwhile, left it unplayable."""
    av = pytest.importorskip("av")
    sink = FilteredSink(VideoSink(lambda f: tmp_path / f"s{f.stream}.mp4"), lambda f: True)
    for i in range(6):
        for stream in (0, 1):
            frame = make_frame(i, stream)
            sink.write(frame, dets_for(frame))
    sink.end_stream(0)
    with av.open(str(tmp_path / "s0.mp4")) as container:  # stream 1 still being written
        assert sum(1 for _ in container.decode(video=0)) == 6
    sink.close()


def test_a_frame_the_encoder_refuses_is_one_error_naming_the_file(tmp_path):
    pytest.importorskip("av")
    sink = VideoSink(tmp_path / "tall.mp4", fps=10)
    frame = Frame(np.zeros((20000, 64, 3), np.uint8), 0, 0.0, "tall", 0)
    with pytest.raises(DbrtError, match=r"cannot write the video .*tall.mp4 \(64x20000\)"):
        sink.write(frame, Detections.from_quads(QUAD[:0], []))
    with pytest.raises(DbrtError):  # nor can it be finished
        sink.close()


def test_a_label_at_the_right_edge_is_drawn_whole():
    pytest.importorskip("PIL")
    from pipeline.text_draw import TextAnnotator

    image = np.zeros((60, 200, 3), np.uint8)
    quad = np.array([[[170, 30], [199, 30], [199, 50], [170, 50]]], np.float32)
    dets = Detections.from_quads(quad, [0.9], data={"text": np.array(["HELLOWORLD"]),
                                                    "text_score": np.array([0.9], np.float32)})
    out = TextAnnotator(show_score=True).annotate(image.copy(), dets)
    drawn = np.nonzero(out[:30].any(axis=2).any(axis=0))[0]
    assert drawn.min() < 150 and drawn.max() <= 199  # moved left, not cut at the edge


def test_non_finite_numbers_are_written_as_null_so_every_line_is_json():
    """A NaN confidence (a recognizer overflowing in FP16) or an infinite timestamp made the
    line unreadable to strict parsers (JavaScript, Go): NaN / Infinity are not JSON."""
    from pipeline.detections import FrameResult

    frame = Frame(np.zeros((48, 64, 3), np.uint8), 0, float("inf"), "cam", 0)
    dets = Detections.from_quads(QUAD, [float("nan")], data={
        "text": np.array(["a"]), "text_score": np.array([np.nan], np.float32)})
    line = FrameResult(frame, dets).to_json()
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}"))
    assert record["timestamp"] is None and record["detections"][0]["score"] is None
    assert record["detections"][0]["text_score"] is None


def written_times(av, path):
    with av.open(str(path)) as container:
        return [round(f.time, 4) for f in container.decode(video=0)]


def test_a_video_is_timed_by_its_frames_timestamps(tmp_path):
    """A variable-frame-rate phone recording (and a live stream that dropped frames) was
    written at one frame per 1 / average rate: its fast part played slower, the whole
    recording ended early or late against the JSON lines' timestamps."""
    av = pytest.importorskip("av")
    times = [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 1.4, 1.5]  # 10 fps, then 20, then a gap
    with VideoSink(tmp_path / "v.mp4", fps_by_stream={0: 10}) as sink:
        for i, t in enumerate(times):
            sink.write(Frame(np.zeros((48, 64, 3), np.uint8), i, 7 + t, "phone", 0),
                       Detections.from_quads(QUAD[:0], []))
    assert written_times(av, tmp_path / "v.mp4") == times


def test_a_restarted_or_missing_clock_goes_on_at_the_nominal_rate(tmp_path):
    """A live stream's timestamps restart at 0 after a reconnect; frames without one (an
    image folder) come one nominal frame apart. Time never goes back in the file."""
    av = pytest.importorskip("av")
    stamps = [5.0, 5.5, 6.0, 0.0, 0.5, None, None, 1.5]
    with VideoSink(tmp_path / "v.mp4", fps_by_stream={0: 4}) as sink:
        for i, t in enumerate(stamps):
            sink.write(Frame(np.zeros((48, 64, 3), np.uint8), i, t, "cam", 0),
                       Detections.from_quads(QUAD[:0], []))
    assert written_times(av, tmp_path / "v.mp4") == [0, 0.5, 1.0, 1.25, 1.75, 2.0, 2.25, 2.75]


def test_a_live_clock_that_jumps_ahead_goes_on_at_arrival_time(tmp_path):
    """A camera whose clock is set forward an hour mid-stream: the annotated video showed the
    last picture for that hour. A live stream goes on at the frames' arrival time; a gap in
    both its clock and its arrival (a stall) stays; a file keeps its timestamps' gaps."""
    av = pytest.importorskip("av")
    stamps = [0.0, 0.5, 1.0, 3601.0, 3601.5, 3605.5]
    arrived = [0.0, 0.5, 1.0, 1.5, 2.0, 6.0]
    for live, expected in ((True, [0, 0.5, 1.0, 1.5, 2.0, 6.0]), (False, stamps)):
        with VideoSink(tmp_path / f"{live}.mp4", fps_by_stream={0: 2},
                       live_streams={0} if live else ()) as sink:
            for i, (t, at) in enumerate(zip(stamps, arrived)):
                sink.write(Frame(np.zeros((48, 64, 3), np.uint8), i, t, "cam", 0, t_read=100 + at),
                           Detections.from_quads(QUAD[:0], []))
        assert written_times(av, tmp_path / f"{live}.mp4") == expected


def _killed_and_closed(av, path, frames, **sink_options) -> int:
    """Writes `frames` to a VideoSink at `path`, copies the file as a kill would leave it,
    closes the sink; returns how many frames the copy decodes to (the closed file: all)."""
    sink = VideoSink(path, fps_by_stream={0: 10}, **sink_options)
    for frame in frames:
        sink.write(frame, Detections.from_quads(QUAD[:0], []))
    killed = path.with_name("killed.mp4")
    killed.write_bytes(path.read_bytes())  # the file as a kill leaves it
    sink.close()
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(frames)
    # closed cleanly, it starts with an index of its fragments: without one, a browser showed
    # the first fragments' length (5.6 s of a 38 s video)
    assert b"sidx" in path.read_bytes()[:4096]
    with av.open(str(killed)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_live_streams_video_stays_playable_when_the_run_is_killed(tmp_path):
    """A plain MP4 is unreadable until its index is written at the close: a SIGKILL lost the
    whole annotated video of a live run. Its fragments are on disk as they are written."""
    av = pytest.importorskip("av")
    frames = [Frame(np.full((48, 64, 3), 4 * i, np.uint8), i, i / 10, "cam", 0, t_read=i / 10)
              for i in range(60)]  # 6 s at 10 fps: fragments of 2 s
    assert _killed_and_closed(av, tmp_path / "live.mp4", frames, live_streams={0}) >= 40


def test_a_files_video_stays_playable_when_the_run_is_killed_and_starts_at_zero(tmp_path):
    """A file run's annotated MP4 was a plain one, unreadable until its close: a run killed
    outright (an out-of-memory kill, a power cut) an hour into a long recording lost all of it.
    It keeps x264's B-frames (live streams drop them for latency), whose decoding delay must
    not shift its start (a fragmented MP4's header written first has no edit list)."""
    av = pytest.importorskip("av")
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    frames = [Frame(np.broadcast_to(np.roll(ramp, 2 * i)[None, :, None], (48, 64, 3)).copy(),
                    i, i / 10, "clip.mp4", 0) for i in range(60)]  # a moving picture: B-frames
    assert _killed_and_closed(av, tmp_path / "file.mp4", frames) >= 40
    with av.open(str(tmp_path / "file.mp4")) as container:
        assert container.streams.video[0].codec_context.has_b_frames
    assert written_times(av, tmp_path / "file.mp4") == [round(i / 10, 4) for i in range(60)]


def test_a_fixed_rate_ignores_timestamps(tmp_path):
    av = pytest.importorskip("av")
    with VideoSink(tmp_path / "v.mp4", fps=5) as sink:
        for i, t in enumerate([0.0, 0.01, 3.0, 3.5]):
            sink.write(Frame(np.zeros((48, 64, 3), np.uint8), i, t, "clip", 0),
                       Detections.from_quads(QUAD[:0], []))
    assert written_times(av, tmp_path / "v.mp4") == [0, 0.2, 0.4, 0.6]


def test_grey_frames_are_annotated_and_encoded_in_colour(tmp_path):
    """A Source of one's own giving grey frames: the detector takes them, but the video sink
    failed at the first frame in PyAV and the outlines were drawn black."""
    av = pytest.importorskip("av")
    grey = Frame(np.full((48, 64), 90, np.uint8), 0, 0.0, "grey", 0)
    drawn = annotate(grey.image, dets_for(grey))
    assert drawn.shape == (48, 64, 3) and drawn[20, 10][1] > 150  # a green outline
    with VideoSink(tmp_path / "g.mp4") as sink:
        sink.write(grey, dets_for(grey))
    with av.open(str(tmp_path / "g.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1


def test_texts_without_scores_are_drawn():
    """Texts from a recognizer of one's own (a text column, no text_score) drew nothing."""
    from pipeline.text_draw import TextAnnotator

    pytest.importorskip("PIL")
    image = np.zeros((60, 120, 3), np.uint8)
    dets = Detections.from_quads(np.float32([[[10, 30], [100, 30], [100, 50], [10, 50]]]), [0.9],
                                 {"text": np.array(["EXIT"])})
    for show_score in (False, True):
        drawn = TextAnnotator(show_score=show_score).annotate(image.copy(), dets)
        assert (drawn != image).any()


def test_an_image_that_cannot_be_written_is_an_os_error_naming_it(tmp_path, monkeypatch):
    """ImageSink had its own imwrite check and message; it now fails as every image write of
    the project does (dbnet.files.write_image), which the CLI prints as 'FILE: reason'."""
    import cv2

    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)
    sink = ImageSink(lambda f: tmp_path / f"{f.index}.png")
    frame = make_frame(0)
    with pytest.raises(OSError, match="could not write the image") as failed:
        sink.write(frame, dets_for(frame))
    assert failed.value.filename == str(tmp_path / "0.png") and sink.written == 0


def test_a_full_disk_under_the_video_is_an_error_naming_it(tmp_path, monkeypatch):
    import errno

    pytest.importorskip("av")
    sink = VideoSink(tmp_path / "v.mp4", fps=10)
    sink.write(make_frame(0), dets_for(make_frame(0)))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink.encoders[0], "container", type("Full", (), {"mux": full, "close": full})())
    with pytest.raises(DbrtError, match=r"cannot write the video .*v\.mp4 \(64x48\): No space left"):
        sink.write(make_frame(1), dets_for(make_frame(1)))


def test_two_streams_on_one_video_file_are_an_error_not_a_lost_video(tmp_path):
    """VideoSink("same.mp4") with two sources opened two encoders on one file: half the
    frames were lost without a word."""
    sink = VideoSink(tmp_path / "same.mp4")
    sink.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0, "a.mp4", 0), Detections.from_quads(QUAD[:0], []))
    with pytest.raises(DbrtError, match="streams 0 and 1 would write the same video"):
        sink.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0, "b.mp4", 1), Detections.from_quads(QUAD[:0], []))
    sink.close()


def test_a_closed_video_sink_says_so_when_written_again(tmp_path):
    """A VideoSink reused for a second run said 'streams 0 and 0 would write the same video'."""
    sink = VideoSink(tmp_path / "once.mp4")
    sink.write(make_frame(0), dets_for(make_frame(0)))
    sink.close()
    with pytest.raises(DbrtError, match=r"VideoSink \(.*once\.mp4\) is closed"):
        sink.write(make_frame(1), dets_for(make_frame(1)))


def test_a_slow_live_runs_fragments_still_come_every_two_seconds_of_video(tmp_path):
    """Keyframes (so fragments) came every 50 frames written: at 4 frames a second out of a
    25 fps stream, 13 s of video, most of it lost to a kill."""
    av = pytest.importorskip("av")
    with VideoSink(tmp_path / "slow.mp4", fps_by_stream={0: 25}, live_streams={0}) as sink:
        for i in range(120):  # 30 s of a still scene (no scene cut), 4 frames a second written
            sink.write(Frame(np.full((48, 64, 3), 100, np.uint8), i, i / 4, "cam", 0, t_read=i / 4),
                       Detections.from_quads(QUAD[:0], []))
    with av.open(str(tmp_path / "slow.mp4")) as container:
        keys = [float(f.time) for f in container.decode(video=0) if f.key_frame]
    assert len(keys) >= 14 and max(b - a for a, b in zip(keys, keys[1:])) <= 2.25


def _noisy_frames():
    """Frames the encoder has work on (noise), at a size whose rows are no multiple of 16
    bytes, one whose odd side is cropped (a view of the annotated copy) and a new size that
    is letterboxed into the file."""
    rng = np.random.default_rng(7)
    sizes = [(50, 70)] * 3 + [(51, 71)] * 2 + [(96, 128)] * 2
    return [Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), i, i / 10, "src", 0)
            for i, (h, w) in enumerate(sizes)]


def test_the_annotated_video_is_byte_for_byte_what_pyavs_copying_conversion_gave(tmp_path, monkeypatch):
    """The encoder takes the annotated picture as it lies in memory now instead of PyAV's
    from_ndarray copy; the file it writes is the same, byte for byte."""
    av = pytest.importorskip("av")
    from pipeline import sinks

    def write(path):
        with VideoSink(path, fps=10) as sink:
            for frame in _noisy_frames():
                sink.write(frame, dets_for(frame))
        return path.read_bytes()

    now = write(tmp_path / "now.mp4")
    monkeypatch.setattr(sinks.VideoEncoder, "_wrap", raising=False,
                        value=lambda self, image: av.VideoFrame.from_ndarray(image, format="bgr24"))
    assert now == write(tmp_path / "copied.mp4")


def test_the_video_sink_hands_the_annotated_picture_to_the_encoder_without_copying_it(tmp_path):
    """PyAV's from_ndarray copied every annotated frame (to bytes, then row by row) before the
    encoder's own conversion to yuv420p; the picture is now wrapped where it lies."""
    av = pytest.importorskip("av")
    if not hasattr(av.VideoFrame, "from_numpy_buffer"):
        pytest.skip("this PyAV has no VideoFrame.from_numpy_buffer")
    wrapped, copied = [], []

    class Spy:
        def __getattr__(self, name):
            return getattr(av, name)

    Spy.VideoFrame = type("VideoFrame", (), dict(
        from_numpy_buffer=staticmethod(lambda image, **kw: wrapped.append(image) or
                                       av.VideoFrame.from_numpy_buffer(image, **kw)),
        from_ndarray=staticmethod(lambda image, **kw: copied.append(image) or
                                  av.VideoFrame.from_ndarray(image, **kw))))
    frames = _noisy_frames()
    with VideoSink(tmp_path / "a.mp4", fps=10) as sink:
        sink.write(frames[0], dets_for(frames[0]))
        sink.encoders[0]._av = Spy()
        for frame in frames[1:]:
            sink.write(frame, dets_for(frame))
    assert copied == [] and len(wrapped) == len(frames) - 1
    assert all(image.strides[1:] == (3, 1) for image in wrapped)


def test_the_sinks_annotations_name_what_exists():
    """An annotation naming a class that moved away (the video encoder, now pipeline.encoder)
    breaks typing.get_type_hints, which documentation tools and type checkers call."""
    import typing

    from pipeline import sinks

    for cls in (sinks.VideoSink, sinks.ImageSink, sinks.StreamEnds):
        for name, member in vars(cls).items():
            if callable(member):
                typing.get_type_hints(member)


def test_an_image_sink_given_a_file_name_says_it_takes_a_function(tmp_path):
    """ImageSink("out.jpg") failed in the run's sink thread: 'str' object is not callable."""
    with pytest.raises(TypeError, match="ImageSink takes a function of the frame"):
        ImageSink(tmp_path / "out.jpg")


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf"), "25", True])
def test_a_video_sinks_fps_that_is_no_rate_is_refused_when_made(tmp_path, fps):
    """fps=0 was taken for 'none given' (25 FPS, timestamps used); a negative or text rate
    failed at the first frame, in the pipeline's sink thread."""
    with pytest.raises(ValueError, match=r"^VideoSink\(fps=\) must be a number of frames per "
                                         r"second > 0"):
        VideoSink(tmp_path / "a.mp4", fps=fps)
    assert not list(tmp_path.iterdir())


class _WriteOnly:
    """A sink of one's own: write() and nothing else."""

    def __init__(self):
        self.frames = 0

    def write(self, frame, detections):
        self.frames += 1


def test_a_filtered_sink_of_ones_own_with_write_alone_runs_to_the_end(tmp_path):
    """FilteredSink called its sink's end_stream() and close() unasked: a sink with write()
    alone, which a Pipeline takes, failed at its source's end in the sink thread."""
    from media import FakeDetector, write_video
    from pipeline.runner import Pipeline

    mine = _WriteOnly()
    videos = [write_video(tmp_path / f"{n}.mp4", frames=n) for n in (3, 6)]
    Pipeline(videos, FakeDetector(), sinks=[FilteredSink(mine, lambda f: f.stream == 1)]).run()
    assert mine.frames == 6


def test_a_filtered_sink_passes_on_ending_and_stopping_and_its_text_events_need_tracks(tmp_path):
    """A wrapped TextEventSink was never told the run was ending (its last end lines came at
    its close, after an MQTT sink listed before it had closed), never followed the tracker,
    and without track=True wrote nothing instead of being refused."""
    from pipeline.arguments import check_events_have_tracks
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    told = []

    class Told(JsonlSink):
        def ending(self):
            told.append("ending")

        def stopping(self):
            told.append("stopping")

    wrapped = FilteredSink(Told(tmp_path / "d.jsonl"), lambda f: True)
    wrapped.stopping()
    wrapped.ending()
    wrapped.close()
    assert told == ["stopping", "ending"]
    events = TextEventSink(tmp_path / "events.jsonl")
    only_one = FilteredSink(FilteredSink(events, lambda f: f.stream == 0), lambda f: True)
    with pytest.raises(ValueError, match="TextEventSink needs track=True"):
        check_events_have_tracks([only_one], None)
    tracker = TextTracker()
    tracker.lead([only_one])
    assert events.book.lost_frames == tracker.horizon
    only_one.close()
