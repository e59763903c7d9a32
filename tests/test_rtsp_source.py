"""rtsp:// sources read for real from an RTSP server, GStreamer's gst-rtsp-server
(tests/rtsp_server.py, run by a Python that has GStreamer's bindings; skipped with the install
hint where there is none), each server offering only the RTP transports named: `dbrt run
--rtsp-transport` gets frames over the one asked for, and the default, TCP, is refused by a
camera that serves UDP only. Multicast goes to a group on the loopback interface (the server
joins it there), where FFmpeg's socket bound to the group's port receives it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.triton.ports import free_port
from pipeline.cli import main
from pipeline.sources import open_source

SERVER = Path(__file__).with_name("rtsp_server.py")
INSTALL = ("apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good; "
           ".ci/run does")


@pytest.fixture(scope="module")
def gst_python() -> str:
    """A Python that runs tests/rtsp_server.py (the system's, where the project's virtual
    environment has no GStreamer bindings)."""
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3", shutil.which("python3")]):
        if python and subprocess.run([python, str(SERVER), "--check"], capture_output=True,
                                     timeout=60).returncode == 0:
            return python
    pytest.skip(f"no Python with gst-rtsp-server's bindings ({INSTALL})")


class RtspServer:
    """tests/rtsp_server.py on a free port of 127.0.0.1, serving `transports` only."""

    def __init__(self, python: str, transports: str):
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/test"
        self.proc = subprocess.Popen([python, str(SERVER), str(self.port), transports],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        reader = threading.Thread(target=lambda: said.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)  # a safety net for a server that never starts, not a measurement
        if not said or said[0].strip() != "ready":
            self.stop()
            pytest.fail(f"the RTSP server did not start: {self.proc.stderr.read()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def rtsp_server(gst_python):
    servers = []

    def start(transports: str) -> RtspServer:
        servers.append(RtspServer(gst_python, transports))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _run(url: str, tmp_path: Path, tiny_onnx: Path, *flags: str) -> int:
    return main(["run", url, "--model", str(tiny_onnx), "-o", str(tmp_path / "out"), "--quiet",
                 "--no-video", "--max-frames", "5", "--reconnect", "0", *flags])


@pytest.mark.parametrize("served, flags", [
    ("tcp", ()),  # the default
    ("tcp", ("--rtsp-transport", "tcp")),
    ("udp", ("--rtsp-transport", "udp")),
    ("tcp", ("--rtsp-transport", "http")),  # RTSP and its RTP tunnelled in HTTP
    ("udp_multicast", ("--rtsp-transport", "udp_multicast")),
])
def test_dbrt_run_reads_an_rtsp_stream_over_the_transport_asked_for(rtsp_server, tmp_path, tiny_onnx,
                                                                    served, flags):
    server = rtsp_server(served)
    assert _run(server.url, tmp_path, tiny_onnx, *flags) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    source = report["sources"][0]
    assert report["frames"] == 5 and (source["kind"], source["live"]) == ("network", True)
    lines = (tmp_path / "out" / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_size"] for line in lines] == [[120, 160]] * 5


def test_frames_of_a_multicast_rtsp_stream_come_in_order(rtsp_server):
    """6 s of the stream on one connection: past the 2-4 s at which the test server's RTCP
    (off now) once ended it with a BYE, a reconnect that started the frames' clock afresh."""
    server = rtsp_server("udp_multicast")
    source = open_source(server.url, rtsp_transport="udp_multicast")
    frames = []
    try:
        for frame in source:
            frames.append(frame)
            if frame.timestamp >= 6.0 or len(frames) == 200:
                break
    finally:
        source.close()
    indices = [frame.index for frame in frames]
    assert indices == sorted(set(indices))  # in order (a live source may drop some)
    times = [frame.timestamp for frame in frames]
    assert times == sorted(set(times)) and times[-1] >= 6.0, times
    assert all(frame.image.shape == (120, 160, 3) for frame in frames)


def test_a_camera_serving_rtp_over_udp_only_is_refused_over_tcp_the_default(rtsp_server, tmp_path,
                                                                           tiny_onnx, capsys):
    """What `--rtsp-transport udp` is for: dbrt always asked for TCP, which such a camera
    refuses with 461 Unsupported Transport, FFmpeg's "Protocol not supported": the line says
    which transport was refused and which to try."""
    server = rtsp_server("udp")
    assert _run(server.url, tmp_path, tiny_onnx) == 2
    err = capsys.readouterr().err
    assert err == (f"dbrt run: error: cannot open {server.url}: Protocol not supported (the "
                   "server does not send this stream over tcp: ask for another transport with "
                   "--rtsp-transport / rtsp_transport: udp, udp_multicast, http)\n"), err
