"""engine.signal_watch, which an engine build's signals (engine.tensorrt.cancel) and `dbrt run`'s
start (pipeline.commands._starting) share: handlers for the signals not ignored, the wakeup
descriptor heard by a watcher thread, and everything put back in order -- also where a signal
arrives while it is installed or put back."""
import os
import signal
import threading
import time

import pytest

from engine.signal_watch import SignalWatch, restore_handlers
from engine.tensorrt.cancel import BuildSignals
from pipeline.commands._starting import StartSignals

STOPS = (signal.SIGINT, signal.SIGTERM)


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not acted on"
        time.sleep(0.01)


@pytest.fixture
def signals_kept():
    """The handlers and the wakeup descriptor of the test process, put back after the test
    whatever it left."""
    before = {s: signal.getsignal(s) for s in STOPS}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield before, wakeup
    signal.set_wakeup_fd(wakeup)
    for signum, handler in before.items():
        signal.signal(signum, handler)


def _watchers(name):
    return [t for t in threading.enumerate() if t.name == name]


def test_the_watcher_hears_each_signal_and_everything_is_put_back(signals_kept):
    before, wakeup = signals_kept
    heard = []

    def handler(signum, frame):
        pass

    watch = SignalWatch(STOPS, handler, heard.append, name="test-watch")
    assert watch.install() and watch.watching
    assert {s: signal.getsignal(s) for s in STOPS} == {s: handler for s in STOPS}
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for(lambda: heard)
    watch.restore()
    assert heard == [signal.SIGTERM] and not watch.watching
    assert {s: signal.getsignal(s) for s in STOPS} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup
    assert not _watchers("test-watch")


def test_a_deadline_passed_without_a_signal_is_told_once(signals_kept):
    told = []
    watch = SignalWatch(STOPS, lambda *a: None, lambda s: None, name="test-watch",
                        deadline=lambda: time.monotonic(), on_deadline=lambda: told.append(1))
    watch.install()
    _wait_for(lambda: told)
    _wait_for(lambda: not _watchers("test-watch"))  # the watcher ended with it
    watch.restore()
    assert told == [1]


def test_outside_the_main_thread_nothing_is_installed(signals_kept):
    before, _ = signals_kept
    installed = []
    watch = SignalWatch(STOPS, lambda *a: None, lambda s: None, name="test-watch")
    worker = threading.Thread(target=lambda: installed.append(watch.install()))
    worker.start()
    worker.join()
    assert installed == [False] and not watch.watching
    assert {s: signal.getsignal(s) for s in STOPS} == before
    watch.restore()  # nothing to put back


def test_a_handler_installed_from_c_is_put_back_as_the_default(signals_kept):
    """signal.getsignal reports such a handler as None, which signal.signal refuses."""
    signal.signal(signal.SIGTERM, lambda *a: None)
    restore_handlers({signal.SIGTERM: None})
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_signal_as_a_build_installs_its_handlers_cancels_the_build(signals_kept, monkeypatch):
    """The build's handlers were installed before its wakeup descriptor: a SIGTERM in between
    ran its handler, which does nothing (the watcher acts), and its byte went to the previous
    descriptor; the build went on, and no stop was raised after it."""
    install = signal.signal
    said = []

    def a_signal_once_installed(signum, handler):
        previous = install(signum, handler)
        if signum == signal.SIGTERM and getattr(handler, "__name__", "") == "_noted":
            os.kill(os.getpid(), signal.SIGTERM)  # the user's, just then
        return previous

    monkeypatch.setattr(signal, "signal", a_signal_once_installed)
    with BuildSignals(cancellable=True, say=said.append, exit=lambda code: None) as build:
        assert build.cancel.wait(5), "the signal was lost"
    assert build.signum == signal.SIGTERM
    assert said == ["cancelling the engine build (again to stop at once)"]


def _a_ctrl_c_as_sigint_is_put_back(monkeypatch):
    """signal.signal, but a SIGINT arrives the moment Python's own SIGINT handler is back:
    the KeyboardInterrupt it raises lands in the middle of putting the handlers back."""
    install = signal.signal

    def ctrl_c_once_put_back(signum, handler):
        previous = install(signum, handler)
        if signum == signal.SIGINT and handler is signal.default_int_handler:
            os.kill(os.getpid(), signal.SIGINT)
        return previous

    monkeypatch.setattr(signal, "signal", ctrl_c_once_put_back)


def test_a_ctrl_c_as_a_build_puts_its_handlers_back_leaves_nothing_of_it(signals_kept, monkeypatch):
    """Its watcher and wakeup descriptor were left in place, and its SIGTERM handler: later
    signals were the build's still (one said "cancelling the engine build", the next ended the
    process), and SIGTERM did nothing."""
    before, wakeup = signals_kept
    signal.signal(signal.SIGINT, signal.default_int_handler)
    exits = []
    with pytest.raises(KeyboardInterrupt):
        with BuildSignals(cancellable=True, say=lambda line: None, exit=exits.append):
            _a_ctrl_c_as_sigint_is_put_back(monkeypatch)
    assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    assert signal.set_wakeup_fd(wakeup) == wakeup
    assert not _watchers("dbrt-build-signals") and exits == []


def test_a_ctrl_c_as_a_start_puts_its_handlers_back_leaves_its_sigterm_handler_out(
        signals_kept, monkeypatch):
    """Its SIGTERM handler stayed: a later SIGTERM was recorded by a start long over, and did
    nothing."""
    before, wakeup = signals_kept
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with StartSignals():
            _a_ctrl_c_as_sigint_is_put_back(monkeypatch)
    assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    assert signal.set_wakeup_fd(wakeup) == wakeup
    assert not _watchers("start-signals")


class _SlowToClose:
    """A source whose close() takes longer than the start's FORCE_AFTER_S (a stream's reader
    thread being joined, on a busy machine)."""

    def __init__(self, seconds: float):
        self.seconds, self.closed = seconds, threading.Event()

    def close(self):
        time.sleep(self.seconds)
        self.closed.set()

    def join(self, timeout=None):
        pass


def test_a_start_whose_sources_close_past_its_time_is_still_ended(monkeypatch, capfd):
    """Its watcher, back from closing them past FORCE_AFTER_S after the signal, waited with a
    timeout of 0 (a non-blocking read: BlockingIOError), took that for its read end closed
    and ended: a start stuck in native code was never ended. It ends it FORCE_AFTER_S after
    they are closed (a stream's reader is let go within up to 3 s)."""
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    with StartSignals(force_after=0.05) as start:
        start.phase = "loading the model"
        start.watch([_SlowToClose(0.5)])
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: exits)
    assert exits == [143]
    assert capfd.readouterr().err.splitlines() == [
        "dbrt run: stopped (SIGTERM) while starting: loading the model (it did not stop within 0.05 s)"]
