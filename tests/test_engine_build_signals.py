"""Ctrl-C / SIGTERM during an engine build (engine.tensorrt.cancel), through the TensorRT double:
a build is one C++ call in which Python runs no signal handler, so the signal is acted on by a
watcher thread: TensorRT 10+ cancel the build at their next progress step, 8.6 finishes it;
either way the signal is raised after it and no engine is written. A second signal stops the
process at once."""
import os
import signal
import threading
import time

import pytest
from engine_helpers import SMALL, trt  # noqa: F401

import trt_double.builder as double_builder
from engine.tensorrt import cancel
from engine.tensorrt.build import BuildOptions, build_engine_file


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the signal was not acted on"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_build_stops_it_and_writes_no_engine(trt, tiny_onnx, tmp_path, monkeypatch,
                                                               signum):
    said, phases = [], []
    before = {s: signal.getsignal(s) for s in cancel.SIGNALS}
    monkeypatch.setattr(cancel, "_say", said.append)
    original = double_builder.run_build_phases

    def build_phases_after_a_signal(config, steps):
        os.kill(os.getpid(), signum)  # as the user's Ctrl-C arrives mid-build
        _wait_for(lambda: said)
        phases.append(original(config, steps))
        return phases[-1]

    monkeypatch.setattr(double_builder, "run_build_phases", build_phases_after_a_signal)
    engine = tmp_path / "tiny.engine"
    with pytest.raises(KeyboardInterrupt) as stopped:
        build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    assert stopped.value.signum == signum
    monitored = hasattr(trt, "IProgressMonitor")
    # 10.x / 11.x: the monitor cancelled the build at its first step; 8.6 built to the end
    assert phases == [not monitored]
    assert said == ["cancelling the engine build (again to stop at once)" if monitored else
                    "this TensorRT cannot cancel a build: stopping when it ends (again to stop at once)"]
    assert not engine.exists() and not engine.with_name("tiny.engine.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    assert {s: signal.getsignal(s) for s in cancel.SIGNALS} == before


def test_the_handlers_before_the_build_are_back_after_it(trt, tiny_onnx, tmp_path):
    before = {s: signal.getsignal(s) for s in cancel.SIGNALS}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    build_engine_file(tiny_onnx, tmp_path / "tiny.engine", BuildOptions(profile=SMALL))
    assert {s: signal.getsignal(s) for s in cancel.SIGNALS} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup
    assert not any(t.name == "dbrt-build-signals" for t in threading.enumerate())


def test_a_second_signal_stops_the_process_at_once():
    said, exits = [], []
    with cancel.BuildSignals(cancellable=True, say=said.append, exit=exits.append) as signals:
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(signals.cancel.is_set)
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: exits)
    assert signals.signum == signal.SIGINT and exits == [128 + signal.SIGTERM]
    assert said == ["cancelling the engine build (again to stop at once)", "stopping at once"]


def test_a_build_outside_the_main_thread_leaves_the_signals_alone(trt, tiny_onnx, tmp_path):
    before = {s: signal.getsignal(s) for s in cancel.SIGNALS}
    seen, errors = [], []

    def build():
        try:
            with cancel.BuildSignals(cancellable=True) as signals:
                seen.append({s: signal.getsignal(s) for s in cancel.SIGNALS})
            build_engine_file(tiny_onnx, tmp_path / "tiny.engine", BuildOptions(profile=SMALL))
            seen.append(signals.signum)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=build)
    worker.start()
    worker.join()
    assert not errors and seen == [before, None]
    assert (tmp_path / "tiny.engine").is_file()


@pytest.mark.parametrize("flavour", ["8.6", "10.x"])
def test_a_signal_during_int8_calibration_ends_it_and_caches_nothing(monkeypatch, tiny_onnx, tmp_path,
                                                                      rng, flavour):
    """A calibration cut short must not be cached: a later build would take its ranges as whole."""
    import numpy as np
    import trt_double

    trt_double.install(monkeypatch, flavour)
    said, pulled = [], []
    monkeypatch.setattr(cancel, "_say", said.append)

    def batches(shape):
        for k in range(5):
            if k == 1:
                os.kill(os.getpid(), signal.SIGINT)
                _wait_for(lambda: said)
            pulled.append(k)
            yield rng.random(shape, dtype=np.float32)

    cache = tmp_path / "calib.cache"
    options = BuildOptions(precision="int8", profile=SMALL, calibration=batches, calibration_cache=cache)
    with pytest.raises(KeyboardInterrupt):
        build_engine_file(tiny_onnx, tmp_path / "int8.engine", options)
    assert pulled == [0, 1]  # no batch asked for after the signal
    assert sorted(p.name for p in tmp_path.iterdir()) == []
