"""Stop signals while `dbrt run` starts: SIGINT (Ctrl-C) and SIGTERM (docker stop, systemd)
that arrive before the run's own handlers (pipeline.interrupts) are installed. Without these,
SIGTERM killed the process (no line, no report) and Ctrl-C raised wherever the start was: a
traceback, or a wait for a stream's first connect that went on.

The handlers only record the signal (see pipeline.interrupts why). Python runs them only
between two bytecodes of the main thread, so a start busy in native code (an ONNX Runtime
session, a TensorRT engine build, a gRPC call to a Triton server that does not answer) would
not see them for minutes: a watcher thread hears each signal at once through the wakeup file
descriptor, closes the sources opened so far (which ends the wait for their first connects)
and, when the main thread has not stopped FORCE_AFTER_S after they are closed, or at a third
signal, prints the line and ends the process itself.

Once the Pipeline exists its StopSignals take over, and the signals recorded meanwhile with
them (`take_pending`): such a run stops before its first frame and writes its report, as any
run stopped at once does. A signal once the run's handlers are restored again (its report being written) ends the
command as stopped too (`check_after_the_run`): a service manager's stop is not said to be a
run that ended by itself.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import List, Optional, Sequence

from engine.signal_watch import SignalWatch
from pipeline.interrupts import Interrupted

# within docker stop's 10 s before SIGKILL, and long enough for a start between two steps
FORCE_AFTER_S = 2.0
# a forced exit waits at most this long for the sources it closes to end their child processes
# (a gst: source's gst-launch-1.0 is ended by a thread of its own, which the exit would end)
CLOSE_WITHIN_S = 3.0


def stopped_line(signum: int, phase: str) -> str:
    return f"dbrt run: stopped ({signal.Signals(signum).name}) while starting: {phase}"


class StartSignals:
    """`with StartSignals() as start:` around a run's start (main thread only; elsewhere it does
    nothing; a signal that is `ignored` stays so). The main thread names its `phase`, hands the
    sources it opens to `watch`, and calls `check()` where the start may stop (it raises
    Interrupted)."""

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                 force_after: float = FORCE_AFTER_S):
        self.signals = tuple(signals)
        self.force_after = force_after
        self.phase = "starting"
        self.received: List[int] = []  # recorded by the handler, in the main thread
        # set by the first signal: a step that waits on it (a model server not up yet) ends
        # its wait at once, rather than by the forced exit
        self.stopping = threading.Event()
        self._sources: list = []  # being opened: a first signal closes them
        self._owned: list = []  # the Pipeline's: closed only by a forced exit (their children)
        self._saying = threading.Lock()  # one stop line: the main thread's or the watcher's
        self._taken = False  # the run's handlers took the signals recorded
        self._taken_count = 0  # how many: those after came once the run's were restored
        self._over = threading.Event()  # the start ended: the watcher ends
        self._heard, self._first_heard = 0, signal.SIGINT  # signals the watcher heard
        self._force_at: Optional[float] = None  # FORCE_AFTER_S after the first closed the sources
        self._watch = SignalWatch(self.signals, self._handle, self._heard_one, name="start-signals",
                                  deadline=lambda: self._force_at, on_deadline=self._too_late)

    @property
    def stopped(self) -> Optional[int]:
        """The first signal received before the run's handlers took over, else None."""
        return self.received[0] if self.received and not self._taken else None

    def __enter__(self) -> "StartSignals":
        self._watch.install()  # not of a signal `ignored` (a background job's SIGINT)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.end()
        finally:  # the handlers last: they record what comes meanwhile (check_after_the_run)
            self._watch.restore_handlers()

    def end(self) -> None:
        """The start is over (stopped, failed, or the run about to start): the watcher ends;
        the handlers stay until the `with` ends (the run's own pass signals on to them)."""
        with self._saying:  # a forced exit under way ends the process first
            self._over.set()
        self._watch.stop_watching(join_within=1.0)

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)
        self.stopping.set()

    def take_pending(self) -> List[int]:
        """For the run's StopSignals as they are installed: the signals it is now to handle."""
        pending = [] if self._taken else list(self.received)
        self._taken, self._taken_count = True, len(self.received)
        return pending

    def check_after_the_run(self) -> None:
        """A signal received once the run's handlers were restored (its report being written):
        the run ended, but was stopped all the same (a service manager's stop): 143 / 130."""
        late = self.received[self._taken_count:] if self._taken else []
        if late:
            raise Interrupted(late[0])

    def watch(self, sources) -> None:
        """The sources being opened: a stop closes them (their first connects are not waited
        out); none once the Pipeline owns them."""
        self._sources = list(sources)
        if self.received or self._heard:
            self._close_sources()

    def outputs(self, sources) -> None:
        """The Pipeline owns the sources: a stop from here on is the run's (`take_pending`),
        but a forced exit still closes them (a gst: source's gst-launch-1.0 would outlive it)."""
        self.phase, self._sources, self._owned = "starting the outputs", [], list(sources)

    def stopped_by(self, error: BaseException) -> Optional[int]:
        """The signal that stopped the start, if one did: one these handlers received, or one
        that handlers of a step (an engine build's, engine.tensorrt.cancel) raised as theirs."""
        if self.stopped is not None:
            return self.stopped
        return getattr(error, "signum", None) if isinstance(error, KeyboardInterrupt) else None

    def say_stopped(self, signum: int) -> int:
        """The line of a start that stopped; the exit status (128 + the signal)."""
        with self._saying:  # the watcher forcing the exit meanwhile says it, and only it
            self._over.set()
            print(stopped_line(signum, self.phase), file=sys.stderr)
        return 128 + signum

    def check(self) -> None:
        if self.stopped is not None:
            raise Interrupted(self.stopped)

    # -- the watcher thread ---------------------------------------------------------------------
    def _heard_one(self, signum: int) -> bool:
        """A signal, the moment it arrives: False ends the watcher."""
        if self._over.is_set():
            return False
        self._heard += 1
        if self._heard == 1:
            self._first_heard = signum
            self.stopping.set()  # the main thread in native code: its next wait does not begin
            self._close_sources()  # a stream's reader let go: up to READER_GRACE_S (3 s)
            # counted from here: the main thread, whose wait they end, closes them too
            self._force_at = time.monotonic() + self.force_after
        elif self._heard >= 3:
            self._force(signum, f"{self.phase} (at once: a third signal)")
            return False
        return True

    def _too_late(self) -> None:
        """FORCE_AFTER_S after the first signal closed the sources the main thread has not
        stopped: it is in native code."""
        self._force(self._first_heard, f"{self.phase} (it did not stop within {self.force_after:g} s)")

    def _close_sources(self, owned=(), wait: float = 0.0) -> None:
        sources = self._sources + list(owned)
        for source in sources:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - the others are closed all the same
                pass
        deadline = time.monotonic() + wait
        for source in sources if wait else ():
            try:
                source.join(max(0.0, deadline - time.monotonic()))  # its reader: the child ended
            except Exception:  # noqa: BLE001 - no reader to wait for
                pass

    def _force(self, signum: int, phase: str) -> None:
        with self._saying:  # held until the process ends
            if self._over.is_set():  # the main thread ended the start, or said the stop
                return
            self._close_sources(self._owned, wait=CLOSE_WITHIN_S)  # ends their children (gst-launch)
            os.write(sys.stderr.fileno(), (stopped_line(signum, phase) + "\n").encode())
            os._exit(128 + signum)

