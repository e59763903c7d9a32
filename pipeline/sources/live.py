"""Live sources (network streams, cameras): a reader thread keeps only the newest frame.

When the consumer falls behind, older frames are overwritten and counted as dropped, so memory
stays at one frame whatever the rates. A lost connection is retried with exponential back-off,
as is a source down when the run starts (`LiveSource.open`).
"""
from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from engine.errors import SourceError, warn_caller
from engine.outage_words import count, retry_policy

from ..stages import Control, Stage
from .base import Frame, Source, first_line, without_credentials
from .failures import can_pass
from .outages import OutageLog
from .slot import LatestSlot


# how long a stop waits for a reader: one inside a network connect (FFmpeg's open cannot be
# interrupted and may take its 30 s timeout) is left to end in the background, so that a stop
# fits a service manager's grace period (Docker's is 10 s)
READER_GRACE_S = 3.0
# how long open() waits for a first connect made in the reader (a live source with a reconnect
# policy): one that takes longer (a UDP stream nobody sends yet, a host that does not answer,
# FFmpeg's open waiting up to its 30 s) goes on in the background while the run starts
FIRST_CONNECT_WAIT_S = 10.0
# the first back-off after a zero `Reconnect.delay`, before the factor applies
MIN_BACKOFF_S = 0.1


@dataclass(frozen=True)
class Reconnect:
    """Back-off policy after a live source fails: wait `delay`, then `delay * factor`, ...
    capped at `max_delay`; give up after `retries` failed attempts in a row (None: never)."""

    retries: Optional[int] = 10
    delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0

    def delays(self):
        """The successive waits of one outage. A `delay` of 0 retries at once, then backs off
        from `MIN_BACKOFF_S` (0 doubled stayed 0: a refusing camera was retried in a tight
        loop, for ever with `--reconnect -1`)."""
        wait, attempt = self.delay, 0
        while self.retries is None or attempt < self.retries:
            yield wait
            wait = min(self.max_delay, (wait or MIN_BACKOFF_S) * self.factor)
            attempt += 1


