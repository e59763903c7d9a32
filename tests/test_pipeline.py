"""The threaded pipeline: order, routing across batched sources, errors from every stage,
clean stop, live drops, and the real model end to end on a generated video."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from engine.loader import RunnerOptions
from pipeline.detector import Detector
from pipeline.runner import Pipeline
from pipeline.sinks import CallbackSink, JsonlSink
from pipeline.sources import Reconnect, VideoFileSource

from media import FakeDetector, SimulatedCamera, frame_image, index_of, until, write_video

STAGE_THREADS = ("decode:", "preprocess", "infer", "postprocess", "sink", "read:",
                 "source-closer")


def _detector(model):
    return Detector(model, options=RunnerOptions(threads=1))


def pipeline_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith(STAGE_THREADS)]


@pytest.fixture(autouse=True)
def no_threads_left():
    yield
    deadline = time.monotonic() + 30
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pipeline_threads() == []


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return [write_video(folder / f"v{n}.mp4", frames=n) for n in (7, 12, 5)]


def test_single_video_every_frame_in_order(videos):
    seen = []
    pipe = Pipeline([videos[1]], FakeDetector(), callbacks=[lambda f, d: seen.append(f.index)])
    results = list(pipe)
    assert [f.index for f, _ in results] == list(range(12)) == seen
    assert [index_of(f.image) for f, _ in results] == list(range(12))
    assert all(f.source == str(videos[1]) and len(d) == 1 for f, d in results)
    report = pipe.report()
    assert report["frames"] == 12 and report["dropped"] == 0 and report["fps"] > 0
    assert all(report["stages"][s]["count"] > 0 for s in ("decode", "preprocess", "infer", "postprocess", "sink"))
    assert report["end_to_end"]["count"] == 12 and "p99_ms" in report["end_to_end"]


def test_several_sources_batched_route_results_in_order(videos):
    detector = FakeDetector()
    pipe = Pipeline(videos, detector, batch=3, batch_timeout=0.2)
    by_stream = {0: [], 1: [], 2: []}
    for frame, dets in pipe:
        by_stream[frame.stream].append((frame.index, index_of(frame.image), frame.source))
    for stream, path in enumerate(videos):
        n = (7, 12, 5)[stream]
        assert [i for i, _, _ in by_stream[stream]] == list(range(n))
        assert all(i == j and src == str(path) for i, j, src in by_stream[stream])
    assert max(detector.batch_sizes) > 1 and sum(detector.batch_sizes) == 24
    report = pipe.report()["batch_size"]
    assert report["count"] == len(detector.batch_sizes)
    assert report["histogram"] == {str(n): detector.batch_sizes.count(n) for n in set(detector.batch_sizes)}


def test_report_names_each_source_by_the_stream_its_result_lines_carry(videos):
    """report.json's sources join the result lines, events and MQTT messages on `stream`."""
    streams = {}
    pipe = Pipeline([videos[2], videos[0]], FakeDetector())
    for frame, _ in pipe:
        streams[frame.stream] = frame.source
    report = pipe.report()["sources"]
    assert {s["stream"]: s["name"] for s in report} == streams == {0: str(videos[2]),
                                                                   1: str(videos[0])}


def test_batches_never_mix_input_sizes(tmp_path):
    small = write_video(tmp_path / "small.mp4", frames=6, height=48, width=64)
    large = write_video(tmp_path / "large.mp4", frames=6, height=64, width=96)
    detector = FakeDetector(input_size=None)  # input size follows the frame size
    results = list(Pipeline([small, large], detector, batch=4, batch_timeout=0.2))
    assert len(results) == 12  # FakeDetector.prepare asserts one size per batch
    for stream in (0, 1):
        assert [f.index for f, _ in results if f.stream == stream] == list(range(6))


@pytest.mark.parametrize("stage", ["prepare", "infer", "postprocess"])
def test_detector_failure_reaches_the_caller(videos, stage):
    pipe = Pipeline([videos[1]], FakeDetector(fail_in=stage, fail_after=2))
    with pytest.raises(RuntimeError, match=f"boom in {stage}"):
        list(pipe)


