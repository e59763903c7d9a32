"""A segment of `--segment-time` whose wall-clock time is over is finished even when no frame
comes (pipeline/segments.py, the sinks' `finish_segments`): a camera that sends nothing for
hours left the file named for 14:00 open until its next frame at 18:00, so a tool picking up
the finished segments never saw it finished and `--keep-segments` did not move on."""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

from pipeline.runner import Pipeline
from pipeline.segments import Segments
from pipeline.sinks import JsonlSink, VideoSink
from pipeline.sources import LiveSource

from media import FakeDetector, frame_image, index_of

T0 = 1_796_000_000.0  # a multiple of 10 s


class SetClock:
    """Unix time that moves only when the test sets it."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class QuietCamera(LiveSource):
    """A live camera, connected, that sends a frame only when the test feeds one (None: its
    stream ends): between them it is silent, as one whose picture stopped for hours."""

    kind = "simulated"

    def __init__(self):
        super().__init__("quiet", None)
        self.feed: "queue.Queue" = queue.Queue()

    def _connect(self):
        pass

    def _read(self):
        index = self.feed.get()
        return None if index is None else (frame_image(index, 48, 64), index / 10)

    def _disconnect(self):
        pass


def _until(done, what: str, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def _open_files() -> set:
    """The files this process holds open."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return found


