"""Threading building blocks of the pipeline: bounded channels that never block forever, a
shared `Control` that carries the first failure and the stop requests, and `Stage`, the one
thread primitive every step runs in (decode, preprocess, infer, post-process, sink, live readers).

Every blocking put / get polls the `Control`, so when a stage fails, the stages before it wake
up within one poll interval and end, while the stages after it pass on what they already hold
(results computed before the failure still reach the sinks) and then END; the consumer then
re-raises the stage's exception (supervision's reader thread, by contrast, leaves its consumer
waiting). An abort (the consumer went away, a second Ctrl-C) stops every stage at once.
"""
from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from typing import Any, Callable, Optional

POLL_S = 0.05
IDLE_S = 0.5  # how often a stage with an `idle` step runs it while no item comes


_interval_lock = threading.Lock()
_interval_users = 0
_interval_saved: Optional[float] = None


def hold_switch_interval(seconds: float) -> None:
    """Set the interpreter-wide GIL switch interval for a run. Runs overlap, so the first to
    start saves Python's value and the last to end (`release_switch_interval`) puts it back."""
    global _interval_users, _interval_saved
    with _interval_lock:
        if _interval_users == 0:
            _interval_saved = sys.getswitchinterval()
        _interval_users += 1
        sys.setswitchinterval(seconds)


def release_switch_interval() -> None:
    global _interval_users
    with _interval_lock:
        _interval_users -= 1
        if _interval_users == 0:
            sys.setswitchinterval(_interval_saved)


class Aborted(Exception):
    """Raised inside workers (and the consumer) once the pipeline is aborting."""


class _Sentinel:
    def __repr__(self) -> str:
        return "END"


END = _Sentinel()  # end of stream: flows through every channel once, then the stage exits


class Control:
    """Shared state of one pipeline run.

    draining: stop taking new frames from the sources, finish what is in flight (Ctrl-C, stop())
    aborted:  stop now (the consumer went away, a second Ctrl-C, a failure with nowhere to drain)
    error:    the first failure of a stage, re-raised by the consumer
    """

    def __init__(self):
        self.draining = threading.Event()
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        self.error: Optional[BaseException] = None
        self._cut = -1  # channels before this position have lost their reader: they stop

    def fail(self, exc: BaseException, drain_from: Optional[int] = None) -> None:
        """Record a stage's failure and stop the run. `drain_from`: the position of the failed
        stage's outbox; channels from there on still carry what was computed before the
        failure, the ones before it stop at once. None: every channel stops (abort)."""
        with self._lock:
            if self.error is None:
                self.error = exc
            if drain_from is not None:
                self._cut = max(self._cut, drain_from)
        self.draining.set()
        if drain_from is None:
            self.aborted.set()

    def abort(self) -> None:
        self.aborted.set()
        self.draining.set()

    def check(self, position: Optional[int] = None) -> None:
        """Raise Aborted when the run aborted, or when the channel at `position` lies before a
        failed stage (its reader is gone)."""
        if self.aborted.is_set() or (position is not None and position < self._cut):
            raise Aborted()


