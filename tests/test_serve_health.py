"""/healthz and /metrics follow a live source through an outage: up (200), reconnecting (503
with the reason, credentials left out), up again (200, one reconnect counted). Pictures are
encoded only once someone watches. A source that fails for good (a stream that gives up
reconnecting, a truncated file) makes /healthz 503 with the stream and its error, in a real
`dbrt run` whose other stream goes on."""
from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from engine.errors import SourceError
from engine.triton.ports import free_port
from pipeline.runner import Pipeline
from pipeline.sources import LiveSource, Reconnect

from media import FakeDetector, TsServer, frame_image, mpegts_bytes, write_truncated_video
from serve_helpers import dbrt, get, mjpeg_parts, wait_until

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
    assert not runner.is_alive() and camera.state == "stopped"


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
        # `stream`, as in detections.jsonl, events, MQTT and report.json (`id` kept too)
        assert [s["stream"] for s in streams] == list(range(8))
        assert all(s["state"] == "up" and s["frames"] >= 1 for s in streams)
        for stream in (0, 7):
            part = next(mjpeg_parts(sink.server.port, stream, 1))
            assert cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    finally:
        pipe.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()


def test_sources_that_fail_for_good_make_healthz_503_with_their_errors(tmp_path, tiny_onnx):
    """Stream 0 gives up reconnecting after its server dies, stream 1 is a truncated file;
    stream 2 goes on, so the run (and its server) outlive both failures."""
    dying, alive = TsServer(mpegts_bytes(frames=60)).start(), TsServer(mpegts_bytes(frames=60)).start()
    cut = write_truncated_video(tmp_path / "cut.mp4", frames=60)
    port = free_port()
    proc = dbrt("run", dying.url, str(cut), alive.url, "--model", str(tiny_onnx), "--serve",
                str(port), "--reconnect", "1", "--reconnect-delay", "0.1", "--no-video", "--quiet",
                "-o", str(tmp_path / "out"))
    try:
        wait_until(lambda: json.loads(get(port, "/api/status")[1])["streams"][0]["frames"] >= 3,
                   proc, "frames of stream 0")
        dying.stop()
        status, body, _ = wait_until(
            lambda: (r := get(port, "/healthz"))[1].count(b") failed: ") == 2 and r, proc,
            "both failures")
        snapshot = json.loads(get(port, "/api/status")[1])
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        alive.stop()
    reasons = body.decode().strip().split("; ")
    assert status == 503 and len(reasons) == 2, body
    assert reasons[0].startswith(f"stream 0 ({dying.url}) failed: lost {dying.url}: gave up after 1 "
                                 "reconnect attempt ("), reasons
    assert reasons[1].startswith(f"stream 1 ({cut}) failed: ") and "ended early" in reasons[1]
    assert snapshot["health"] == {"ok": False, "reason": body.decode().strip()}
    states = [(s["state"], s["error"]) for s in snapshot["streams"]]
    assert states[2] == ("up", None) and [s for s, _ in states[:2]] == ["failed", "failed"]
    assert reasons[0].endswith(states[0][1]) and reasons[1].endswith(states[1][1])
    assert "Traceback" not in err


def test_a_file_that_ended_whole_beside_a_camera_leaves_the_box_healthy():
    """A file read beside cameras made /healthz 503 for good once it ended (a liveness probe
    restarts such a box for nothing), as did a local GStreamer pipeline that reached its own
    end; a failed or reconnecting stream still makes it 503."""
    from types import SimpleNamespace

    from pipeline.serve.status import RunStatus
    from pipeline.serve.view import LiveFrames

    def source(stream, state, error=None, live=False, ended_by_itself=False):
        return SimpleNamespace(stream=stream, name=f"s{stream}", state=state, error=error,
                               live=live, ended_by_itself=ended_by_itself)

    pipe = SimpleNamespace(sources=[source(0, "ended"), source(1, "up", live=True),
                                    source(2, "stopped", live=True),  # a gst: pipeline's own end
                                    source(6, "ended", live=True, ended_by_itself=True)],
                           detector=None)
    status = RunStatus(pipe, LiveFrames())
    assert status.health() == (True, "ok")
    pipe.sources += [source(3, "reconnecting", live=True), source(4, "failed", "gave up"),
                     source(5, "ended", live=True)]  # a camera that ended (no --reconnect)
    assert status.health() == (False, "stream 3 (s3) reconnecting; stream 4 (s4) failed: "
                                      "gave up; stream 5 (s5) ended")
