"""`Pipeline`: sources -> decode -> batch + preprocess -> infer -> postprocess -> sinks, each
stage in its own thread, joined by bounded channels.

    pipe = Pipeline(["cam.mp4", "rtsp://..."], model="dbnet.onnx", sinks=[JsonlSink("out.jsonl")])
    for frame, detections in pipe:       # in order per source
        ...
    print(pipe.report())

One thread per stage keeps results in order per source; frames of several sources share a
batch when they need the same input size (up to `batch`, waiting at most `batch_timeout` after
the first frame). A failure in a stage thread stops the run and is re-raised by the consumer; a
source that fails (a truncated file, an unreadable image, a stream that never came back) only ends
its own frames, and its error is raised once everything read has reached the sinks. Ctrl-C (or
`stop()`) stops reading and lets every frame already read reach the sinks (see interrupts.py).
"""
from __future__ import annotations

import contextlib
import queue
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from .detections import Detections
from .detector import Detector
from .interrupts import Interrupted, StopSignals
from .metrics import Metrics
from .sinks import Sink
from .sources import Frame, Source, open_sources
from .stages import (END, Aborted, Channel, Control, Worker, hold_switch_interval,
                     release_switch_interval)

Callback = Callable[[Frame, Detections], None]


@dataclass
class _Batch:
    frames: List[Frame]
    array: object = None
    letterboxes: list = field(default_factory=list)
    prob: object = None


@dataclass(frozen=True)
class _EndOfSource:
    stream: int


