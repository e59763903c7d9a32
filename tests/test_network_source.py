"""Network streams against a real HTTP MPEG-TS server on 127.0.0.1, killed and restarted
mid-run to prove that the source reconnects with back-off and keeps delivering frames."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.errors import SourceError
from pipeline.runner import Pipeline
from pipeline.sources import NetworkSource, Reconnect, open_source

from media import FakeDetector, mpegts_bytes

CHUNK = 188 * 20  # whole TS packets


class TsServer:
    """Streams an MPEG-TS clip in a loop to every GET, paced at about `rate` bytes/second.
    `stop()` kills the listener and every open connection; `start()` brings it back on the
    same port."""

    def __init__(self, payload: bytes, rate: float = 400_000):
        self.payload, self.rate = payload, rate
        self.port = _free_port()
        self.connections = 0
        self._server = None
        self._alive = threading.Event()

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                offset = 0
                while owner._alive.is_set():
                    chunk = owner.payload[offset:offset + CHUNK] or owner.payload[:CHUNK]
                    offset = (offset + CHUNK) % len(owner.payload)
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        return
                    time.sleep(CHUNK / owner.rate)

        return Handler

    def start(self) -> "TsServer":
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._alive.set()
        threading.Thread(target=self._server.serve_forever, name="ts-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.ts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    srv = TsServer(mpegts_bytes(frames=60)).start()
    yield srv
    srv.stop()


def test_stream_killed_and_restarted_mid_run_reconnects(server):
    source = NetworkSource(server.url, reconnect=Reconnect(retries=40, delay=0.1, max_delay=0.4),
                           timeout=3).open()
    frames, after = [], 0
    restart = threading.Timer(1.0, server.start)
    for frame in source:
        frames.append(frame)
        if len(frames) == 15:
            server.stop()  # kill the server and its connection mid-stream
            restart.start()
        if source.stats.reconnects:
            after += 1
            if after >= 15:
                source.close()
    restart.join()
    stats = source.stats.as_dict()
    assert stats["reconnects"] >= 1 and server.connections >= 2
    assert any("reconnect attempt" in e and "failed" in e for e in stats["events"])  # refused while down
    assert any(e.startswith("reconnected after") for e in stats["events"])
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and len(frames) >= 30
    assert frames[0].image.shape == (48, 64, 3)


def test_pipeline_over_a_live_stream(server):
    pipe = Pipeline([server.url], FakeDetector(), max_frames=20)
    report = pipe.run()
    assert report["frames"] == 20
    assert report["sources"][0]["kind"] == "network" and report["sources"][0]["live"] is True


def test_unreachable_stream_fails_at_open_with_one_line():
    with pytest.raises(SourceError, match=r"cannot open http://127\.0\.0\.1:\d+/x\.ts") as info:
        open_source(f"http://127.0.0.1:{_free_port()}/x.ts")
    assert "\n" not in str(info.value)


def test_stream_that_never_comes_back_gives_up(server):
    source = NetworkSource(server.url, reconnect=Reconnect(retries=2, delay=0.05), timeout=2).open()
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts"):
        for frame in source:
            if frame.index == 5:
                server.stop()


def test_stream_back_at_a_larger_resolution_stays_whole_in_the_annotated_video(server, tmp_path):
    """The annotated video keeps its first size; frames after the reconnect are scaled into it
    (they were cropped to their top-left corner)."""
    import av
    import numpy as np

    from pipeline.sinks import VideoSink

    sizes = []
    restart = threading.Timer(0.5, server.start)

    def watch(frame, dets):
        sizes.append(frame.size)
        if len(sizes) == 10:
            server.stop()
            server.payload = mpegts_bytes(frames=60, height=96, width=128)
            restart.start()

    source = NetworkSource(server.url, reconnect=Reconnect(retries=40, delay=0.1, max_delay=0.4),
                           timeout=3)
    video = tmp_path / "annotated.mp4"
    Pipeline([source], FakeDetector(), sinks=[VideoSink(video, fps=25)], callbacks=[watch],
             max_frames=80).run()
    restart.join()
    assert sizes[0] == (48, 64) and sizes[-1] == (96, 128)
    with av.open(str(video)) as container:
        out = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(out) == len(sizes) and all(o.shape == (48, 64, 3) for o in out)
    after = [o for o, size in zip(out, sizes) if size == (96, 128)]
    assert len(after) >= 10, (len(sizes), source.stats.as_dict())
    for image in after:  # the frame's right half (grey 200) is there, not only its left half
        assert abs(float(np.median(image[8:, 40:])) - 200) < 15
