"""A SIGINT ignored when dbrt starts stays ignored (a shell's background job, `dbrt run ... &`
in a script, gets it so that a Ctrl-C meant for the foreground job does not reach it): the
handlers of a run's start and of the run itself stopped such a job all the same. SIGTERM
still stops it. Real `dbrt run` processes started with SIGINT ignored."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.commands._starting import StartSignals
from pipeline.interrupts import StopSignals

from media import write_video
from serve_helpers import REPO


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _dbrt_with_sigint_ignored(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), preexec_fn=_ignore_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sigint_then_sigterm(proc):
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)  # apart: the SIGINT is delivered first
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_start_and_run_handlers_leave_an_ignored_sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StartSignals() as start:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == start._handle
            stop = StopSignals((signal.SIGINT, signal.SIGTERM), drain=lambda: None,
                               abort=lambda: None)
            stop.install()
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == stop._handle
            stop.restore()
            assert signal.getsignal(signal.SIGTERM) == start._handle
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_does_not_stop_the_start(tmp_path, tiny_onnx):
    """Waiting for a stream's first connect: the SIGINT stopped it (130); SIGTERM does."""
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    url = f"http://127.0.0.1:{server.getsockname()[1]}/live.ts"
    proc = _dbrt_with_sigint_ignored("run", url, "--model", str(tiny_onnx), "--reconnect", "-1",
                                     "--quiet", "--no-video", "-o", str(tmp_path / "out"))
    try:
        server.settimeout(30)
        connection, _ = server.accept()  # the first connect is under way
        _, err = _sigint_then_sigterm(proc)
        connection.close()
    finally:
        server.close()
    assert proc.returncode == 143, err
    assert err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: opening the sources"]


@pytest.mark.slow
def test_an_ignored_sigint_does_not_stop_the_run(tmp_path, tiny_onnx):
    """Mid-run: the SIGINT drained it (130); the run goes on, and SIGTERM drains it (143)."""
    video = write_video(tmp_path / "long.mp4", frames=400, height=72, width=128)
    out = tmp_path / "out"
    jsonl = out / "detections.jsonl"
    proc = _dbrt_with_sigint_ignored("run", str(video), "--model", str(tiny_onnx), "-o", str(out),
                                     "--threads", "1", "--limit-side", "256", "--no-video")

    def written():
        return len(jsonl.read_text().splitlines()) if jsonl.is_file() else 0

    def wait_for(count):
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and written() < count:
            time.sleep(0.02)

    try:
        wait_for(5)
        assert proc.poll() is None, "the run ended before it could be signalled"
        proc.send_signal(signal.SIGINT)
        at_sigint = written()
        wait_for(at_sigint + 20)
        assert proc.poll() is None and written() >= at_sigint + 20, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and report["frames"] == written() < 400