class Pipeline:
    """A threaded detection run over one or more sources.

    sources:       specs ("video.mp4", "rtsp://...", "0", "images/*.jpg") or Source objects
    detector:      a Detector; by default one is made from `model` and `detector_options`
    batch:         max frames per engine call (0: the number of sources)
    batch_timeout: seconds to wait for more frames once a batch has its first
    queue_size:    capacity of each inter-stage channel, in batches
    max_frames:    stop each source after this many frames
    switch_interval: the interpreter's GIL switch interval during the run (seconds; None: leave
                   it). Shorter than Python's 5 ms default, the inference thread gets the GIL
                   back sooner after each engine call while other stages run Python code
                   (about 5 % more throughput on a 2-core CPU); restored when the run ends.
    sinks:         Sink objects (closed by the pipeline at the end); callbacks: fn(frame, dets)
    stop_signals:  signals that stop a run iterated in the main thread: the first drains (like
                   `stop()`), the second stops at once (`report()["lost"]` counts the frames
                   read but never written); the run then raises `Interrupted` (a
                   KeyboardInterrupt) with the signal's number. `dbrt run` adds SIGTERM.
    """

    def __init__(self, sources: Sequence, detector: Optional[Detector] = None, *, model=None,
                 batch: int = 0, batch_timeout: float = 0.01, queue_size: int = 4,
                 max_frames: Optional[int] = None, sinks: Iterable[Sink] = (),
                 callbacks: Iterable[Callback] = (), source_options: Optional[dict] = None,
                 switch_interval: Optional[float] = 0.0005,
                 stop_signals: Sequence[int] = (signal.SIGINT,), **detector_options):
        if isinstance(sources, (str, Source)):
            sources = [sources]
        self.sources: List[Source] = open_sources(sources, **(source_options or {}))
        self.sinks = list(sinks)
        self.callbacks = list(callbacks)
        self._own_detector = detector is None
        try:
            self.detector = detector or Detector(model, **detector_options)
        except BaseException:
            self._close_sources()
            raise
        # default: one frame per source, at least one per parallel session
        parallelism = getattr(getattr(self.detector, "runner", None), "parallelism", 1)
        self.batch = batch or max(len(self.sources), parallelism)
        self.batch_timeout = batch_timeout
        self.max_frames = max_frames
        self.switch_interval = switch_interval
        self._holds_interval = False
        self.metrics = Metrics()
        self.control = Control()
        self.interrupted = False
        self._signals = StopSignals(stop_signals, drain=self._interrupt, abort=self.control.abort)
        cap = max(1, queue_size)
        self._decoded = self._channel("decoded", cap * self.batch + len(self.sources))
        self._prepared = self._channel("prepared", cap)
        self._inferred = self._channel("inferred", cap)
        self._results = self._channel("results", cap * self.batch)
        self._out = self._channel("out", cap * self.batch)
        self._workers: List[Worker] = []
        self._source_errors: List[Exception] = []
        self._started = False

    def _channel(self, name: str, capacity: int) -> Channel:
        return Channel(name, capacity, self.control, self.metrics.queue(name, capacity))

    # -- public API -----------------------------------------------------------------------------
    @property
    def total_frames(self) -> Optional[int]:
        """Frames the run will produce when every source knows its length, else None."""
        totals = [s.total_frames for s in self.sources]
        if any(t is None for t in totals):
            return None
        if self.max_frames is not None:
            totals = [min(t, self.max_frames) for t in totals]
        return sum(totals)

    @property
    def dropped(self) -> int:
        return sum(s.stats.dropped for s in self.sources)

    @property
    def lost(self) -> int:
        """Frames read from the sources but never written (a run stopped at once, or failed)."""
        return sum(s.stats.delivered for s in self.sources) - self.metrics.frames_out

    def stop(self) -> None:
        """Stop reading new frames; frames already read still reach the sinks."""
        self.control.draining.set()
        for source in self.sources:
            source.close()

    def __iter__(self) -> Iterator[Tuple[Frame, Detections]]:
        if self._started:
            raise RuntimeError("a Pipeline runs once; make a new one")
        self._start()
        finished = False
        try:
            while True:
                try:
                    item = self._out.get()
                except KeyboardInterrupt:  # Ctrl-C without our handler (stop_signals=())
                    if self.interrupted:  # second Ctrl-C: stop now
                        raise
                    self._interrupt()
                    continue
                if item is END:
                    finished = True
                    break
                yield item
        except Aborted:
            pass
        finally:
            if not finished:
                self.control.abort()
            try:
                self._shutdown()
            finally:
                self._signals.restore()
        if self.control.error is not None:
            raise self.control.error
        if self.interrupted:
            raise Interrupted(self._signals.first or signal.SIGINT)
        if self._source_errors:
            raise self._source_errors[0]

    def close(self) -> None:
        """Release sources, sinks and the detector of a pipeline that will not run (a run
        releases them itself when it ends)."""
        if not self._started:
            self._started = True
            self._shutdown()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self) -> dict:
        """Process every frame (results go to the sinks and callbacks); returns the report."""
        for _ in self:
            pass
        return self.report()

    def report(self, **extra) -> dict:
        return self.metrics.report(
            [s.describe() for s in self.sources], batch=self.batch, interrupted=self.interrupted,
            lost=self.lost, model=self.detector.describe(), **extra)

    # -- threads ----------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        bodies = [(f"decode:{s.stream}", lambda s=s: self._read(s)) for s in self.sources]
        bodies += [("preprocess", self._prepare), ("infer", self._infer),
                   ("postprocess", self._postprocess), ("sink", self._sink)]
        if self.switch_interval:
            hold_switch_interval(self.switch_interval)
            self._holds_interval = True
        self.metrics.start()
        self._signals.install()
        self._workers = [Worker(name, body, self.control) for name, body in bodies]
        for worker in self._workers:
            worker.start()

    def _shutdown(self) -> None:
        """Stop the threads, then close sinks and detector: every step runs even when an
        earlier one raises (the first error propagates)."""
        with contextlib.ExitStack() as steps:  # callbacks run last-pushed first
            if self._own_detector:
                steps.callback(self.detector.close)
            for sink in reversed(self.sinks):
                steps.callback(sink.close)
            steps.callback(self._release_switch_interval)
            steps.callback(self._join_threads)
            steps.callback(self._close_sources)

    def _join_threads(self) -> None:
        for worker in self._workers:
            worker.join()
        for source in self.sources:
            if hasattr(source, "join"):
                source.join(timeout=30)

    def _release_switch_interval(self) -> None:
        if self._holds_interval:
            self._holds_interval = False
            release_switch_interval()

    def _interrupt(self) -> None:
        self.interrupted = True
        self.stop()

    def _close_sources(self) -> None:
        for source in self.sources:
            source.close()

    def _read(self, source: Source) -> None:
        """Decode one source. A source that fails (a truncated file, a lost stream) ends like
        one that finished: the frames it gave still reach the sinks, the other sources go on,
        and the run raises its error at the end."""
        try:
            self._read_frames(source)
        except Aborted:
            raise
        except Exception as exc:  # noqa: BLE001 - raised by the consumer once the run drained
            self._source_errors.append(exc)
            source.stats.note(f"error: {exc}")
        self._decoded.put(_EndOfSource(source.stream))

    def _read_frames(self, source: Source) -> None:
        frames = iter(source)
        count = 0
        try:
            while not self.control.draining.is_set():
                if self.max_frames is not None and count >= self.max_frames:
                    break
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                self.metrics.stage("decode", time.perf_counter() - t0)
                frame.stream = source.stream
                self._decoded.put(frame)
                count += 1
        finally:
            if hasattr(frames, "close"):
                frames.close()

    def _prepare(self) -> None:
        live, carry = len(self.sources), None
        while live or carry is not None:
            frames, live, carry = self._collect(live, carry)
            if not frames:
                continue
            t0 = time.perf_counter()
            array, boxes = self.detector.prepare([f.image for f in frames])
            self.metrics.stage("preprocess", time.perf_counter() - t0)
            self._prepared.put(_Batch(frames, array, boxes))
        self._prepared.put(END)

    def _collect(self, live: int, carry: Optional[Frame]):
        """Up to `batch` frames of one input size, in arrival order; a frame that needs another
        size is carried over to start the next batch."""
        frames: List[Frame] = []
        size = deadline = None
        pending = [carry] if carry is not None else []
        carry = None
        while len(frames) < self.batch and (pending or live):
            if pending:
                item = pending.pop()
            else:
                wait = None if not frames else max(0.0, deadline - time.perf_counter())
                try:
                    item = self._decoded.get(timeout=wait)
                except queue.Empty:
                    break
            if isinstance(item, _EndOfSource):
                live -= 1
                continue
            item_size = self.detector.input_size_for(*item.size)
            if frames and item_size != size:
                carry = item
                break
            if not frames:
                size, deadline = item_size, time.perf_counter() + self.batch_timeout
            frames.append(item)
        return frames, live, carry

    def _infer(self) -> None:
        while True:
            batch = self._prepared.get()
            if batch is END:
                break
            t0 = time.perf_counter()
            batch.prob = self.detector.infer(batch.array)
            self.metrics.stage("infer", time.perf_counter() - t0)
            self.metrics.batch_sizes.add(len(batch.frames))
            batch.array = None
            self._inferred.put(batch)
        self._inferred.put(END)

    def _postprocess(self) -> None:
        while True:
            batch = self._inferred.get()
            if batch is END:
                break
            metas = [dict(frame_index=f.index, timestamp=f.timestamp, source=f.source)
                     for f in batch.frames]
            t0 = time.perf_counter()
            results = self.detector.postprocess(batch.prob, batch.letterboxes, metas)
            self.metrics.stage("postprocess", time.perf_counter() - t0)
            for frame, dets in zip(batch.frames, results):
                self._results.put((frame, dets))
        self._results.put(END)

    def _sink(self) -> None:
        while True:
            item = self._results.get()
            if item is END:
                break
            frame, dets = item
            t0 = time.perf_counter()
            for sink in self.sinks:
                sink.write(frame, dets)
            self.metrics.stage("sink", time.perf_counter() - t0)
            self.metrics.frame_done(frame.t_read)
            for callback in self.callbacks:
                callback(frame, dets)
            self._out.put(item)
        self._out.put(END)
