"""Ctrl-C and SIGTERM while TensorRT builds an engine (minutes on a Jetson).

A build is one long C++ call: Python runs a signal handler only once the main thread runs
Python code again, which it does not until the build returns, and an exception raised in a
progress-monitor callback cannot cross TensorRT's noexcept interface. So while a build runs the
signals are noted at the C level (`signal.set_wakeup_fd`) and a watcher thread acts on them at
once: the first asks the build to stop (TensorRT 10+: the progress monitor returns False at its
next step, which cancels the build; 8.6 has no monitor, so its build runs to its end), the
second stops the process at once. After the build, the first signal is raised as a
KeyboardInterrupt carrying `signum` (the command line exits 130 / 143), and nothing is written.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Optional

from ..signal_watch import SignalWatch

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt(signum: int) -> KeyboardInterrupt:
    stop = KeyboardInterrupt(signal.Signals(signum).name)
    stop.signum = signum  # the command line's exit status: 128 + signum
    return stop


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class BuildSignals:
    """Within `with BuildSignals(cancellable) as signals:` around a build: `signals.cancel` is
    set by the first SIGINT / SIGTERM (a progress monitor reads it), `signals.signum` says which
    came; the second ends the process (`exit`, 128 + signum). A signal that is `ignored` stays
    so. Only in the main thread, where Python lets a program set signal handlers; elsewhere it
    does nothing."""

    def __init__(self, cancellable: bool, say: Optional[Callable[[str], None]] = None,
                 exit: Callable[[int], None] = os._exit):
        self.cancel = threading.Event()
        self.signum: Optional[int] = None
        self._cancellable, self._say, self._exit = cancellable, say or _say, exit
        self._watch = SignalWatch(SIGNALS, self._noted, self._received, name="dbrt-build-signals")

    def __enter__(self) -> "BuildSignals":
        # a Python handler of our own: the C handler then writes the wakeup descriptor; an
        # ignored signal (a background job's SIGINT) stays ignored, and the kernel drops it
        self._watch.install()
        return self

    def _noted(self, signum, frame) -> None:
        """Runs in the main thread only after the build: the watcher has acted on it already."""

    def _received(self, signum: int) -> None:
        if self.signum is not None:
            self._say("stopping at once")
            self._exit(128 + signum)
            return
        self.signum = signum
        self.cancel.set()
        self._say("cancelling the engine build (again to stop at once)" if self._cancellable else
                  "this TensorRT cannot cancel a build: stopping when it ends (again to stop at once)")

    def __exit__(self, *exc) -> None:
        self._watch.restore()