def _decoded(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        return [index_of(f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]


def _lines(path: Path) -> list:
    return [json.loads(line)["frame_index"] for line in path.read_text().splitlines()]


def test_a_silent_streams_segment_is_finished_when_its_time_is_over(tmp_path):
    clock = SetClock(T0 - 5)  # the run starts in the segment before T0
    segments = Segments(10, keep=2, clock=clock)
    jsonl = JsonlSink(tmp_path / "detections.jsonl", segments=segments)
    video = VideoSink(tmp_path / "annotated.mp4", live_streams=[0], segments=segments)
    camera = QuietCamera()
    written = []
    pipe = Pipeline([camera], FakeDetector(), sinks=[jsonl, video],
                    callbacks=[lambda frame, detections: written.append(frame.index)])
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()

    def send(index: int) -> None:
        camera.feed.put(index)  # the picture's number (frame_index counts from 0)
        _until(lambda: len(written) == index, f"frame {index} written")

    try:
        send(1)  # the segment before T0
        clock.now = T0 + 1
        send(2)
        send(3)  # the segment from T0; then the camera sends nothing
        first = {kind: tmp_path / f"{kind}-20261130T005320Z.{ext}"
                 for kind, ext in (("detections", "jsonl"), ("annotated", "mp4"))}
        assert all(str(path) in _open_files() for path in first.values())  # still its segment
        clock.now = T0 + 25  # past its end and through the next segment: no frame comes
        _until(lambda: not {str(p) for p in first.values()} & _open_files(),
               "the segment from T0 closed without a frame of the next")
        assert _decoded(first["annotated"]) == [2, 3]  # a whole video, finished
        assert _lines(first["detections"]) == [1, 2]
        send(4)  # the camera is back, in the segment from T0 + 20
    finally:
        camera.feed.put(None)
        runner.join(10)
    assert not runner.is_alive()
    names = sorted(p.name for p in tmp_path.iterdir())
    # no file for the silent segment from T0 + 10; the one before T0 deleted (2 kept)
    assert names == ["annotated-20261130T005320Z.mp4", "annotated-20261130T005340Z.mp4",
                     "detections-20261130T005320Z.jsonl", "detections-20261130T005340Z.jsonl"]
    assert _lines(tmp_path / "detections-20261130T005340Z.jsonl") == [3]
    assert _decoded(tmp_path / "annotated-20261130T005340Z.mp4") == [4]
    assert segments.removed == 2  # the detections and the video of the segment before T0


def _event_lines(path) -> list:
    """(event, track id) of each line of an events file."""
    return [(e["event"], e["track_id"]) for e in map(json.loads, path.read_text().splitlines())]


def test_an_events_segment_over_is_closed_and_the_last_end_lines_go_to_the_newest(tmp_path):
    """The sink thread's tick closes the events file of a segment that is over; the end lines
    written at the run's end (no frame) go to the newest segment, and are still written."""
    import numpy as np

    from pipeline.detections import Detections
    from pipeline.reading.events import TextEventSink
    from pipeline.sources import Frame

    def tracked(index: int, ids: list) -> tuple:
        frame = Frame(np.zeros((120, 200, 3), np.uint8), index, index / 25, "cam")
        boxes = [[[x, 0], [x + 40, 0], [x + 40, 16], [x, 16]] for x in (0, 60)]
        quads = np.float32(boxes[:len(ids)])
        data = {"track_id": np.asarray(ids), "text": np.asarray(["A", "B"][:len(ids)], str),
                "text_score": np.full(len(ids), 0.9)}
        return frame, Detections.from_quads(quads, np.full(len(ids), 0.8), data)

    clock = SetClock(T0 - 5)
    segments = Segments(10, clock=clock)
    sink = TextEventSink(tmp_path / "events.jsonl", lost_frames=1, segments=segments)
    clock.now = T0 + 1
    sink.write(*tracked(0, [1, 2]))  # their start lines in the segment from T0
    sink.write(*tracked(1, [1]))  # track 2 ends: its line there too
    sink.finish_segments(idle=False)
    first = tmp_path / "events-20261130T005320Z.jsonl"
    assert str(first) in _open_files()
    clock.now = T0 + 25  # no frame comes
    sink.finish_segments(idle=True)
    assert str(first) not in _open_files()
    assert _event_lines(first) == [("start", 1), ("start", 2), ("end", 2)]
    sink.ending()  # track 1's end line, without a frame: the newest segment
    sink.close()
    newest = tmp_path / "events-20261130T005340Z.jsonl"
    assert _event_lines(newest) == [("end", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events-20261130T005315Z.jsonl", first.name, newest.name]  # the run's first, empty


def test_the_end_lines_of_an_outage_found_after_a_boundary_go_to_the_newest_segment(tmp_path):
    """The sink thread's idle tick told the sinks of a lost stream before reading the clock
    again: when the outage was found in the first tick after a boundary, its tracks' end lines
    went to the segment that was over (then closed), in the next tick to the newest one. Now
    the clock is read first: the lines written then go to the segment current (README)."""
    import numpy as np

    from pipeline.detections import Detections
    from pipeline.reading.events import TextEventSink
    from pipeline.sinks import StreamEnds
    from pipeline.sources import Frame
    from pipeline.sources.base import SourceStats

    class LostCamera:  # a live source, its frames all written, that lost its connection
        stream, state, stats = 0, "streaming", SourceStats()

    def frame_with_track(index: int) -> tuple:
        frame = Frame(np.zeros((120, 200, 3), np.uint8), index, index / 25, "cam")
        data = {"track_id": np.asarray([7]), "text": np.asarray(["A"], str),
                "text_score": np.full(1, 0.9)}
        quads = np.float32([[[0, 0], [40, 0], [40, 16], [0, 16]]])
        return frame, Detections.from_quads(quads, np.full(1, 0.8), data)

    clock, camera = SetClock(T0 + 1), LostCamera()
    segments = Segments(10, clock=clock)
    sink = TextEventSink(tmp_path / "events.jsonl", segments=segments)
    ends = StreamEnds([camera], [sink])
    frame, detections = frame_with_track(0)
    camera.stats.read += 1
    camera.stats.delivered += 1
    sink.write(frame, detections)
    ends.frame_written(frame)
    camera.state = "reconnecting"  # found lost only after the segment from T0 is over
    clock.now = T0 + 11
    ends.idle()
    sink.close()
    first, newest = (tmp_path / "events-20261130T005321Z.jsonl",  # the run's start
                     tmp_path / "events-20261130T005330Z.jsonl")
    # its frame's start line, and not a line written after its time was over
    assert _event_lines(first) == [("start", 7)]
    assert _event_lines(newest) == [("end", 7)]


def test_report_json_is_rewritten_when_a_stream_back_from_an_outage_opens_its_files(tmp_path):
    """report.json was rewritten when the segments' start moved: while a stream is down the
    idle tick moves it at the boundary, so the files opened when the stream came back, in that
    same segment, and the oldest deleted for --keep-segments, were not in the report until
    --report-every (60 s) later. It is rewritten when a file is opened too."""
    from argparse import Namespace

    import numpy as np

    from pipeline.commands._report import live_report
    from pipeline.detections import Detections
    from pipeline.sources import Frame

    clock = SetClock(T0 + 1)
    segments = Segments(10, keep=1, clock=clock)
    jsonl = JsonlSink(tmp_path / "detections.jsonl", segments=segments)

    class Run:  # what live_report reads of a Pipeline before it runs
        sinks = [jsonl]

    report = live_report(Run(), tmp_path, Namespace(report_every=60.0))
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0, "cam")
    jsonl.write(frame, Detections.empty())
    jsonl.finish_segments(idle=False)
    clock.now = T0 + 15  # the stream is down: the idle tick closes the first segment
    jsonl.finish_segments(idle=True)
    down = report.turned()
    clock.now = T0 + 16  # back in the same segment: its file opens, the first is deleted
    jsonl.write(Frame(np.zeros((8, 8, 3), np.uint8), 1, 0.04, "cam"),
                Detections.empty())
    jsonl.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections-20261130T005330Z.jsonl"]
    assert report.turned() != down  # report.json rewritten within a second
