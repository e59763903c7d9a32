"""A SIGINT ignored when dbrt starts stays ignored (a shell's background job, `dbrt run ... &`
in a script, gets it so that a Ctrl-C meant for the foreground job does not reach it): the
handlers of a run's start and of the run itself stopped such a job all the same, as did those
of an engine build and of training. SIGTERM still stops it; an ignored SIGTERM stays ignored
too (`dbrt triton serve`). Real `dbrt run` processes started with SIGINT ignored."""
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


@pytest.fixture
def sigint_ignored():
    """SIGINT ignored for the test, as a shell's background job gets it; the process's
    handlers of both signals put back after it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield before
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the signal was not acted on"
        time.sleep(0.01)


def test_an_engine_build_leaves_an_ignored_sigint_ignored(sigint_ignored):
    """An ignored SIGINT cancelled a build all the same; SIGTERM still does."""
    from engine.tensorrt.cancel import BuildSignals

    said = []
    with BuildSignals(cancellable=True, say=said.append, exit=lambda code: None) as signals:
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signals._noted
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(signals.cancel.is_set)
    assert signals.signum == signal.SIGTERM and len(said) == 1
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == sigint_ignored[signal.SIGTERM]


def test_training_leaves_an_ignored_sigint_ignored(sigint_ignored):
    pytest.importorskip("torch")
    from export.train.loop import _StopRequest

    with _StopRequest() as stop:
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._handle
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == sigint_ignored[signal.SIGTERM]


class _EndedServer:
    """A stand-in for engine.triton.server.TritonServer: a server that exits at once, having
    noted the SIGTERM handler it ran under."""

    grpc_url, http_url, metrics_url, log_path = "h:1", "http://h:2", "http://h:3/metrics", "log"
    seen = []

    def __init__(self, *args, **kwargs):
        self.process = self

    def __enter__(self):
        _EndedServer.seen.append(signal.getsignal(signal.SIGTERM))
        return self

    def __exit__(self, *exc):
        return None

    def poll(self):
        return 1

    returncode = 1

    def log_tail(self):
        return "E: gone"


def test_triton_serve_leaves_an_ignored_sigterm_ignored(monkeypatch):
    """`trap '' TERM` before `dbrt triton serve`: its handler raised at a SIGTERM all the same."""
    import argparse

    from engine.triton import server
    from engine.triton.server import TritonServerError
    from pipeline.commands import triton

    monkeypatch.setattr(server, "TritonServer", _EndedServer)
    args = argparse.Namespace(repository="repo", venv=None, host="127.0.0.1", http_port=0,
                              grpc_port=0, metrics_port=0, models=None, ready_timeout=1.0,
                              verbose=False)
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _EndedServer.seen.clear()
    try:
        with pytest.raises(TritonServerError, match="exited with code 1"):
            triton._serve(args)
        assert _EndedServer.seen == [signal.SIG_IGN]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


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
