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
from typing import Callable, Dict, Optional

from ..signals import ignored

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
        self._previous: Dict[int, object] = {}
        self._pipe = None
        self._watcher: Optional[threading.Thread] = None

    def __enter__(self) -> "BuildSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        read, write = os.pipe()
        os.set_blocking(write, False)  # the C handler must never block on a full pipe
        self._pipe = (read, write)
        # a Python handler of our own: the C handler then writes the pipe; an ignored signal
        # (a background job's SIGINT) stays ignored, and the kernel drops it before the pipe
        for signum in (s for s in SIGNALS if not ignored(s)):
            self._previous[signum] = signal.signal(signum, self._noted)
        self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="dbrt-build-signals", daemon=True)
        self._watcher.start()
        return self

    def _noted(self, signum, frame) -> None:
        """Runs in the main thread only after the build: the watcher has acted on it already."""

    def _watch(self) -> None:
        read = self._pipe[0]
        while True:
            data = os.read(read, 64)
            if not data:  # the write end closed: the build is over
                return
            for signum in data:
                if signum in SIGNALS:
                    self._received(signum)

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
        if self._pipe is None:
            return
        for signum, handler in self._previous.items():  # first: none is lost in between
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._previous_fd)
        read, write = self._pipe
        os.close(write)
        self._watcher.join()
        os.close(read)
        self._pipe = None
