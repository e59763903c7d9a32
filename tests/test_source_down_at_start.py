"""A live source that is down when the run starts (a box that boots before its cameras, a
publisher that starts later) is retried under its reconnect policy while the run starts and
the other sources run; what is the user's mistake (a wrong password, an address that serves
no video, a host name that does not exist) still fails at once. Real streams on 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.errors import DbrtWarning, SourceError
from engine.triton.ports import free_port
from pipeline.runner import Pipeline
from pipeline.sources import Reconnect, open_source

from media import FakeDetector, TsServer, mpegts_bytes, until
from serve_helpers import dbrt, get, wait_until

FOREVER = Reconnect(retries=None, delay=0.05, max_delay=0.2)


def _attempts(source) -> int:
    return source.stats.as_dict()["connect_attempts"]


def test_a_stream_down_at_start_is_waited_for_while_the_other_runs():
    # the late stream at its real rate, 10 s before its clip loops (its timestamps restart):
    # sent as fast as the loopback takes it, a busy run's 20 frames spanned several loops
    clip = mpegts_bytes(frames=250)
    late, up = TsServer(clip, rate=len(clip) / 10), TsServer(mpegts_bytes(frames=60)).start()
    frames = {0: [], 1: []}
    try:
        with pytest.warns(DbrtWarning, match=rf"{late.url} is not up \(Connection refused\): "
                                             "retrying it for ever while the run starts"):
            pipe = Pipeline([late.url, up.url], FakeDetector(), max_frames=20,
                            source_options=dict(reconnect=FOREVER))
        assert pipe.sources[0].state == "connecting"

        def watch(frame, detections):
            frames[frame.stream].append(frame)
            if frame.stream == 1 and len(frames[1]) == 5:  # the other source runs meanwhile
                until(lambda: _attempts(pipe.sources[0]) >= 3, "retries of the late stream")
                late.start()

        pipe.callbacks.append(watch)
        report = pipe.run()
    finally:
        late.stop()
        up.stop()
    waited = report["sources"][0]
    assert len(frames[0]) == 20 and len(frames[1]) == 20
    assert waited["state"] == "ended" and waited["reconnects"] == 0
    assert waited["connect_attempts"] >= 4 and report["sources"][1]["connect_attempts"] == 1
    assert waited["events"][0] == "connect failed: Connection refused; retrying"
    assert f"connected at attempt {waited['connect_attempts']}" in waited["events"]
    # the failed retries numbered as connect_attempts counts them: the first try is attempt 1
    failed = [e.split(" failed")[0] for e in waited["events"] if e.startswith("connect attempt")]
    assert failed == [f"connect attempt {n}" for n in range(2, waited["connect_attempts"])]
    # its first connection: what is followed across frames starts with it, its clock its own
    assert {f.connection for f in frames[0]} == {0}
    times = [f.timestamp for f in frames[0]]
    assert times == sorted(times) and [f.index for f in frames[0]][0] == 0


def test_a_stream_that_never_comes_up_ends_like_an_outage_that_runs_out():
    """Its retries run out: its own frames end with an error raised at the end of the run, as
    a lost stream's do, while the other source's frames all reach the sinks."""
    up = TsServer(mpegts_bytes(frames=60)).start()
    down = f"http://127.0.0.1:{free_port()}/live.ts"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DbrtWarning)
            pipe = Pipeline([down, up.url], FakeDetector(), max_frames=15,
                            source_options=dict(reconnect=Reconnect(retries=2, delay=0.01)))
        with pytest.raises(SourceError, match=rf"^{down} never came up: gave up after 3 connect "
                                              r"attempts \(Connection refused\)$"):
            pipe.run()
    finally:
        up.stop()
    report = pipe.report()
    never = report["sources"][0]
    assert never["state"] == "failed" and never["connect_attempts"] == 3
    assert report["sources"][1]["delivered"] == 15 and report["frames"] == 15


def _replying(status: int, body: bytes = b"", port: int = 0) -> ThreadingHTTPServer:
    class Reply(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Reply)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status, body, message", [
    (401, b"", "401 Unauthorized"),
    (403, b"", "403 Forbidden"),
    (200, b"<html>not a video</html>" * 200, "Invalid data found when processing input"),
])
def test_a_users_mistake_still_fails_at_open_whatever_the_policy(status, body, message):
    server = _replying(status, body)
    url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DbrtWarning)  # no "retrying" either
            with pytest.raises(SourceError, match=message) as caught:
                open_source(url, reconnect=FOREVER)
    finally:
        server.shutdown()
        server.server_close()
    assert "\n" not in str(caught.value)


def test_a_stream_that_does_not_answer_at_start_is_waited_for_in_the_background(monkeypatch):
    """A UDP stream nobody sends yet, a host that does not answer: FFmpeg's open waits up to
    its 30 s timeout, which held up the run's start; here a server that answers its HTTP
    request and sends nothing until resumed."""
    from pipeline.sources import live

    monkeypatch.setattr(live, "FIRST_CONNECT_WAIT_S", 0.2)
    server = TsServer(mpegts_bytes(frames=60))
    server.pause()
    server.start()
    try:
        with pytest.warns(DbrtWarning, match=r"is not up \(no answer within 0\.2 s\): retrying"):
            source = open_source(server.url, reconnect=FOREVER)
        assert source.state == "connecting" and server.connections == 1
        server.resume()
        first = next(iter(source))
    finally:
        source.close()
        server.stop()
    assert first.connection == 0 and first.image.shape == (48, 64, 3)
    assert source.stats.as_dict()["connect_attempts"] == 1 and source.stats.reconnects == 0


def test_a_stream_that_comes_up_refusing_the_password_fails_at_once():
    """Retried while down, then the camera answers 401: no retry will let it in."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/live.ts"
    with pytest.warns(DbrtWarning, match="Connection refused"):
        source = open_source(url, reconnect=Reconnect(retries=50, delay=0.01, max_delay=0.05))
    until(lambda: _attempts(source) >= 2, "a retry")
    server = _replying(401, port=port)
    try:
        with pytest.raises(SourceError, match=r"^cannot open .*401 Unauthorized") as caught:
            list(source)
    finally:
        server.shutdown()
        server.server_close()
    assert "\n" not in str(caught.value) and "never came up" not in str(caught.value)