class LiveGate:
    """For a run of live sources: a source's next frame is taken only while fewer than
    `waiting` items wait in the run's channels. Without it every channel before the slowest
    stage holds a frame, each adding one of that stage's steps to the latency (end-to-end p50
    1.57 s against 0.36 s with text reading on 2 cores: benchmarks/live_latency.py); with it the
    slowest stage finds the newest frame in its inbox, and the frames it cannot keep up with are
    dropped at the source (counted there). The stages still overlap: frames being worked on do
    not count, only waiting ones.

    `per_stream`: a run mixing live sources with files. A file waits for room, it never drops,
    so its frames would keep the channels full and the live frames would queue behind them.
    There every source waits at the gate, and also until no frame of its own waits: a file
    then reads its next frame, a live source takes its newest, and each batch gets a frame of
    each source (the default batch holds one per source). A file decoding its next frame holds
    that frame's room (a live source's newest frame is there at once and would take it), and
    the sources waiting at the gate take turns, the one served longest ago first; a live source
    away (waiting for its next frame, reconnecting) holds up no one."""

    def __init__(self, control: Control, waiting: int = 1, per_stream: bool = False):
        self._cond = threading.Condition()
        self._channels: list = []
        self._control, self._waiting = control, waiting
        self.per_stream, self._queued = per_stream, {}  # stream -> its frames waiting
        self._sources: dict = {}  # per stream: stream -> source
        self._at_gate: set = set()  # streams waiting at the gate
        self._decoding: set = set()  # files past the gate whose frame is not put yet
        self._served: dict = {}  # stream -> the turn it last passed the gate
        self._turns = itertools.count()

    @classmethod
    def for_run(cls, sources, batch: int, queue_size: Optional[int],
                control: Control) -> Optional["LiveGate"]:
        """The gate of a run with a live source and no queue size asked for (per stream when
        files share the run); None for a run of files, or one that asked for its queues."""
        live = [source.live for source in sources]
        if queue_size or not any(live):
            return None
        return cls(control, batch, per_stream=not all(live))

    def watch(self, channel: "Channel") -> None:
        self._channels.append(channel)

    def admission(self, source) -> Optional[Callable[[], None]]:
        """What `source`'s decode stage waits on before each frame (None: it is not gated)."""
        if self.per_stream:
            self._sources[source.stream] = source
            return lambda: self.wait(source.stream)
        return self.wait if source.live else None

    def adding(self, item) -> None:
        """`item` is about to be put in a channel (a frame blocked there waits too); only frames
        have a stream."""
        stream = getattr(item, "stream", None)
        if self.per_stream and stream is not None:
            with self._cond:
                self._queued[stream] = self._queued.get(stream, 0) + 1

    def added(self, item) -> None:
        """`item` is in its channel now: a file's room is let go only here, or the frame on its
        way in would be counted nowhere and another source would take the room."""
        stream = getattr(item, "stream", None)
        if self.per_stream and stream is not None:
            with self._cond:
                self._decoding.discard(stream)
                self._cond.notify_all()

    def taken(self, item=None) -> None:
        stream = getattr(item, "stream", None)
        with self._cond:
            if self.per_stream and stream is not None:
                self._queued[stream] = self._queued.get(stream, 0) - 1
            self._cond.notify_all()

    def wait(self, stream: Optional[int] = None) -> None:
        """Until the channels have room for one more waiting item (per stream: none of the
        stream's frames waits and it is its turn), or the run is stopping."""
        with self._cond:
            self._at_gate.add(stream)
            try:
                while not self._control.draining.is_set() and not self.is_open(stream):
                    self._control.check()
                    self._cond.wait(POLL_S)
            finally:
                self._at_gate.discard(stream)
            if self.per_stream:
                self._served[stream] = next(self._turns)
                if not self._sources[stream].live:
                    self._decoding.add(stream)
                self._cond.notify_all()  # a source waiting for its turn may have it now

    def is_open(self, stream: Optional[int] = None) -> bool:
        """Whether the source `stream` may take its next frame now (see `wait`)."""
        with self._cond:
            if sum(map(len, self._channels)) + self._held() >= self._waiting:
                return False
            return not self.per_stream or not (self._queued.get(stream, 0) > 0 or self._behind(stream))

    def _held(self) -> int:
        """Rooms held by files decoding their next frame (one that ended or failed holds none)."""
        return sum(self._sources[stream].state == "up" for stream in self._decoding)

    def _behind(self, stream: int) -> bool:
        """Whether a source served before `stream` waits at the gate too."""
        mine = self._served.get(stream, -1)
        return any(self._served.get(other, -1) < mine for other in self._at_gate if other != stream)


class Channel:
    """A bounded FIFO between two stages whose put / get give up when the run aborts or a stage
    after it failed. `position`: its place in the run, counted from the sources (see
    `Control.fail`); None: it stops only on an abort. `gate`: the LiveGate it tells of every
    item taken."""

    def __init__(self, name: str, capacity: int, control: Control, gauge=None,
                 position: Optional[int] = None, gate: Optional[LiveGate] = None):
        self.name = name
        self.capacity = capacity
        self.position = position
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._front = None  # an item `get` looked at and left first in the channel (one reader)
        self._control = control
        self._gauge = gauge
        if gauge is not None:
            gauge.watch(self._queue.qsize)
        self._gate = gate
        if gate is not None:
            gate.watch(self)

    def put(self, item) -> None:
        if self._gate is not None:
            self._gate.adding(item)
        while True:
            self._control.check(self.position)
            try:
                self._queue.put(item, timeout=POLL_S)
                break
            except queue.Full:
                continue
        if self._gate is not None:
            self._gate.added(item)

    def get(self, timeout: Optional[float] = None, keep: Optional[Callable[[Any], bool]] = None):
        """The next item; with `timeout`, raises queue.Empty when none arrived in time. `keep`:
        whether to take the item; one it refuses stays first in the channel, still waiting
        (the gate's count of it unchanged), and queue.Empty is raised."""
        item, self._front = self._front, None
        if item is None:
            item = self._get(timeout)
        if keep is not None and not keep(item):
            self._front = item
            raise queue.Empty
        if self._gate is not None:
            self._gate.taken(item)
        return item

    def _get(self, timeout: Optional[float]):
        deadline = None if timeout is None else time.perf_counter() + timeout
        if self._gauge is not None:
            self._gauge.add(self._queue.qsize())
        while True:
            self._control.check(self.position)
            remaining = None if deadline is None else deadline - time.perf_counter()
            try:
                if remaining is not None and remaining <= 0:
                    return self._queue.get_nowait()
                return self._queue.get(timeout=POLL_S if remaining is None else min(POLL_S, remaining))
            except queue.Empty:
                if remaining is not None and remaining <= 0:
                    raise

    def __len__(self) -> int:
        return self._queue.qsize() + (self._front is not None)