class LiveSource(Source):
    """Base of live sources. Subclasses implement `_connect`, `_read` and `_disconnect`.

    `_read()` returns (image, timestamp) or None when the stream ended; any exception or end
    counts as a lost connection and triggers the reconnect policy (if `reconnect` is set).
    """

    live = True
    # whether a first connect that fails for a reason that may pass is retried (network
    # streams, gst: pipelines) rather than an error (cameras: a device to plug in)
    waits_when_down = True

    def __init__(self, name: str, reconnect: Optional[Reconnect] = Reconnect()):
        super().__init__(name)
        self.reconnect = reconnect
        # read = delivered + dropped. A live frame is read off the wire and may be dropped; a
        # file's frame (over the network) counts as read when it is handed on, as a local
        # file's does, so the one read ahead when a run stops is neither read nor dropped
        self._slot = LatestSlot(overwrite=self.live,
                                on_drop=(lambda: self.stats.add(dropped=1)) if self.live else None)
        self._frames_read = 0  # off the source, whatever became of them
        self._first_size = None  # (h, w) of the first frame read (Frame.first_size)
        self._stop = threading.Event()
        self._control = Control()  # carries the reader's failure to the consuming thread
        self._thread: Optional[Stage] = None
        self._connected = False
        self._read_error: Optional[str] = None  # the last read failure, until the next frame
        self._lost_why = ""  # its reason, as the line saying the stream is lost words it
        # the reconnect attempts of the outage under way: they run on until a frame arrives, so
        # a server that accepts and then sends nothing still runs out of retries
        self._attempts = None
        self._connection = 0  # reconnects so far: the connection a frame comes on
        self._connect_error = ""  # why the first connect failed, when it was retried
        self._first_try = threading.Event()  # the reader's first connect ended (see open())
        self._first_error: Optional[BaseException] = None
        self._begun: Optional[float] = None  # when the reader's first connect began
        self._waited = False  # open() has waited for it
        self._iterated = False  # whether a consumer took the frames (else only open() read)
        self.ended_by_itself = False  # its own end of stream ended it (no fault: /healthz)
        self._outage = OutageLog(name)  # what the log says of its outages

    # -- subclass hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> None: ...

    @abc.abstractmethod
    def _read(self) -> Optional[Tuple[np.ndarray, Optional[float]]]: ...

    @abc.abstractmethod
    def _disconnect(self) -> None: ...

    def _ended_by_itself(self) -> bool:
        """Whether a clean end of stream (`_read` returned None) is the source's own end, not a
        lost connection: never for a stream received over the network, whose server hanging up
        ends it the same way; a source that can tell (a local GStreamer pipeline) says so."""
        return False

    # -- lifecycle --------------------------------------------------------------------------
    def open(self) -> "LiveSource":
        """Connect once, so an unreachable source fails here with one line. A live stream is
        read from then on, its newest frame kept: what it sends while the run gets ready
        (loading models) piled up unread and then came in a burst, its first frame seconds old
        and its clock seeming to jump. A live source with a reconnect policy connects in its
        reader, waited for here up to FIRST_CONNECT_WAIT_S: one whose connect fails for a
        reason that may pass (`failures`: refused, timed out, a stream not yet published), or
        has not answered by then, is not an error: its reader goes on trying as after an
        outage (state "connecting") while the run starts and the other sources run."""
        if self._stop.is_set():  # closed before it opened (a stop while the run starts)
            return self
        if self._begun is not None and not self._waited:  # begin_connect() came first
            self._connect_in_reader()
        elif not self._connected and self._thread is None:
            if self._may_wait():
                self._connect_in_reader()
                return self
            self.stats.add(connect_attempts=1)
            self._connect()
            self._connected = True
            if self.live:
                self._start_reader()
        return self

    def _may_wait(self) -> bool:
        return (self.live and self.waits_when_down and self.reconnect is not None
                and self.reconnect.retries != 0)

    def begin_connect(self) -> None:
        """Start the first connect in the reader now (a live source with a reconnect policy;
        else nothing), so that sources opened together connect at once: one after another,
        eight cameras down at a boot held up the start for 8 x FIRST_CONNECT_WAIT_S."""
        if (not self._connected and self._thread is None and self._may_wait()
                and not self._stop.is_set()):  # not after a close (a stop while the run starts)
            self._begun = time.monotonic()
            self.state = "connecting"
            self._start_reader()

    def _connect_in_reader(self) -> None:
        self._waited = True
        self.begin_connect()
        left = FIRST_CONNECT_WAIT_S - (time.monotonic() - self._begun)
        try:
            answered = self._first_try.wait(max(0.0, left))
        except BaseException:  # Ctrl-C meanwhile: nobody would close it, its reader would retry
            self.close()
            raise
        if self._stop.is_set():  # closed meanwhile (a stop signal while the run starts)
            return
        if not answered:
            self._say_waiting(f"no answer within {FIRST_CONNECT_WAIT_S:g} s")
        elif self._first_error is not None:
            if not can_pass(self._first_error):
                self.close()
                raise self._first_error
            self._say_waiting(self._connect_error)

    def _say_waiting(self, why: str) -> None:
        """Said once per open, as a warning: the reader retries the source. Each time it is
        said (`every_time`): Python's default filter hid it for a second run in one process
        whose camera was down too, said in the same words from the same caller's line."""
        warn_caller(without_credentials(f"{self.name} is not up ({why}): retrying it "
                                        f"{retry_policy(self.reconnect.retries)} while the "
                                        "run starts"), every_time=True)
        self._outage.said_down(self._begun)  # its coming up is said too

    def _first_connect(self) -> bool:
        """The reader's first connect, retried under the policy when it fails for a reason
        that may pass (a user's mistake ends the source, which open() says if still waiting).
        An attempt counts as it begins: a host that does not answer shows its first attempt."""
        self.stats.add(connect_attempts=1)
        try:
            self._connect()
        except BaseException as exc:  # open() raises what is not a SourceError that may pass
            self._connect_error = self._reason(exc)
            self._outage.began(self._begun)
            self._first_error = exc
            self._first_try.set()
            if not can_pass(exc):
                raise
            self.stats.note(f"connect failed: {self._connect_error}; retrying")
            return self._retry_connect(first=True)
        self._connected, self.state = True, "up"
        self._first_try.set()
        return True

    def _as_file(self) -> None:
        """For the first connect (before any frame): a file, not a stream, is behind the
        address. Every frame is delivered, and its end is the source's end (no reconnect)."""
        self.live, self.reconnect = False, None
        self._slot.keep_every()  # the reader of a source that came up late has it already

    def start(self) -> None:
        if self._thread is None:
            self.open()
            self._start_reader()

    def _start_reader(self) -> None:
        if self._thread is None:
            self._thread = Stage(f"read:{self.name}", self._frame, self._images(), self._slot,
                                 self._control)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._first_try.set()  # an open() waiting for the first connect returns (a stop at start)
        self._slot.finish()
        # a live frame still waiting when the run stops was read and never delivered: dropped
        if self._slot.take() is not None and self.live:
            self.stats.add(dropped=1)
        if self._thread is None and self._connected:  # opened, never read: no reader to let go
            self._connected = False
            self._disconnect_quietly()
        elif self._thread is not None and not self._iterated:  # read since open() only: the
            self._thread.join(READER_GRACE_S)  # connection is let go before close() returns

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # a daemon thread: it ends when the call returns
                self.stats.note("stopped during a blocking connect or read: the connection is "
                                "closed when that call returns")

    def __iter__(self) -> Iterator[Frame]:
        self._iterated = True
        self.start()
        try:
            while True:
                frame = self._slot.get()
                if frame is None:
                    break
                self.stats.add(delivered=1, **({} if self.live else {"read": 1}))
                yield frame
            if self._control.error is not None:
                raise self._control.error
        finally:
            self.close()

    # -- reader stage -----------------------------------------------------------------------
    def _images(self) -> Iterator[Tuple[int, np.ndarray, Optional[float], int]]:
        """(index, image, timestamp, connection) as read, across reconnects, until stopped or
        given up."""
        index = 0
        try:
            if not self._connected and not self._first_connect():
                return
            while not self._stop.is_set():
                item = self._read_or_none()
                if item is None:
                    if self._stop.is_set() or not self._recover():
                        return
                    continue
                if self._outage.since is not None:  # the outage, if any, is over
                    self._outage.over()
                self._frames_read += 1
                self._attempts = None
                if self.live:
                    self.stats.add(read=1)
                yield (index,) + tuple(item) + (self._connection,)
                index += 1
        finally:
            self._disconnect_quietly()

    def _frame(self, item) -> Frame:
        index, image, timestamp, connection = item
        if self._first_size is None:  # the reader thread's: every frame says it
            self._first_size = tuple(image.shape[:2])
        return Frame(image, index, timestamp, self.name, connection=connection,
                     first_size=self._first_size)

    def _read_or_none(self):
        try:
            item = self._read()
        except Exception as exc:  # noqa: BLE001 - a read failure is a lost connection
            self._read_error = first_line(exc)
            # FFmpeg's own words ("Input/output error"), without the address that its error quotes
            self._lost_why = getattr(exc, "strerror", None) or self._read_error
            self.stats.note(f"read failed: {self._read_error}")
            return None
        self._read_error = None
        return item

    def _recover(self) -> bool:
        """Reconnect with back-off; False when the stream ended by itself (`_ended_by_itself`),
        or ended and no reconnect is configured.
        A file read over the network whose read failed ends with an error, not as an end of
        stream: its frames after that point are lost. (A live stream's server that stops
        sending fails the read the same way, so there it is the end.)"""
        self._disconnect_quietly()
        if self.reconnect is not None and self._read_error is None and self._ended_by_itself():
            self.stats.note("the stream ended by itself (end of stream): not reconnected")
            self.ended_by_itself = True
            return False
        if self.reconnect is None:
            if self._read_error is not None and not self.live:
                raise SourceError(f"{self.name} ended early after {self._frames_read} frames: "
                                  f"{self._read_error}")
            return False
        if self._attempts is None:  # a new outage (not a reconnect that sent no frame)
            why = self._lost_why if self._read_error else "stream ended"
            self._outage.lost(why, self.reconnect.retries)
        self.state = "reconnecting"
        return self._retry_connect(first=False)

    def _retry_connect(self, first: bool) -> bool:
        """Connect under the reconnect policy, after a lost connection or (`first`) a first
        connect that failed; True once connected, False when stopped; a SourceError when the
        attempts ran out, or when a source never connected answers with a user's mistake (a
        camera that came up and refuses the password: no retry will let it in)."""
        last = self._connect_error if first else "stream ended"
        if self._attempts is None:
            self._attempts = enumerate(self.reconnect.delays(), 1)
        for attempt, wait in self._attempts:
            if self._stop.wait(wait):
                return False
            # counted as connect_attempts counts them: a first connect's retry k is attempt k + 1
            self._outage.attempt(attempt + first)
            self.stats.add(connect_attempts=int(first))
            try:
                self._connect()
            except SourceError as exc:  # its name is said once, in the line that gives up
                last = self._reason(exc)
                self.stats.note(f"{'re' * (not first)}connect attempt {attempt + first} failed: "
                                f"{last}")
                if first and not can_pass(exc):
                    raise
                continue
            self.state = "up"
            if first:
                self._connected = True
                self.stats.note(f"connected at attempt {attempt + 1}")
                return True
            self.stats.add(reconnects=1)
            self._connection += 1
            self.stats.note(f"reconnected after {count(attempt, 'attempt')}")
            return True
        retries = self.reconnect.retries
        if first:  # the attempts: the failed first one and its retries
            raise SourceError(f"{self.name} never came up: gave up after "
                              f"{count(retries + 1, 'connect attempt')} ({last})")
        raise SourceError(f"lost {self.name}: gave up after "
                          f"{count(retries, 'reconnect attempt')} ({last})")

    def _reason(self, error: BaseException) -> str:
        """A failed connect's reason without the source's name (said once, where it is shown)."""
        name = without_credentials(self.name)  # as the error's message quotes it
        text = without_credentials(str(error))
        return text.removeprefix(f"cannot open {name}: ").removeprefix(f"{name}: ")

    def _disconnect_quietly(self) -> None:
        try:
            self._disconnect()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail again
            pass
