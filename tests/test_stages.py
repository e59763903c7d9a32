"""The Stage primitive: end sentinel, timing, error propagation and the put loop in one place."""
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.batcher import Batcher
from pipeline.metrics import Metrics
from pipeline.sources import Frame
from pipeline.stages import END, Aborted, Channel, Control, LiveGate, Stage


class ListBox:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


def _run(stage):
    stage.start()
    stage.join(timeout=10)
    assert not stage.is_alive()


def test_a_channel_stage_maps_every_item_then_passes_the_end_on():
    control, out = Control(), ListBox()
    inbox = Channel("in", 8, control)
    for item in (1, 2, 3, END):
        inbox.put(item)
    metrics = Metrics()
    _run(Stage("double", lambda x: None if x == 2 else 2 * x, inbox, out, control, metrics,
               metric="infer"))
    assert out.items == [2, 6, END]  # None passes nothing on
    assert metrics.stages["infer"].count == 3


def test_an_iterable_inbox_is_read_timed_closed_and_stops_on_drain():
    control, out, closed = Control(), ListBox(), []

    def frames():
        try:
            for i in range(100):
                if i == 3:
                    control.draining.set()  # e.g. Ctrl-C while reading
                yield i
        finally:
            closed.append(True)

    metrics = Metrics()
    _run(Stage("decode:0", lambda x: [x, x], frames(), out, control, metrics, metric="decode",
               many=True))
    assert out.items == [0, 0, 1, 1, 2, 2, 3, 3, END] and closed == [True]
    assert metrics.stages["decode"].count == 4


def test_a_failing_step_stops_the_run_and_still_ends_its_outbox():
    control, out = Control(), ListBox()

    def broken(item):
        raise ValueError(f"bad item {item}")

    _run(Stage("post", broken, iter([7]), out, control))
    assert isinstance(control.error, ValueError) and "bad item 7" in str(control.error)
    assert control.aborted.is_set() and out.items == [END]


def test_an_aborted_run_ends_a_stage_blocked_on_a_full_channel():
    control = Control()
    full = Channel("out", 1, control)
    stage = Stage("infer", lambda x: x, iter(range(10)), full, control)
    stage.start()
    control.abort()
    stage.join(timeout=10)
    assert not stage.is_alive() and control.error is None


def test_a_failure_stops_the_channels_before_it_and_drains_the_ones_after():
    control = Control()
    before, after = (Channel(name, 4, control, position=n) for n, name in enumerate("ab"))
    after.put("computed before the failure")
    broken = Stage("post", lambda x: 1 / 0, iter([1]), after, control)
    _run(broken)
    assert isinstance(control.error, ZeroDivisionError) and not control.aborted.is_set()
    with pytest.raises(Aborted):
        before.put("anything")
    assert [after.get(), after.get()] == ["computed before the failure", END]


def test_a_run_that_wrote_no_frame_keeps_the_wall_time_it_ended_with():
    """Its wall time ran on to whenever its report was asked for (a run whose only camera
    never delivered, reported by a service minutes later)."""
    import time

    metrics = Metrics()
    metrics.start()
    metrics.finish()
    ended = metrics.report()["wall_s"]
    time.sleep(0.01)
    assert metrics.report()["wall_s"] == ended


def test_batch_sizes_are_reported_as_a_count_histogram():
    metrics = Metrics()
    for size in (1, 4, 4, 2):
        metrics.batch_done(size)
    report = metrics.report()["batch_size"]
    assert report == {"count": 4, "mean": pytest.approx(11 / 4), "histogram": {"1": 1, "2": 1, "4": 2}}


