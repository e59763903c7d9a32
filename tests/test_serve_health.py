"""/healthz and /metrics follow a live source through an outage: up (200), reconnecting (503
with the reason, credentials left out), up again (200, one reconnect counted). Pictures are
encoded only once someone watches."""
from __future__ import annotations

import threading
import time

import pytest

from engine.errors import SourceError
from pipeline.runner import Pipeline
from pipeline.sources import LiveSource, Reconnect

from media import FakeDetector, frame_image
from serve_helpers import get, mjpeg_parts

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed")


class GatedCamera(LiveSource):
    """A live camera whose link the test cuts and restores."""

    kind = "gated"

    def __init__(self):
        super().__init__("rtsp://user:pw@cam/1", Reconnect(retries=None, delay=0.01, max_delay=0.05))
        self.link = threading.Event()
        self.link.set()
        self.count = 0

    def _connect(self):
        if not self.link.is_set():
            raise SourceError("connection refused")

    def _read(self):
        if not self.link.is_set():
            raise ConnectionError("link down")
        time.sleep(0.005)  # the camera's frame interval
        self.count += 1
        return frame_image(self.count, 48, 64), self.count / 100

    def _disconnect(self):
        pass


def until(check, what: str, limit_s: float = 60.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_healthz_flips_while_a_live_source_reconnects():
    from pipeline.serve import ServeSink

    camera = GatedCamera()
    pipe = Pipeline([camera], FakeDetector())
    sink = ServeSink(pipe, port=0)
    pipe.sinks.append(sink)
    port = sink.server.port
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    try:
        until(lambda: sink.view.frames.get(0, 0) >= 3, "frames")
        assert get(port, "/healthz")[:2] == (200, b"ok\n")
        assert sink.view.encodes == 0  # nobody watched yet: nothing was encoded

        camera.link.clear()
        status, body, _ = until(lambda: (r := get(port, "/healthz"))[0] == 503 and r, "503")
        assert body == b"stream 0 (rtsp://cam/1) reconnecting\n"
        assert b"pw" not in get(port, "/api/status")[1] and b"pw" not in get(port, "/metrics")[1]

        camera.link.set()
        until(lambda: get(port, "/healthz")[0] == 200, "200 again")
        assert b'dbrt_source_reconnects_total{source="rtsp://cam/1",stream="0"} 1.0' in \
            get(port, "/metrics")[1]
        parts = list(mjpeg_parts(port, 0, 2))
        assert len(parts) == 2 and 1 <= sink.view.encodes <= sink.view.frames[0]
    finally:
        pipe.stop()
        runner.join(timeout=30)
    assert not runner.is_alive() and camera.state == "ended"


def test_eight_streams_each_have_a_status_entry_and_a_picture():
    import cv2
    import numpy as np

    from pipeline.serve import ServeSink

    cameras = [GatedCamera() for _ in range(8)]
    pipe = Pipeline(cameras, FakeDetector())
    sink = ServeSink(pipe, port=0)
    pipe.sinks.append(sink)
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    try:
        until(lambda: all(sink.view.frames.get(i, 0) >= 1 for i in range(8)), "frames of all 8")
        import json

        streams = json.loads(get(sink.server.port, "/api/status")[1])["streams"]
        assert [s["id"] for s in streams] == list(range(8))
        assert all(s["state"] == "up" and s["frames"] >= 1 for s in streams)
        for stream in (0, 7):
            part = next(mjpeg_parts(sink.server.port, stream, 1))
            assert cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    finally:
        pipe.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