@pytest.mark.parametrize("batch", [1, 2])
def test_results_computed_before_a_failure_still_reach_the_sinks(videos, batch):
    """Post-processing fails on its 5th batch while the sink is held back: the results of the
    first four wait downstream of the failure and are written, not dropped."""
    pipe = Pipeline([videos[1]], FakeDetector(fail_in="postprocess", fail_after=4), batch=batch,
                    queue_size=4)
    written = []

    def held_back_sink(frame, dets):
        deadline = time.monotonic() + 10
        while pipe.control.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        written.append(frame.index)

    pipe.callbacks.append(held_back_sink)
    yielded = []
    with pytest.raises(RuntimeError, match="boom in postprocess"):
        for frame, _ in pipe:
            yielded.append(frame.index)
    assert written == yielded == list(range(4 * batch))
    assert pipe.report()["lost"] == pipe.report()["sources"][0]["delivered"] - 4 * batch


def test_a_failure_after_inference_does_not_wait_for_a_model_server(videos):
    """Once what the stages after the failure held is written, inference is cancelled: a run
    whose model server is away waited for it (up to its reconnect limit) before raising."""
    class ServerAway(FakeDetector):
        def __init__(self):
            super().__init__()
            self.cancelled = threading.Event()

        def infer(self, batch):
            if self.calls["infer"] >= 2:
                self.cancelled.wait(60)
            return super().infer(batch)

        def cancel(self):
            self.cancelled.set()

    def disk_full(frame, dets):
        raise OSError("No space left on device")

    detector = ServerAway()
    with pytest.raises(OSError, match="No space left"):
        Pipeline([videos[1]], detector, batch=1, queue_size=1, callbacks=[disk_full]).run()
    assert detector.cancelled.is_set()