def test_the_batch_histogram_is_read_while_the_inference_stage_adds_batch_sizes():
    """/api/status reads it during a run: a batch size first seen while it was being summed
    raised 'dictionary changed size during iteration' there."""
    metrics, done, errors = Metrics(window=1), threading.Event(), []

    def infer():
        for size in range(1, 20_000):
            metrics.batch_done(size)
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns between any two steps
    thread = threading.Thread(target=infer)
    try:
        thread.start()
        while not done.is_set():
            try:
                metrics.batch_summary()
            except RuntimeError as exc:
                errors.append(exc)
                break
    finally:
        thread.join()
        sys.setswitchinterval(interval)
    assert errors == [] and metrics.batch_summary()["count"] == 19_999


def test_a_frame_left_for_the_next_batch_still_waits_at_the_live_gate():
    """A frame that needs another input size than the batch being formed is left for the next
    batch. The batcher took it off its channel and kept it aside, so the live gate counted it
    neither as waiting nor as its source's: the source took its next frame while this one
    still waited (two of its frames waiting, the live one aging a batch more)."""
    control = Control()
    gate = LiveGate(control, waiting=2, per_stream=True)
    decoded = Channel("decoded", 2, control, gate=gate)
    for stream in (0, 1):
        gate.admission(SimpleNamespace(stream=stream, live=stream == 0, state="up"))
    batches = Batcher(decoded, 2, 2, 0.0, lambda h, w: (h, w))
    for stream, (height, width) in enumerate([(48, 64), (240, 320)]):
        decoded.put(Frame(np.zeros((height, width, 3), np.uint8), 0, None, "s", stream=stream))
    assert [frame.stream for frame in batches.get()] == [0]
    assert gate.is_open(0) and not gate.is_open(1)  # stream 1's frame waits for the next batch
    assert [frame.stream for frame in batches.get()] == [1]
    assert gate.is_open(0) and gate.is_open(1)


def test_a_stop_while_a_source_waits_at_the_gate_reads_no_further_frame():
    """The gate opens when the run stops (it must not hold a source forever); the stage then
    read one more frame, which a stop should not: a file decoded it, a slow one kept the stop
    waiting for it."""
    control, out, read = Control(), ListBox(), []

    def frames():
        for i in range(10):
            read.append(i)
            yield i

    def admit():  # a stop arrives while the source waits for its second frame
        if read:
            control.draining.set()

    _run(Stage("decode:0", lambda x: x, frames(), out, control, admit=admit))
    assert read == [0] and out.items == [0, END]


def test_a_file_putting_its_frame_holds_the_room_until_the_frame_is_in_the_channel():
    """A file past the gate holds its frame's room until the frame waits in the channel. The
    room was let go before the put, so while the frame was on its way in (a put waiting for a
    full channel, or a thread switch) it was counted nowhere and a live source took the room."""
    control = Control()
    gate = LiveGate(control, waiting=1, per_stream=True)
    decoded = Channel("decoded", 1, control, gate=gate)
    camera, video = (SimpleNamespace(stream=s, live=s == 0, state="up") for s in (0, 1))
    gate.admission(camera)
    gate.admission(video)
    gate.wait(1)  # the file passes the gate and decodes its frame
    seen_while_putting = []
    real_put = decoded._queue.put

    def put(item, *args, **kwargs):
        seen_while_putting.append(gate.is_open(0))
        real_put(item, *args, **kwargs)

    decoded._queue.put = put
    decoded.put(Frame(np.zeros((8, 8, 3), np.uint8), 0, None, "clip", stream=1))
    assert seen_while_putting == [False] and not gate.is_open(0)
    decoded.get()
    assert gate.is_open(0)


def test_a_batch_larger_than_a_fixed_batch_model_takes_is_one_line_in_the_singular():
    from types import SimpleNamespace

    from engine.errors import ModelError
    from pipeline.batcher import batch_size

    with pytest.raises(ModelError, match=r"--batch 2: the model takes at most 1 frame per call \("):
        batch_size(2, 1, SimpleNamespace(max_batch=1))
    assert batch_size(0, 3, SimpleNamespace(max_batch=1)) == 1  # unasked: as many as it takes
