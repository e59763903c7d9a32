"""Stop signals heard at once while the main thread is busy in native code (a TensorRT engine
build, an ONNX Runtime session's creation, a gRPC call): Python runs a signal handler only
between two bytecodes of the main thread, so such a signal would wait for the native call to
return. Here the C-level handler also writes the signal's number to the wakeup file descriptor
(`signal.set_wakeup_fd`), and a watcher thread reading it acts on it at once.

What a first, second or third signal does is the caller's (engine.tensorrt.cancel,
pipeline.commands._starting); this module installs and restores: the handlers of the signals
that are not `ignored`, the wakeup descriptor, the watcher.
"""
from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Callable, Dict, Optional, Sequence

from .signals import ignored


def restore_handlers(previous: Dict[int, object]) -> None:
    """Put back the handlers `signal.signal` returned; one installed from C, which Python reports
    as None and cannot install again, is put back as the default. Each is put back even where
    one put back before it raises at once (Python's own SIGINT handler, a Ctrl-C pending)."""
    if not previous:
        return
    (signum, handler), *rest = previous.items()
    try:
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    finally:
        restore_handlers(dict(rest))


class SignalWatch:
    """`install()` (main thread only, where Python lets a program set handlers; elsewhere it
    does nothing and says so) puts `handler` on each of `signals` not `ignored`, and calls
    `heard(signum)` from a watcher thread the moment one arrives; `heard` returning False ends
    the watcher. `deadline()`, a time.monotonic() value or None, is asked before each wait:
    once it passes with no signal, `on_deadline()` is called and the watcher ends."""

    def __init__(self, signals: Sequence[int], handler: Callable, heard: Callable[[int], object],
                 name: str, deadline: Callable[[], Optional[float]] = lambda: None,
                 on_deadline: Callable[[], None] = lambda: None):
        self.signals = tuple(signals)
        self._handler, self._heard, self._name = handler, heard, name
        self._deadline, self._on_deadline = deadline, on_deadline
        self._previous: Dict[int, object] = {}
        self._previous_fd = -1
        # a socket pair, not a pipe: the watcher waits with a timeout (`deadline`), and it is
        # the only kind of descriptor set_wakeup_fd takes on Windows
        self._wakeup: Optional[tuple] = None
        self._watcher: Optional[threading.Thread] = None

    @property
    def watching(self) -> bool:
        return self._wakeup is not None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            self._start_watching()
            # after the descriptor: a signal in between goes to the previous handler and is
            # heard by the watcher too, where the other order lost it (ours noted it, and its
            # byte went to the previous descriptor)
            for signum in (s for s in self.signals if not ignored(s)):
                self._previous[signum] = signal.signal(signum, self._handler)
        except BaseException:  # a previous handler raising (Ctrl-C): nothing of ours is left
            self.restore()
            raise
        return True

    def _start_watching(self) -> None:
        self._wakeup = socket.socketpair()
        self._wakeup[1].setblocking(False)  # the C handler must never block on it
        self._previous_fd = signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, args=(self._wakeup[0],),
                                         name=self._name, daemon=True)
        self._watcher.start()

    def restore(self, join_within: Optional[float] = None) -> None:
        """The handlers first, so that a signal in between is not lost: it goes to the previous
        handler, and is heard by the watcher too. Then the wakeup descriptor and the watcher,
        even where a previous handler raised meanwhile (a stale watcher heard later signals)."""
        try:
            self.restore_handlers()
        finally:
            self.stop_watching(join_within)

    def restore_handlers(self) -> None:
        previous, self._previous = self._previous, {}
        restore_handlers(previous)

    def stop_watching(self, join_within: Optional[float] = None) -> None:
        """The previous wakeup descriptor back; the watcher ends (`join_within` seconds at most)."""
        if self._wakeup is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        reader, writer = self._wakeup
        writer.close()  # the watcher reads the end
        if self._watcher is not None:
            self._watcher.join(join_within)
        reader.close()
        self._wakeup = self._watcher = None

    def _watch(self, reader: socket.socket) -> None:
        while True:
            at = self._deadline()
            reader.settimeout(None if at is None else max(0.0, at - time.monotonic()))
            try:
                data = reader.recv(64)
            # a deadline already past sets a timeout of 0: a non-blocking recv, which raises
            # BlockingIOError, not socket.timeout
            except (socket.timeout, BlockingIOError):
                self._on_deadline()
                return
            except OSError:
                return
            if not data:  # the write end closed: watching is over
                return
            for signum in data:  # a handler of another signal writes its number here too
                if signum in self.signals and self._heard(signum) is False:
                    return
