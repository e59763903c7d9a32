"""SIGTERM (docker stop, systemd) or Ctrl-C while `dbrt run` starts -- waiting for a stream's
first connect, loading the model -- stops it at once with one line, 143 / 130, and leaves the
previous run's results as they were; a signal once its outputs exist is the run's own (it
stops before its first frame and writes its report). It killed the process (SIGTERM: no line,
exit -15) or waited out the connect and said only "dbrt: interrupted". Real `dbrt run`
processes; servers on 127.0.0.1 that accept connections and never answer."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.commands._starting import StartSignals
from pipeline.interrupts import Interrupted
from pipeline.runner import Pipeline
from pipeline.shipped import DEMO_VIDEO

from media import FakeDetector
from serve_helpers import REPO, dbrt

EARLIER = '{"earlier": "run"}'


def _silent_server() -> socket.socket:
    """Accepts connections (the kernel does) and never answers: a camera behind a router that
    drops packets, or a Triton server that hangs."""
    return socket.create_server(("127.0.0.1", 0))


def _earlier_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(EARLIER)
    return out


def _stop(proc, *signums):
    for signum in signums:
        proc.send_signal(signum)
        time.sleep(0.1)  # apart: two of the same signal pending at once are delivered as one
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_the_first_connect_ends_the_run_at_once(tmp_path, tiny_onnx, signum, code):
    """The first connect was waited out (up to 10 s) or the process killed."""
    out, server = _earlier_results(tmp_path), _silent_server()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/live.ts"
    proc = dbrt("run", url, "--model", str(tiny_onnx), "--reconnect", "-1", "--quiet",
                "--no-video", "-o", str(out))
    try:
        server.settimeout(30)
        connection, _ = server.accept()  # the first connect is under way
        printed, err = _stop(proc, signum)
    finally:
        server.close()
    assert proc.returncode == code, err
    name = signal.Signals(signum).name
    # nothing else: no traceback, no "is not up (no answer within 10 s)": the wait was cut short
    assert err.splitlines() == [f"dbrt run: stopped ({name}) while starting: opening the sources"]
    assert printed == ""
    assert (out / "report.json").read_text() == EARLIER and os.listdir(out) == ["report.json"]
    connection.close()


def _stuck_in_the_model_load(tmp_path):
    """A run whose model load waits in native code (gRPC) for a Triton server that never
    answers: Python's signal handlers do not run until it returns."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed")
    out, server = _earlier_results(tmp_path), _silent_server()
    proc = dbrt("run", str(DEMO_VIDEO), "--model", f"triton://127.0.0.1:{server.getsockname()[1]}/m",
                "--quiet", "-o", str(out))
    server.settimeout(30)
    connection, _ = server.accept()  # the model load is under way
    return proc, (server, connection), out


def test_sigterm_during_a_model_load_in_native_code_ends_the_process(tmp_path):
    proc, server, out = _stuck_in_the_model_load(tmp_path)
    try:
        printed, err = _stop(proc, signal.SIGTERM)
    finally:
        for end in server:
            end.close()
    assert proc.returncode == 143, err
    assert err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: loading the model "
                                "(it did not stop within 2 s)"]
    assert (out / "report.json").read_text() == EARLIER


def test_a_third_signal_during_the_start_ends_it_at_once(tmp_path):
    proc, server, out = _stuck_in_the_model_load(tmp_path)
    try:
        printed, err = _stop(proc, signal.SIGTERM, signal.SIGINT, signal.SIGTERM)
    finally:
        for end in server:
            end.close()
    assert proc.returncode == 143, err
    assert err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: loading the model "
                                "(at once: a third signal)"]


def test_a_signal_once_the_outputs_exist_is_the_runs_own():
    """Between the outputs made and the run's handlers installed: the run takes it and stops
    before its first frame, its report saying so, as a run stopped at once is reported."""
    with StartSignals() as start:
        start.end()
        os.kill(os.getpid(), signal.SIGTERM)  # handled (recorded) before the next line runs
        assert start.received == [signal.SIGTERM]
        pipe = Pipeline([str(DEMO_VIDEO)], FakeDetector(), stop_signals=(signal.SIGINT, signal.SIGTERM))
        with pytest.raises(Interrupted) as caught:
            pipe.run()
        assert start.stopped is None  # the run took it
    assert caught.value.signum == signal.SIGTERM
    report = pipe.report()
    assert report["interrupted"] and report["frames"] == 0
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_a_stop_that_cancelled_an_engine_build_is_said_as_a_stop(monkeypatch, tmp_path, capsys):
    """An engine build (the model load of an .onnx on TensorRT) has handlers of its own, which
    raise the signal once the build is cancelled: it ended as 'dbrt: terminated'."""
    from engine.tensorrt.cancel import BuildSignals, interrupt
    from pipeline.cli import main
    from pipeline.commands import _model

    def build_detector(args):
        with BuildSignals(cancellable=True, say=lambda text: None) as signals:
            os.kill(os.getpid(), signal.SIGTERM)
            assert signals.cancel.wait(10)  # its watcher heard it: the build is cancelled
        raise interrupt(signals.signum)

    monkeypatch.setattr(_model, "build_detector", build_detector)
    assert main(["run", str(DEMO_VIDEO), "--quiet", "-o", str(tmp_path / "out")]) == 143
    assert capsys.readouterr().err.splitlines() == [
        "dbrt run: stopped (SIGTERM) while starting: loading the model"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _children(pid: int) -> set:
    """Child processes of `pid`, made by any of its threads (Linux)."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            found.update(int(child) for child in listed.read().split())
    return found


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None or not os.path.isdir("/proc"),
                    reason="no gst-launch-1.0, or no /proc")
def test_a_stop_during_the_start_ends_a_gstreamer_sources_child(tmp_path, tiny_onnx):
    """gst-launch-1.0 runs in a session of its own (a terminal's Ctrl-C is dbrt's to pass on):
    a process killed by SIGTERM left it running."""
    server = _silent_server()
    spec = (f"gst:tcpclientsrc host=127.0.0.1 port={server.getsockname()[1]} ! "
            "rawvideoparse width=8 height=4 format=bgr")
    proc = dbrt("run", spec, "--model", str(tiny_onnx), "--reconnect", "-1", "--quiet",
                "--no-video", "-o", str(tmp_path / "out"))
    try:
        server.settimeout(30)
        connection, _ = server.accept()  # gst-launch-1.0 connected: the first connect is under way
        children = _children(proc.pid)
        printed, err = _stop(proc, signal.SIGTERM)
    finally:
        server.close()
    assert proc.returncode == 143, err
    assert err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: opening the sources"]
    assert children and not any(os.path.exists(f"/proc/{child}") for child in children)
    connection.close()


STUCK_IN_THE_OUTPUTS = """import sys, threading
from pipeline.cli import main
from pipeline.commands import run

def stuck(pipe, out, args):  # a sink whose start never returns (a handler only records)
    print("making the outputs", flush=True)
    threading.Event().wait()

run._sinks = stuck
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None or not os.path.isdir("/proc"),
                    reason="no gst-launch-1.0, or no /proc")