class Stage(threading.Thread):
    """One step of a run in its own thread: `fn` applied to every item of `inbox`, the results
    put on `outbox`, then END.

    inbox:  a channel (anything with `get()`, END ends the stage), or an iterable such as a
            Source; reading an iterable is part of the stage's work (decoding), so it is timed,
            the run's drain request stops it, and it is closed when the stage ends
    admit:  for an iterable inbox, called (untimed) before each item is read: a LiveGate's wait
    idle:   for a channel inbox, called every IDLE_S while no item comes
    fn:     item -> one output (None: nothing to pass on); with `many=True`, an iterable of outputs
    outbox: anything with `put()`; it always receives END last, also when the stage fails
    timing: seconds per item go to `metrics.stage(metric or name, ...)` when `metrics` is given
    errors: any exception other than Aborted is handed to the Control, which stops the stages
            before this one; the ones after it drain (see `Control.fail`)
    """

    def __init__(self, name: str, fn: Callable[[Any], Any], inbox, outbox, control: Control,
                 metrics=None, metric: Optional[str] = None, many: bool = False,
                 admit: Optional[Callable[[], None]] = None, idle: Optional[Callable[[], None]] = None):
        super().__init__(name=name, daemon=True)
        self._admit, self._idle = admit, idle
        self.fn, self.inbox, self.outbox = fn, inbox, outbox
        self._control = control
        self._metrics = metrics
        self._metric = metric or name
        self._many = many

    def run(self) -> None:
        try:
            if hasattr(self.inbox, "get"):
                self._drain_channel()
            else:
                self._read_iterable()
        except Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            self._control.fail(exc, getattr(self.outbox, "position", None))
        finally:
            self._put_end()

    def _drain_channel(self) -> None:
        while True:
            try:
                item = self.inbox.get() if self._idle is None else self.inbox.get(IDLE_S)
            except queue.Empty:
                self._idle()
                continue
            if item is END:
                return
            t0 = time.perf_counter()
            out = self.fn(item)
            self._emit(out, t0)

    def _read_iterable(self) -> None:
        items = iter(self.inbox)
        try:
            while not self._control.draining.is_set():
                if self._admit is not None:
                    self._admit()
                    if self._control.draining.is_set():  # the gate opened for a stop
                        return
                t0 = time.perf_counter()
                item = next(items, END)
                if item is END:
                    return
                self._emit(self.fn(item), t0)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _emit(self, out, t0: float) -> None:
        if self._metrics is not None:
            self._metrics.stage(self._metric, time.perf_counter() - t0)
        for item in (out if self._many else (out,)):
            if item is not None:
                self.outbox.put(item)

    def _put_end(self) -> None:
        try:
            self.outbox.put(END)
        except Aborted:  # the run is stopping anyway; every reader wakes up on its own
            pass


class RunIterator:
    """A run's generator, stepped by one thread at a time: `close()` from another thread (a
    Pipeline closed there while its consumer is in its loop body) ends the run there, and a
    consumer resuming meanwhile waits for it, then finds the run over, instead of resuming a
    generator that is executing ('generator already executing')."""

    def __init__(self, run):
        self._run = run
        self._lock = threading.Lock()

    def __iter__(self) -> "RunIterator":
        return self

    def __next__(self):
        with self._lock:
            return next(self._run)

    def close(self) -> bool:
        """End the run now; False when a step of it is under way (in this thread or another):
        it is left to end at its next step."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._run.close()
        finally:
            self._lock.release()
        return True