def test_sink_and_callback_failures_reach_the_caller(videos):
    def bad_callback(frame, dets):
        if frame.index == 3:
            raise ValueError("callback broke")

    with pytest.raises(ValueError, match="callback broke"):
        Pipeline([videos[1]], FakeDetector(), callbacks=[bad_callback]).run()
    bad_sink = CallbackSink(lambda f, d: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        Pipeline([videos[1]], FakeDetector(), sinks=[bad_sink]).run()


def test_decode_failure_reaches_the_caller(videos):
    class BrokenVideo(VideoFileSource):
        def __iter__(self):
            for frame in super().__iter__():
                if frame.index == 4:
                    raise OSError("disk vanished")
                yield frame

    with pytest.raises(OSError, match="disk vanished"):
        Pipeline([BrokenVideo(videos[1]), videos[0]], FakeDetector(), batch=2).run()


def test_live_source_failure_reaches_the_caller():
    camera = SimulatedCamera(total=10_000, fps=200, fail_at={5}, refuse=10,
                             reconnect=Reconnect(retries=1, delay=0.01))
    from engine.errors import SourceError

    with pytest.raises(SourceError, match="gave up"):
        Pipeline([camera], FakeDetector()).run()


def test_stop_drains_every_frame_already_read(tmp_path):
    # A clip far longer than the bounded read-ahead (a few frames per queue), so the stop
    # always comes before the end of the file, however the threads are scheduled.
    video = write_video(tmp_path / "long.mp4", frames=300)
    out = tmp_path / "d.jsonl"
    pipe = Pipeline([video], FakeDetector(delay_s=0.01), sinks=[JsonlSink(out)], queue_size=2)
    results = []
    for frame, _ in pipe:
        results.append(frame.index)
        if frame.index == 2:
            pipe.stop()
    read = pipe.sources[0].stats.read
    assert results == list(range(len(results))) and len(results) == read < 300
    lines = out.read_text().splitlines()
    assert [json.loads(line)["frame_index"] for line in lines] == results


class _StopWatchingSink(CallbackSink):
    """Records whether the run told it it was stopped before closing it."""

    def __init__(self):
        super().__init__(lambda frame, detections: None)
        self.calls = []

    def stopping(self):
        self.calls.append("stopping")

    def close(self):
        self.calls.append("close")


@pytest.mark.parametrize("stopped", [False, True])
def test_sinks_are_told_a_stopped_run_is_stopping_before_their_close(tmp_path, stopped):
    """A restream's close waited its full 5 s after a stop's drain (past docker stop's 10 s
    with a slow server): the sinks now learn that the run was stopped, not ended."""
    video = write_video(tmp_path / "clip.mp4", frames=40 if stopped else 3)
    sink = _StopWatchingSink()
    pipe = Pipeline([video], FakeDetector(), sinks=[sink], queue_size=2)
    for frame, _ in pipe:
        if stopped and frame.index == 1:
            pipe.stop()
    assert sink.calls == (["stopping", "close"] if stopped else ["close"])


def test_breaking_out_of_the_loop_stops_the_threads(videos):
    detector = FakeDetector()
    pipe = Pipeline([videos[1]], detector)
    for frame, _ in pipe:
        if frame.index == 1:
            break
    del pipe  # the generator's cleanup aborts and joins (checked by the autouse fixture)


def test_slow_pipeline_drops_live_frames_and_reports_them():
    camera = SimulatedCamera(total=10_000, fps=1000, reconnect=None)
    pipe = Pipeline([camera], FakeDetector(delay_s=0.02), max_frames=15)
    report = pipe.run()
    assert report["frames"] == 15
    assert report["dropped"] > 0 and report["sources"][0]["dropped"] == report["dropped"]


def test_max_frames_and_total(videos):
    pipe = Pipeline(videos, FakeDetector(), max_frames=6)
    assert pipe.total_frames == 6 + 6 + 5
    assert len(list(pipe)) == 17


def test_pipeline_runs_once_and_closes_its_sinks(videos, tmp_path):
    sink = JsonlSink(tmp_path / "x.jsonl")
    pipe = Pipeline([videos[2]], FakeDetector(), sinks=[sink])
    pipe.run()
    assert sink._fh.closed
    with pytest.raises(RuntimeError, match="runs once"):
        pipe.run()


def test_real_model_end_to_end_on_generated_video(tmp_path, tiny_onnx):
    video = write_video(tmp_path / "clip.mp4", frames=6, height=90, width=160)
    out = tmp_path / "dets.jsonl"
    detector = Detector(tiny_onnx, lambda spec: spec.replace(box_thresh=0.0, thresh=0.5),
                        options=RunnerOptions(threads=1))
    pipe = Pipeline([video], detector, close_detector=True, sinks=[JsonlSink(out)], batch=2)
    report = pipe.run()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert report["frames"] == 6 == len(lines)
    assert [line["frame_index"] for line in lines] == list(range(6))
    assert all(line["frame_size"] == [90, 160] for line in lines)
    assert report["model"]["runner"] == "onnxruntime" and not pipe.detector.runner.is_active


def test_image_folder_through_the_pipeline(tmp_path, tiny_onnx):
    import cv2

    for i, (h, w) in enumerate([(40, 60), (64, 64), (40, 60)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame_image(i, h, w))
    results = list(Pipeline([tmp_path], _detector(tiny_onnx), close_detector=True, batch=3))
    assert [f.source.split("/")[-1] for f, _ in results] == ["0.png", "1.png", "2.png"]
    assert [tuple(f.size) for f, _ in results] == [(40, 60), (64, 64), (40, 60)]


def test_switch_interval_applies_during_the_run_and_is_restored(videos):
    import sys

    before = sys.getswitchinterval()
    during = []
    Pipeline([videos[2]], FakeDetector(), switch_interval=0.001,
             callbacks=[lambda f, d: during.append(sys.getswitchinterval())]).run()
    assert during and all(abs(v - 0.001) < 1e-9 for v in during)
    assert sys.getswitchinterval() == before


def test_fps_and_elapsed_fall_and_grow_while_frames_stop_then_stay_once_finished(monkeypatch):
    """A stalled camera: its current FPS falls towards 0 and the elapsed time goes on (both
    froze at their last frame, so an alert on FPS could never fire); a finished run's stay."""
    from pipeline import metrics as metrics_module

    clock = [100.0]
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: clock[0])
    metrics = metrics_module.Metrics()
    metrics.start()
    for _ in range(10):
        clock[0] += 0.1
        metrics.frame_done(clock[0] - 0.05)
    assert metrics.current_fps == pytest.approx(10.0, rel=0.02) and metrics.elapsed == pytest.approx(1.0)
    clock[0] += 9.0  # no frame for 9 s
    assert metrics.current_fps < 1.0 and metrics.elapsed == pytest.approx(10.0)
    metrics.finish()
    clock[0] += 5.0
    assert metrics.elapsed == pytest.approx(1.0) and metrics.fps == pytest.approx(10.0)


def test_queue_depth_is_read_off_the_queue_when_its_reader_stalls(videos):
    """The depth in /metrics and /api/status is the queue's now: a stage stuck in a call
    (a hung model server) leaves its inbox full, which a sample taken on get() never shows."""
    release = threading.Event()

    class Stuck(FakeDetector):
        def infer(self, batch):
            if self.calls["infer"] == 2:
                release.wait(10)
            return super().infer(batch)

    pipe = Pipeline([videos[1]], Stuck(), batch=1, queue_size=2)
    run = iter(pipe)
    next(run)
    until(lambda: pipe.metrics.queues["prepared"].depth() == 2, "the prepared queue to fill")
    assert "read" not in pipe.metrics.queues and "tracked" not in pipe.metrics.queues
    release.set()
    assert len(list(run)) == 11


def test_metrics_percentiles_summary_and_progress_line():
    import io

    from pipeline.metrics import LatencyWindow, Metrics, Progress, format_summary

    window = LatencyWindow(window=50)
    for ms in range(1, 101):
        window.add(float(ms))
    summary = window.summary()
    assert summary["count"] == 100 and summary["mean_ms"] == 50.5  # exact over all samples
    assert summary["p50_ms"] == pytest.approx(75.5)  # percentiles over the last 50 (51..100)
    metrics = Metrics()
    metrics.start()
    for _ in range(3):
        metrics.stage("infer", 0.01)
        metrics.frame_done(time.perf_counter() - 0.02)
    report = metrics.report([{"name": "cam", "dropped": 4, "reconnects": 1}])
    assert report["frames"] == 3 and report["dropped"] == 4 and report["fps"] > 0
    assert report["end_to_end"]["p50_ms"] >= 20
    text = format_summary(report)
    assert "3 frames" in text and "infer" in text and "cam: 4 dropped, 1 reconnects" in text
    assert "inputs skipped" not in text
    skipped = metrics.report([{"name": "cam", "dropped": 0, "skipped": 2}])  # in the report only
    assert skipped["skipped"] == 2 and "(dropped 0, 2 inputs skipped)" in format_summary(skipped)
    stream = io.StringIO()
    progress = Progress(metrics, total=10, stream=stream)
    progress.update(dropped=4)
    progress.update(dropped=4)  # throttled: not a TTY, so at most one line every 5 s
    assert stream.getvalue().count("\n") == 1 and "frames 3/10" in stream.getvalue()


def test_a_latency_window_takes_its_memory_at_once():
    """A long run's memory stays flat: samples are written in place in a preallocated ring."""
    import tracemalloc

    from pipeline import metrics
    from pipeline.metrics import LatencyWindow

    window = LatencyWindow(window=1000)
    for ms in range(500):
        window.add(ms * 0.5)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for ms in range(20_000):
            window.add(ms * 0.5 + 0.25)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # what the window's own code allocated: other threads of the process (an earlier test's
    # server, a test worker's) allocate meanwhile
    ours = [tracemalloc.Filter(True, metrics.__file__)]
    grown = sum(stat.size_diff for stat in
                after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename"))
    assert grown < 4096, grown  # a deque of Python floats: 32 bytes a sample
    summary = window.summary()
    assert summary["count"] == 20_500 and summary["max_ms"] == 9999.75
    assert summary["p50_ms"] == pytest.approx((19_000 * 0.5 + 0.25 + 9999.75) / 2)  # the last 1000


class _BrokenCloseSink(JsonlSink):
    def close(self):
        super().close()
        raise OSError("disk full while closing")


def test_a_sink_failing_to_close_still_closes_the_others_and_the_detector(tmp_path, tiny_onnx):
    video = write_video(tmp_path / "clip.mp4", frames=5)
    first, broken, last = (JsonlSink(tmp_path / "a.jsonl"), _BrokenCloseSink(tmp_path / "b.jsonl"),
                           JsonlSink(tmp_path / "c.jsonl"))
    pipe = Pipeline([video], _detector(tiny_onnx), close_detector=True, sinks=[first, broken, last])
    with pytest.raises(OSError, match="disk full while closing"):
        pipe.run()
    assert first._fh.closed and last._fh.closed
    assert not pipe.detector.runner.is_active  # the detector the pipeline made is released
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 5


def test_two_pipelines_at_once_restore_the_switch_interval(videos):
    import sys

    before = sys.getswitchinterval()
    first = iter(Pipeline([videos[1]], FakeDetector(), switch_interval=0.001))
    next(first)  # first running
    second = iter(Pipeline([videos[1]], FakeDetector(), switch_interval=0.002))
    next(second)  # both running
    assert len(list(first)) == 11  # first ends while second still runs
    assert len(list(second)) == 11
    assert sys.getswitchinterval() == before


def test_shutdown_closes_every_sink_and_the_detector_when_several_fail(videos, tmp_path):
    class BrokenClose(FakeDetector):
        def close(self):
            super().close()
            raise OSError("device lost while closing")

    sinks = [_BrokenCloseSink(tmp_path / "a.jsonl"), JsonlSink(tmp_path / "b.jsonl")]
    detector = BrokenClose()
    with pytest.raises(OSError):  # the first error propagates, after every close ran
        Pipeline([videos[2]], detector, close_detector=True, sinks=sinks).run()
    assert detector.closed and all(sink._fh.closed for sink in sinks)


def test_sources_of_a_run_left_early_report_stopped():
    pipe = Pipeline([SimulatedCamera(total=100_000)], FakeDetector())
    for _ in pipe:
        break
    assert pipe.report()["sources"][0]["state"] == "stopped"


def test_the_run_error_survives_a_sink_that_then_fails_to_close(videos):
    class BrokenSink(CallbackSink):
        def close(self):
            raise OSError("close failed too")

    def write(frame, detections):
        raise ValueError("the first error")

    pipe = Pipeline([videos[1]], FakeDetector(), sinks=[BrokenSink(write)])
    with pytest.raises(ValueError, match="the first error") as info:
        pipe.run()
    assert isinstance(info.value.__context__, OSError)


def test_live_sources_keep_short_queues_so_results_stay_fresh(videos):
    live = Pipeline([SimulatedCamera(total=5)], FakeDetector())
    files = Pipeline([videos[1]], FakeDetector())
    try:
        assert (live._decoded.capacity, live._prepared.capacity) == (1, 1)
        assert (files._decoded.capacity, files._prepared.capacity) == (5, 4)
    finally:
        live.close()
        files.close()


def test_a_detector_that_fails_to_configure_releases_its_runner(tiny_onnx, monkeypatch):
    import pipeline.detector as detector_module
    from engine.errors import DbrtError

    made = []
    real = detector_module.load_runner
    monkeypatch.setattr(detector_module, "load_runner",
                        lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    with pytest.raises(DbrtError):
        Detector(tiny_onnx, input_size=(30, 30))
    assert made and not made[0].is_active


def test_leaving_a_with_block_ends_a_run_left_partway(videos):
    detector = FakeDetector()
    with Pipeline([videos[1]], detector, close_detector=True) as pipe:
        results = iter(pipe)
        next(results)
    assert detector.closed and pipeline_threads() == []
    with pytest.raises(StopIteration):
        next(results)


def test_a_pipeline_that_cannot_open_its_source_closes_what_it_was_given(tmp_path):
    detector = FakeDetector()
    sink = JsonlSink(tmp_path / "out.jsonl")
    with pytest.raises(Exception, match="no such file"):
        Pipeline([tmp_path / "missing.mp4"], detector, close_detector=True, sinks=[sink])
    assert detector.closed and sink._fh.closed


def test_one_path_is_one_source_and_bad_numbers_are_refused(videos):
    assert Pipeline(videos[1], FakeDetector()).run()["frames"] == 12
    with pytest.raises(ValueError, match="batch must be an integer >= 0"):
        Pipeline(videos[1], FakeDetector(), batch=-1)


def test_a_file_stopped_from_a_callback_reports_stopped_not_ended(tmp_path):
    video = write_video(tmp_path / "long.mp4", frames=300)
    pipe = Pipeline([video], FakeDetector(), callbacks=[lambda frame, dets: pipe.stop()])
    report = pipe.run()
    assert report["frames"] < 300 and report["sources"][0]["state"] == "stopped"


def test_sources_stopped_before_their_first_frame_report_stopped(videos):
    """A source whose stage saw the stop before reading a frame (one waiting at the live gate
    for its first) reported 'up' after the run."""
    pipe = Pipeline([SimulatedCamera(total=100_000), videos[1]], FakeDetector())
    pipe.stop()
    report = pipe.run()
    assert report["frames"] == 0 and [s["state"] for s in report["sources"]] == ["stopped"] * 2


def test_a_start_that_fails_half_way_shuts_down_what_it_began(videos, monkeypatch):
    """A thread that cannot start (the process is out of threads) ends the run like any other
    failure: the stages already started stop, the detector is closed, Ctrl-C and the switch
    interval are as they were."""
    import signal
    import sys

    from pipeline import stages

    started, real_start = [], stages.Stage.start

    def start(self):
        if len(started) == 3:
            raise RuntimeError("can't start new thread")
        started.append(self)
        real_start(self)

    monkeypatch.setattr(stages.Stage, "start", start)
    before = (signal.getsignal(signal.SIGINT), sys.getswitchinterval())
    detector = FakeDetector()
    pipe = Pipeline([str(videos[0])], detector, close_detector=True)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        pipe.run()
    assert started and not any(t.is_alive() for t in started)
    assert detector.closed
    assert (signal.getsignal(signal.SIGINT), sys.getswitchinterval()) == before


def test_a_live_source_opened_for_a_run_that_never_starts_is_disconnected():
    class Camera(SimulatedCamera):
        disconnects = 0

        def _disconnect(self):
            Camera.disconnects += 1

    camera = Camera(total=100, fps=50)  # a camera paces its frames
    with Pipeline([camera], FakeDetector()):
        pass
    assert (camera.connects, Camera.disconnects) == (1, 1)


class _HangingReconnect(SimulatedCamera):
    """A camera whose reconnect blocks until released, as FFmpeg's open of a server that
    accepts and never answers does (it cannot be interrupted before its timeout)."""

    def __init__(self):
        super().__init__(total=100_000, fail_at=(3,), reconnect=Reconnect(retries=None, delay=0.01))
        self.connecting, self.release = threading.Event(), threading.Event()

    def _connect(self):
        if self.connects:
            self.connecting.set()
            self.release.wait()
        super()._connect()


def test_a_stop_during_a_blocking_reconnect_does_not_wait_for_the_connect():
    source = _HangingReconnect()
    pipe = Pipeline([source], FakeDetector())
    run = threading.Thread(target=pipe.run)
    run.start()
    try:
        assert source.connecting.wait(10)
        pipe.stop()
        run.join(20)  # the connect is still blocked: the run ends without it
        assert not run.is_alive()
        assert source.connecting.is_set() and not source.release.is_set()
        assert any("blocking connect" in event for event in source.stats.events)
    finally:
        source.release.set()
    run.join()


def test_a_live_run_drops_at_the_source_rather_than_queue_before_its_slowest_stage():
    """Every channel before the slowest stage held a frame, each adding one of its steps to the
    end-to-end latency (2.4 s with text reading on a 2-core CPU). A live run now takes a source's
    next frame only once no frame waits: the queues before the slow sink stay empty."""
    pipe = Pipeline([SimulatedCamera(total=300, fps=200, reconnect=None)], FakeDetector(),
                    callbacks=[lambda frame, detections: time.sleep(0.02)])
    report = pipe.run()
    assert report["frames"] > 20 and report["dropped"] > 100
    assert report["queues"]["decoded"]["mean"] < 0.5 and report["queues"]["prepared"]["mean"] < 0.5


def test_a_live_source_sharing_a_run_with_a_file_keeps_one_frame_waiting(videos):
    """With a file in the run, its frames kept the 4-batch queues full and the live stream's
    frames queued behind them as a file's do (p50 9 s on 2 cores). Each source now takes its
    next frame only once none of its own waits (a batch gets one of each), the queues hold one
    batch, and the file still delivers every frame."""
    camera = SimulatedCamera(total=400, fps=200, reconnect=None)
    waiting = {0: [], 1: []}

    def slow_sink(frame, detections):
        queued = [getattr(item, "stream", None) for item in list(pipe._decoded._queue.queue)]
        for stream, counts in waiting.items():
            counts.append(queued.count(stream))
        time.sleep(0.01)

    pipe = Pipeline([camera, videos[1]], FakeDetector(), callbacks=[slow_sink])
    assert pipe._prepared.capacity == 1
    report = pipe.run()
    camera_report, file_report = report["sources"]
    assert file_report["delivered"] == file_report["read"] == 12 and file_report["dropped"] == 0
    assert camera_report["dropped"] > 0 and max(waiting[0]) <= 1 and max(waiting[1]) <= 1


class SlowVideoFile(VideoFileSource):
    """A video file whose frames take `seconds` each to decode (a large one, or one read over
    a slow network), unlike a live source's newest frame, which is there at once."""

    def __init__(self, path, seconds: float):
        super().__init__(path)
        self.seconds = seconds

    def __iter__(self):
        for frame in super().__iter__():
            time.sleep(self.seconds)
            yield frame


def _streams_in_order(sources, detector):
    order = []
    pipe = Pipeline(sources, detector, callbacks=[lambda frame, detections: order.append(frame.stream)],
                    max_frames=60)
    camera_report, file_report = pipe.run()["sources"]
    assert file_report["delivered"] == 12 and file_report["dropped"] == 0
    assert camera_report["delivered"] == order.count(0)
    return order[:len(order) - order[::-1].index(1)]  # up to the file's last frame


def test_a_live_source_does_not_take_the_room_of_a_file_still_decoding(videos):
    """The room for the next frame went to whichever source put one first: the camera's newest
    frame is there at once, so while the file decoded its next frame the camera filled the
    batch (two camera frames for one of the file's, on 2 cores with the real stream). A file
    decoding now holds its frame's room, and the sources waiting take turns."""
    beside_the_file = _streams_in_order(
        [SimulatedCamera(total=100000, reconnect=None), SlowVideoFile(videos[1], 0.02)],
        FakeDetector(delay_s=0.05))
    assert beside_the_file.count(0) <= beside_the_file.count(1) + 2, beside_the_file


def test_a_file_slow_to_decode_leaves_the_spare_room_to_the_live_source(videos):
    """Taking turns does not hold a live source to the pace of a file that decodes slowly
    while the stages have room to spare."""
    beside_the_file = _streams_in_order(
        [SimulatedCamera(total=100000, reconnect=None), SlowVideoFile(videos[1], 0.1)],
        FakeDetector())
    assert beside_the_file.count(0) > 2 * beside_the_file.count(1), beside_the_file


@pytest.mark.parametrize("kwargs, error, said", [
    (dict(sinks=[print]), TypeError, "sinks: .* has no write.*callbacks="),
    (dict(callbacks=[JsonlSink(os.devnull)]), TypeError, "callbacks: .* is not callable"),
    (dict(sinks=JsonlSink(os.devnull)), TypeError, r"sinks= takes a list"),
    (dict(max_frames=1.5), ValueError, "max_frames must be an integer >= 1"),
    (dict(queue_size=-3), ValueError, "queue_size must be an integer >= 1"),
    (dict(track=""), TypeError, "track= takes True, False or a TextTracker"),
    (dict(source_options=dict(reconnect=3)), TypeError,
     r"source_options reconnect= takes a pipeline.sources.Reconnect"),
    (dict(source_options=dict(decode_threads=-1)), ValueError,
     "source_options decode_threads must be an integer >= 0"),
    (dict(source_options=dict(source_timout=5)), TypeError,
     "source_options: unknown keyword 'source_timout' .*source_timeout"),
    (dict(source_options=[("reconnect", None)]), TypeError, "source_options= takes a dict"),
])
def test_wrong_arguments_are_refused_when_the_pipeline_is_made_naming_them(videos, kwargs, error, said):
    """They failed once the run started, as an AttributeError in a worker thread (or, for
    max_frames=1.5, as a failed source); the detector handed over was not closed."""
    detector = FakeDetector()
    with pytest.raises(error, match=said):
        Pipeline([videos[1]], detector, close_detector=True, **kwargs)
    assert detector.closed


def test_a_model_path_in_place_of_the_detector_is_named():
    with pytest.raises(TypeError, match="detector: expected a pipeline.detector.Detector, got str"):
        Pipeline(["a.mp4"], "dbnet.onnx")


def test_track_zero_is_off_and_events_without_tracks_are_refused(videos, tmp_path):
    from pipeline.reading.events import TextEventSink

    assert Pipeline([videos[1]], FakeDetector(), track=0).tracker is None
    with pytest.raises(ValueError, match="TextEventSink needs track=True"):
        Pipeline([videos[1]], FakeDetector(), sinks=[TextEventSink(tmp_path / "e.jsonl")])


def test_a_sink_of_ones_own_without_close_or_end_stream_is_fine(videos):
    """Its missing close() left the run half shut down: a thread running, the interpreter's
    switch interval not restored."""
    import sys

    class Counter:
        n = 0

        def write(self, frame, detections):
            self.n += 1

    interval, sink = sys.getswitchinterval(), Counter()
    assert Pipeline([videos[1]], FakeDetector(), sinks=[sink]).run()["frames"] == sink.n == 12
    assert sys.getswitchinterval() == interval


def test_close_from_another_thread_stops_the_run():
    """It raised 'generator already executing' in the calling thread and the run went on."""
    pipe = Pipeline([SimulatedCamera(total=100_000, fps=200)], FakeDetector())
    timer = threading.Timer(0.5, pipe.close)
    timer.start()
    frames = sum(1 for _ in pipe)
    timer.join()
    assert 0 < frames < 100_000


def test_one_detector_serves_two_pipelines_at_once_as_it_serves_them_in_turn(videos, tiny_onnx):
    def boxes(results):
        return [(f.index, d.polygons[0].tolist() if len(d) else None) for f, d in results]

    with _detector(tiny_onnx) as detector:
        alone = [boxes(Pipeline([video], detector)) for video in videos[:2]]
        together = [None, None]

        def run(k):
            together[k] = boxes(Pipeline([videos[k]], detector))

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert together == alone and all(len(r) > 5 for r in alone)


def test_close_from_another_thread_while_the_consumer_is_in_its_loop_body():
    """close() closed the run's generator from the calling thread: the consumer, resuming
    while that shutdown went on, raised 'generator already executing', and putting the signal
    handlers back raised in the closing thread (Python sets them from the main thread only)."""
    closing, errors = threading.Event(), []

    class SlowToClose(JsonlSink):
        def close(self):
            closing.set()
            time.sleep(0.3)  # the consumer resumes while the run is being shut down
            super().close()

    sink = SlowToClose(os.devnull)
    pipe = Pipeline([SimulatedCamera(total=100_000, fps=200)], FakeDetector(), sinks=[sink])

    def close():
        try:
            pipe.close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    closer = threading.Thread(target=close)
    frames = 0
    for _ in pipe:
        frames += 1
        if frames == 3:  # in the loop body: the run waits at its yield
            closer.start()
            assert closing.wait(10)
    closer.join(10)
    assert errors == [] and frames == 3 and sink._fh.closed
    try:  # the run's handler, left in place, passes Ctrl-C on as before the run
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.parametrize("filtered", [False, True])
def test_the_last_text_events_reach_a_sink_listed_before_the_event_sink(tmp_path, filtered):
    """Sinks closed in the order given: a run stopped with tracks live wrote their end lines
    in the TextEventSink's close, after the MQTT sink listed before it had closed (dropped).
    Also through a FilteredSink (one stream's events), which passed on no `ending`."""
    from pipeline.reading.events import TextEventSink
    from pipeline.sinks import FilteredSink

    class Publisher:  # what MqttSink does with a text event: refused once closed
        def __init__(self):
            self.lines, self.after_close, self.closed = [], 0, False

        def write(self, frame, detections):
            pass

        def publish(self, line):
            if self.closed:
                self.after_close += 1
            else:
                self.lines.append(line)

        def close(self):
            self.closed = True

    publisher = Publisher()
    events = TextEventSink(tmp_path / "events.jsonl", listeners=[publisher.publish])
    sink = FilteredSink(events, lambda frame: frame.stream == 0) if filtered else events
    pipe = Pipeline([SimulatedCamera(total=100_000, fps=200)], FakeDetector(), track=True,
                    sinks=[publisher, sink])
    for seen, _ in enumerate(pipe, 1):
        if seen == 20:
            pipe.stop()
    written = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert written and written[-1]["event"] == "end" and written[-1]["frames"] >= 20
    assert publisher.after_close == 0 and publisher.lines == written
