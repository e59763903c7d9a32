"""Stop signals for a running pipeline: the first SIGINT (Ctrl-C) or SIGTERM (docker stop,
systemd, Kubernetes) drains -- no new frames are read, every frame already read reaches the
sinks --, the second stops at once (the frames in flight are lost, and counted), a third
raises at once (a run stuck in a sink or a decoder).

The handlers only set flags. A KeyboardInterrupt raised wherever the main thread happens to
be cannot be caught reliably: landing in the caller's loop body or between two statements of
the pipeline's own loop, it aborted the run and lost the frames in flight.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Dict, List, Optional, Sequence

from engine.signals import ignored


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; `signum` is which (exit status 128 + signum by convention)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _taken_over(handlers) -> List[int]:
    """The signals a handler installed before the run's own recorded for it: those `dbrt run`
    received while it started and had no run to stop yet (its `take_pending()`)."""
    for handler in handlers:
        take_pending = getattr(getattr(handler, "__self__", None), "take_pending", None)
        if take_pending is not None:
            return take_pending()
    return []


class StopSignals:
    """Handlers for `signals` while a run lasts (installed only from the main thread, where
    Python runs signal handlers), not for a signal that is `ignored`; `restore()` puts the
    previous handlers back. Runs may overlap: a handler left behind by a finished run passes
    signals on to its predecessor."""

    def __init__(self, signals: Sequence[int], drain: Callable[[], None],
                 abort: Callable[[], None], drain_limit: Optional[float] = None):
        self.signals = tuple(signals)
        self._drain, self._abort = drain, abort
        self.drain_limit = drain_limit
        self._previous: Dict[int, object] = {}
        self._active = False
        self._deadline: Optional[threading.Timer] = None
        self.received: List[int] = []
        self.drain_expired = False  # the drain limit passed: the run was stopped at once
        self._drained = False  # the run's frames are all out: its outputs are closing

    @property
    def first(self) -> Optional[int]:
        return self.received[0] if self.received else None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._active = True
        for signum in (s for s in self.signals if not ignored(s)):
            previous = signal.signal(signum, self._handle)
            self._previous[signum] = signal.SIG_DFL if previous is None else previous
        for signum in _taken_over(self._previous.values()):
            self._handle(signum, None)

    def drained(self) -> None:
        """Every frame read is out: closing the outputs that follows is no part of the drain,
        so its limit no longer applies (past it, a slow close was said to be a drain expired)."""
        self._drained = True
        if self._deadline is not None:
            self._deadline.cancel()

    def restore(self) -> None:
        """Put the previous handlers back; from another thread (a run closed there) Python
        cannot, so ours stay, inactive: they pass every signal on to the previous ones."""
        self._active = False
        if self._deadline is not None:
            self._deadline.cancel()
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handle:  # else a later run's handler is there
                signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if not self._active:
            self._forward(signum, frame)
            return
        self.received.append(signum)
        if len(self.received) == 1:
            self._drain()
            self.start_deadline()
        elif len(self.received) == 2:
            self._abort()
        else:
            raise Interrupted(signum)

    def start_deadline(self) -> None:
        """The drain began (a signal here, or a KeyboardInterrupt the run caught itself):
        past `drain_limit` the run stops at once."""
        if self.drain_limit is None or self._deadline is not None:
            return
        self._deadline = threading.Timer(self.drain_limit, self._drain_too_long)
        self._deadline.daemon = True
        self._deadline.start()

    def _drain_too_long(self) -> None:
        # not ended, its frames not all out, nor stopped at once since
        if self._active and not self._drained and len(self.received) < 2:
            self.drain_expired = True
            self._abort()

    def _forward(self, signum, frame) -> None:
        previous = self._previous[signum]
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