@pytest.mark.parametrize("status", [404, 503])
def test_a_stream_not_yet_published_is_waited_for(status):
    """An HLS / HTTP server that answers 404 (or 5xx) for a stream its publisher has not
    started yet."""
    server = _replying(status)
    url = f"http://127.0.0.1:{server.server_address[1]}/live.m3u8"
    try:
        with pytest.warns(DbrtWarning, match="retrying it up to 3 times"):
            source = open_source(url, reconnect=Reconnect(retries=3, delay=0.01))
        with pytest.raises(SourceError, match=rf"{url} never came up: gave up after 4 connect"):
            list(source)
    finally:
        server.shutdown()
        server.server_close()
    assert source.state == "connecting" and _attempts(source) == 4


def test_a_host_name_that_does_not_exist_fails_at_open():
    """Most often misspelt: said at once (FFmpeg says only "Input/output error")."""
    with pytest.raises(SourceError, match=r"the host name no-such-camera\.invalid does not "
                                          r"resolve \(check its spelling\)"):
        open_source("rtsp://no-such-camera.invalid/live", reconnect=FOREVER)


@pytest.mark.parametrize("reconnect", [None, Reconnect(retries=0)])
def test_without_reconnects_a_stream_down_at_start_fails_at_open(reconnect):
    with pytest.raises(SourceError, match=r"^cannot open http://127\.0\.0\.1:\d+/live\.ts: "
                                          r"Connection refused$"):
        open_source(f"http://127.0.0.1:{free_port()}/live.ts", reconnect=reconnect)


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="no gst-launch-1.0")
def test_a_gstreamer_pipeline_whose_server_is_down_at_start_is_waited_for():
    port, frame = free_port(), bytes(8 * 4 * 3)
    spec = (f"gst:tcpclientsrc host=127.0.0.1 port={port} ! "
            "rawvideoparse width=8 height=4 format=bgr")
    with pytest.warns(DbrtWarning, match="GStreamer could not start the pipeline"):
        source = open_source(spec, reconnect=FOREVER)
    server = None
    try:
        until(lambda: _attempts(source) >= 2, "a retry of the pipeline")
        assert source.state == "connecting"
        server = socket.create_server(("127.0.0.1", port))
        serving = threading.Thread(target=lambda: server.accept()[0].sendall(frame * 50),
                                   daemon=True)
        serving.start()
        got = next(iter(source))
    finally:
        source.close()
        if server is not None:
            server.close()
    assert got.image.shape == (4, 8, 3) and got.connection == 0
    assert source.stats.reconnects == 0


