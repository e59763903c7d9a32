"""What the sinks are told about every frame a run read: written, failed in inference, or
its stream's end; and the runners' release on the paths where loading fails."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.errors import InferenceFailed
from pipeline.runner import Pipeline
from pipeline.sinks import Sink

from media import FakeDetector, until, write_video


@pytest.fixture(autouse=True)
def no_threads_left():
    yield
    until(lambda: not [t for t in threading.enumerate()
                       if t.name.startswith(("decode:", "preprocess", "infer", "postprocess",
                                             "sink", "source-closer"))], "the run's threads to end")


class _FailsTheSmallFrames(FakeDetector):
    """Inference fails (a model server away) for every batch of 48-pixel-high frames."""

    def __init__(self):
        super().__init__(input_size=None)

    def prepare(self, images):
        batch, boxes = super().prepare(images)
        return np.full((len(images), 1), images[0].shape[0]), boxes

    def infer(self, batch):
        if batch[0, 0] == 48:
            raise InferenceFailed("server away")
        return batch


class _EndsRecorded(Sink):
    """Records end_stream; the other stream's last frame waits (a bounded while) for stream 0's
    end, which comes while that stream still runs."""

    def __init__(self, last_of_other):
        self.ended, self.last_of_other = [], last_of_other

    def write(self, frame, detections):
        if (frame.stream, frame.index) == self.last_of_other:
            deadline = time.monotonic() + 10
            while 0 not in self.ended and time.monotonic() < deadline:
                time.sleep(0.01)

    def end_stream(self, stream):
        self.ended.append(stream)


def test_a_stream_whose_frames_failed_in_inference_still_ends_while_others_go_on(tmp_path):
    """Its failed frames are never written: counted as written only, the stream never seemed
    done, so end_stream (its video finished, its tracks ended) never came, nor stream_lost for
    a live stream, for the rest of the run."""
    small = write_video(tmp_path / "small.mp4", frames=5, height=48, width=64)
    large = write_video(tmp_path / "large.mp4", frames=12, height=64, width=96)
    sink = _EndsRecorded(last_of_other=(1, 11))
    pipe = Pipeline([small, large], _FailsTheSmallFrames(), batch=1, sinks=[sink])
    assert [f.stream for f, _ in pipe] == [1] * 12
    report = pipe.report()
    assert report["failed"] == 5 and report["lost"] == 0
    assert sink.ended[:1] == [0]