def test_a_forced_exit_while_the_outputs_start_ends_a_gstreamer_sources_child(tmp_path, tiny_onnx):
    """The Pipeline owned the sources: the forced exit closed none, and gst-launch-1.0 (in a
    session of its own, waiting for its next frame) went on running."""
    server = _silent_server()
    spec = (f"gst:tcpclientsrc host=127.0.0.1 port={server.getsockname()[1]} ! "
            "rawvideoparse width=8 height=4 format=bgr")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", STUCK_IN_THE_OUTPUTS, "run", spec, "--model",
                             str(tiny_onnx), "--quiet", "--no-video", "-o", str(tmp_path / "out")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.settimeout(30)
        connection, _ = server.accept()
        connection.sendall(bytes(8 * 4 * 3))  # its first frame: the source is open
        assert proc.stdout.readline() == "making the outputs\n"
        children = _children(proc.pid)
        printed, err = _stop(proc, signal.SIGTERM, signal.SIGINT, signal.SIGTERM)
    finally:
        server.close()
    assert proc.returncode == 143, err
    assert err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: starting the outputs "
                                "(at once: a third signal)"]
    assert children and not any(os.path.exists(f"/proc/{child}") for child in children)
    connection.close()


def test_a_stop_while_the_report_is_written_still_ends_as_stopped(monkeypatch, tmp_path, capsys):
    """SIGTERM after the run's handlers were restored (its report being written) was recorded
    and ignored: exit 0, as if the run had not been stopped."""
    from pipeline.cli import main
    from pipeline.commands import run

    def finish(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # recorded before the next line runs
        finished(*args, **kwargs)

    finished = run.finish
    monkeypatch.setattr(run, "finish", finish)
    monkeypatch.setattr(run, "build_pipeline", _a_pipeline_of(FakeDetector()))
    out = tmp_path / "out"
    assert main(["run", str(DEMO_VIDEO), "--max-frames", "2", "--quiet", "-o", str(out)]) == 143
    assert json.loads((out / "report.json").read_text())["frames"] == 2  # the report is whole
    assert capsys.readouterr().err.splitlines()[-1] == "dbrt: terminated"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _a_pipeline_of(detector):
    def build_pipeline(args, start):
        pipe = Pipeline([str(DEMO_VIDEO)], detector, max_frames=args.max_frames,
                        stop_signals=(signal.SIGINT, signal.SIGTERM))
        Path(args.output).mkdir()
        return pipe, None, Path(args.output)

    return build_pipeline


def test_the_watcher_says_no_second_stop_line(monkeypatch, capfd):
    """The main thread said the stop as the watcher's time ran out: both printed it."""
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    with StartSignals(force_after=30) as start:
        assert start.say_stopped(signal.SIGTERM) == 143
        start._force(signal.SIGTERM, start.phase)  # the watcher, a moment later
    assert capfd.readouterr().err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: starting"]
    assert exits == []


LOADING_SLOWLY = """import runpy, sys

class Slowly:  # the command's modules load until the test says so (a busy machine)
    def find_spec(self, name, path=None, target=None):
        if name == "pipeline.cli":
            sys.meta_path.remove(self)
            print("loading", flush=True)
            sys.stdin.readline()

sys.meta_path.insert(0, Slowly())
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)  # python -m pipeline
"""


@pytest.mark.parametrize("signum, code, line", [(signal.SIGTERM, 143, "dbrt: terminated"),
                                                (signal.SIGINT, 130, "dbrt: interrupted")])
def test_a_stop_while_the_command_loads_says_one_line(signum, code, line):
    """The first 0.4-1 s, before `dbrt run` had handlers: SIGTERM killed it without a word
    (exit -15), Ctrl-C printed a KeyboardInterrupt traceback."""
    proc = subprocess.Popen([sys.executable, "-c", LOADING_SLOWLY, "run", "--help"], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "loading\n"
        proc.send_signal(signum)
        printed, err = proc.communicate("go on\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err.splitlines(), printed) == (code, [line], "")


def test_importing_the_package_leaves_a_programs_signal_handlers_alone():
    code = ("import signal, sys; import pipeline; from pipeline import Detections; "
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "
            "signal.getsignal(signal.SIGINT) is signal.default_int_handler, Detections.__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["True", "True", "Detections"], done.stderr