def test_sigterm_while_every_source_is_down_exits_with_the_report(tmp_path, tiny_onnx):
    """`dbrt run` waits for a stream down at start (/healthz says so: never connected is not
    healthy) and a SIGTERM meanwhile ends it at once with its report."""
    out, serve, down = tmp_path / "out", free_port(), f"http://127.0.0.1:{free_port()}/live.ts"
    proc = dbrt("run", down, "--model", str(tiny_onnx), "--reconnect", "-1", "--reconnect-delay",
                "0.05", "--serve", str(serve), "--no-video", "--quiet", "-o", str(out))
    try:
        def connecting():
            stream = json.loads(get(serve, "/api/status")[1])["streams"][0]
            return stream["state"] == "connecting" and stream["connect_attempts"] >= 3

        wait_until(connecting, proc, "retries of the stream down at start")
        assert get(serve, "/healthz")[:2] == (503, f"stream 0 ({down}) connecting\n".encode())
    finally:
        proc.send_signal(signal.SIGTERM)
        printed, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert f"  {down}: down at the start, " in printed
    assert "connect attempts, no frame received" in printed
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == [f"dbrt run: warning: {down} is not up (Connection refused): retrying it "
                      "for ever while the run starts"]
    source = json.loads((out / "report.json").read_text())["sources"][0]
    assert source["state"] == "stopped" and source["connect_attempts"] >= 3


def test_a_run_stopped_before_any_frame_claims_no_annotated_output(tmp_path, tiny_onnx):
    """Its summary said '... and annotated output under out/', where there was none."""
    out, serve, down = tmp_path / "out", free_port(), f"http://127.0.0.1:{free_port()}/live.ts"
    proc = dbrt("run", down, "--model", str(tiny_onnx), "--reconnect", "-1", "--reconnect-delay",
                "0.05", "--serve", str(serve), "--quiet", "-o", str(out))
    try:
        def started():  # the run's clock runs once its stop signals are handled
            return json.loads(get(serve, "/api/status")[1])["elapsed_s"] > 0

        wait_until(started, proc, "the run, its stream connecting")
    finally:
        proc.send_signal(signal.SIGTERM)
        printed, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert printed.splitlines()[-1] == f"wrote {out / 'detections.jsonl'}, {out / 'report.json'}"
    assert "videos" not in json.loads((out / "report.json").read_text())["outputs"]


def test_the_summary_names_a_stream_stopped_during_its_first_connect():
    """A camera behind a router that drops packets: its first connect blocks (up to 30 s) and
    counts no attempt until it ends. A run stopped meanwhile said '0 frames' and nothing of the
    stream; one up at the start with frames says nothing more."""
    from pipeline.metrics import Metrics, format_summary

    def summary(**source) -> str:
        counts = dict(name="rtsp://cam/1", live=True, read=0, dropped=0, reconnects=0,
                      connect_attempts=0)
        return format_summary(Metrics().report(sources=[{**counts, **source}]))

    assert "  rtsp://cam/1: no frame received" in summary().splitlines()
    assert "rtsp://cam/1" not in summary(read=20, connect_attempts=1)
    assert "rtsp://cam/1: down at the start, 3 connect attempts, no frame received" in \
        summary(connect_attempts=3)



