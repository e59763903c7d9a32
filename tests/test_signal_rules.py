"""The rules every stop-signal handler of dbrt keeps (engine.signals, engine.signal_watch), where
training and the benchmarks install theirs: a handler installed from C (reported as None) is
put back as the default, and an ignored SIGTERM stays ignored."""
import signal

import pytest


def test_training_puts_a_handler_installed_from_c_back_as_the_default(monkeypatch):
    """signal.signal returns None for such a handler; training passed it back to signal.signal,
    which raises TypeError as the training ends."""
    pytest.importorskip("torch")
    from export.train.loop import _StopRequest

    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    install = signal.signal

    def installed_from_c(signum, handler):
        install(signum, handler)
        return None  # what signal.signal says of a handler installed from C

    try:
        monkeypatch.setattr(signal, "signal", installed_from_c)
        with _StopRequest() as stop:
            assert signal.getsignal(signal.SIGTERM) == stop._handle
        monkeypatch.undo()
        # an ignored one was left alone; the others are back, as the default
        assert {s: signal.getsignal(s) for s in kept} == {
            s: signal.SIG_IGN if kept[s] == signal.SIG_IGN else signal.SIG_DFL for s in kept}
    finally:
        for signum, handler in kept.items():
            install(signum, handler)