def test_the_summary_says_a_stream_was_given_up():
    """A stream whose reconnects ran out while the others went on: stderr and report.json say
    it was given up (state "failed"); the summary said only '4 dropped, 1 reconnects', or
    nothing of one lost at once, and nothing of one that never came up but its attempts."""
    from pipeline.metrics import Metrics, format_summary

    def summary(**source) -> list:
        counts = dict(name="rtsp://cam/1", live=True, read=50, dropped=0, reconnects=0,
                      connect_attempts=1, state="failed")
        return format_summary(Metrics().report(sources=[{**counts, **source}])).splitlines()

    assert "  rtsp://cam/1: 4 dropped, 1 reconnects, given up" in summary(dropped=4, reconnects=1)
    assert "  rtsp://cam/1: 0 dropped, 0 reconnects, given up" in summary()
    assert [line for line in summary(read=0, connect_attempts=3) if "cam/1" in line] == [
        "  rtsp://cam/1: down at the start, 3 connect attempts, no frame received, given up"]
    assert [line for line in summary(dropped=2, connect_attempts=3) if "cam/1" in line] == [
        "  rtsp://cam/1: 2 dropped, 0 reconnects, given up",
        "  rtsp://cam/1: down at the start, 3 connect attempts"]
    assert "  rtsp://cam/1: 4 dropped, 1 reconnects" in summary(dropped=4, reconnects=1,
                                                                state="stopped")
    assert not any("given up" in line for line in summary(state="stopped") +
                   summary(live=False, state="failed"))  # a file that broke: the run's error

def test_the_annotated_video_of_a_stream_that_came_up_late_has_its_rate(tmp_path, tiny_onnx):
    """The sinks are made before the stream comes up: its annotated video was made at 25 FPS
    (the rate of a source that does not know its own) whatever the stream's rate."""
    import av

    out, serve, late = tmp_path / "out", free_port(), TsServer(mpegts_bytes(frames=60, fps=30))
    proc = dbrt("run", late.url, "--model", str(tiny_onnx), "--reconnect", "-1",
                "--reconnect-delay", "0.05", "--serve", str(serve), "--max-frames", "6",
                "--quiet", "-o", str(out))
    try:
        wait_until(lambda: json.loads(get(serve, "/api/status")[1])["streams"][0]["state"]
                   == "connecting", proc, "the stream to be waited for")
        late.start()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        late.stop()
    assert proc.returncode == 0, err
    source = json.loads((out / "report.json").read_text())["sources"][0]
    assert source["delivered"] == 6 and source["connect_attempts"] >= 2
    with av.open(str(out / "annotated.mp4")) as video:
        stream = video.streams.video[0]
        declared = stream.codec_context.framerate  # the encoder's (H.264's timing info)
        packets = sorted((p for p in video.demux(stream) if p.size), key=lambda p: p.pts)
    assert declared == 30 and len(packets) == 6 and packets[0].pts == 0


def test_sources_opened_together_make_their_first_connects_at_once(monkeypatch):
    """Sources were opened one after another, each first connect waited for up to 10 s: eight
    cameras that do not answer at a boot held up the start for 80 s. Now every live source's
    reader starts connecting before the first wait: all connects are under way before any
    wait ends."""
    from pipeline.sources import LiveSource, live, open_sources

    events, release = [], threading.Event()

    class Silent(LiveSource):  # a camera that does not answer until released
        kind = "silent"

        def _connect(self):
            events.append(f"connect {self.name}")
            release.wait(30)
            raise SourceError("connection refused")

        def _read(self):
            return None

        def _disconnect(self):
            pass

    def warned(message, *args, **kwargs):
        events.append(f"waiting {message.split()[0]}")

    monkeypatch.setattr(live, "FIRST_CONNECT_WAIT_S", 1.0)
    monkeypatch.setattr(live, "warn_caller", warned)
    sources = open_sources([Silent(name, Reconnect(retries=1, delay=0.01)) for name in "abc"])
    try:
        assert sorted(events[:3]) == ["connect a", "connect b", "connect c"], events
        assert events[3:] == ["waiting a", "waiting b", "waiting c"]
        assert [s.state for s in sources] == ["connecting"] * 3
    finally:
        release.set()
        for source in sources:
            source.close()


def test_a_second_open_of_a_stream_still_down_says_again_that_it_waits():
    """Said through Python's default filter, which shows a warning once per text and caller's
    line: a second run in one process, its camera down as for the first, did not say that it
    waited for it. Each open says it, once."""
    from pipeline.sources import LiveSource
    from pipeline.sources.failures import passing

    class Refusing(LiveSource):
        kind = "refusing"

        def _connect(self):
            raise passing(SourceError("Connection refused"), True)

        def _read(self):
            return None

        def _disconnect(self):
            pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            source = Refusing("cam", FOREVER).open()
            source.close()
    assert [str(w.message) for w in caught] == [
        "cam is not up (Connection refused): retrying it for ever while the run starts"] * 2
