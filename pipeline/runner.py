"""`Pipeline`: sources -> decode -> batch + preprocess -> infer [-> response: a served model] ->
postprocess [-> read] [-> track] -> sinks, each stage a thread, joined by bounded channels.

    pipe = Pipeline(["cam.mp4", "rtsp://..."], Detector("dbnet.onnx"), sinks=[JsonlSink("out.jsonl")])
    for frame, detections in pipe:       # FrameResults, in order per source
        ...
    print(pipe.report())

Each step is one `Stage` (pipeline.stages: a thread that owns the end sentinel, timing, error
propagation and the put loop) between two bounded channels, so results stay in order per source;
`Pipeline._stages` lists them. Frames of several sources share a batch when they need the same
input size (pipeline.batcher). A failure in a stage stops the stages before it, what the stages
after it hold still reaches the sinks, then the consumer re-raises it; a source that fails (a
truncated file, an unreadable image, a lost stream) only ends its own frames, its error raised
once everything read has reached the sinks. Ctrl-C (or `stop()`) stops reading; every frame
already read reaches the sinks (interrupts.py), which end (`Sink.ending`), then close.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import signal
import threading
import weakref
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

from .arguments import check_detector, check_events_have_tracks, check_numbers, checked_outputs, checked_source_options
from .batcher import Batcher, batch_size
from .decoding import SourceFailures, source_frames, stamp
from .detections import Detections, FrameResult
from .detector import Detector
from .detector_steps import DetectorSteps
from .interrupts import Interrupted, StopSignals
from .metrics import STAGES, Metrics
from .reading.tracking import tracker_for
from .sinks import Sink, StreamEnds
from .sources import Frame, Source, open_sources
from .sources.live import READER_GRACE_S
from .stages import (END, POLL_S, Aborted, Channel, Control, LiveGate, RunIterator, Stage,
                     hold_switch_interval, release_switch_interval)

Callback = Callable[[Frame, Detections], None]
_nothing = (lambda: None)  # what a sink of one's own without close() closes


class Pipeline:
    """A threaded detection run over one or more sources.

    sources:       specs ("video.mp4", "rtsp://...", "0", "images/*.jpg") or Source objects, each
                   a source of its own (image files as one: ImageSource(["a.jpg", "b.jpg"]),
                   as `dbrt run a.jpg b.jpg` makes)
    detector:      the Detector (pipeline.detector) that prepares, infers and post-processes;
                   its region of interest (Detector(roi=)) is the run's (draw its outline on
                   your sinks' pictures with pipeline.draw.RegionAnnotator)
    close_detector: close the detector when the run ends (it then belongs to the pipeline)
    batch:         max frames per engine call (0: the number of sources)
    batch_timeout: seconds to wait for more frames once a batch has its first
    queue_size:    capacity of each inter-stage channel, in batches (default: 4; with a live
                   source, 1, and a source's next frame is taken only once fewer than a batch of
                   frames waits in them; when files share the run, every source waits so, and
                   also until none of its own frames waits: a live frame waiting in a queue
                   only ages, the newest one read after it is the one to show; stages.LiveGate)
    max_frames:    stop each source after this many frames
    sample_fps:    run at most this many frames per second of each video or stream, spread
                   evenly by the frames' timestamps (a file gives the same frames every run);
                   the others are counted per source as `sampled_out`, not dropped or lost
    switch_interval: the interpreter's GIL switch interval during the run (seconds; None: leave
                   it). Shorter than Python's 5 ms default, the inference thread gets the GIL
                   back sooner after each engine call while other stages run Python code
                   (about 5 % more throughput on a 2-core CPU); restored when the run ends.
    sinks:         Sink objects (closed by the pipeline at the end); callbacks: fn(frame, detections)
    source_options: keywords for opening spec sources (pipeline.sources.parse_source): reconnect,
                   decode_threads, hwaccel ("cuda", "cuda:N": NVDEC), rtsp_transport ("tcp", "udp",
                   "udp_multicast", "http"), source_timeout (seconds a stream's read waits), camera
                   (a camera's capture mode, e.g. dict(width=1920, height=1080, fps=30, fourcc="MJPG"))
    track:         follow text instances across frames (pipeline.reading.tracking.TextTracker,
                   ByteTrack per stream): detections gain `track_id` (and when it reads, the
                   voted `track_text` / `track_text_score`, `track_split_from`); or a TextTracker
    stop_signals:  signals that stop a run iterated in the main thread: the first drains (like
                   `stop()`), the second stops at once (`report()["lost"]` counts the frames
                   read but never written); the run then raises `Interrupted` (a
                   KeyboardInterrupt) with the signal's number. `dbrt run` adds SIGTERM.
    drain_limit:   seconds the drain after the first stop signal (or Ctrl-C caught in the
                   run's wait with stop_signals=()) may last before the run stops at once as
                   at the second (None: as long as it takes); `docker stop` kills after 10 s
    """

    def __init__(self, sources: Sequence, detector: Detector, *, close_detector: bool = False,
                 batch: int = 0, batch_timeout: float = 0.01, queue_size: Optional[int] = None,
                 max_frames: Optional[int] = None, sample_fps: Optional[float] = None,
                 sinks: Iterable[Sink] = (),
                 callbacks: Iterable[Callback] = (), source_options: Optional[dict] = None,
                 switch_interval: Optional[float] = 0.0005, track=False,
                 stop_signals: Sequence[int] = (signal.SIGINT,),
                 drain_limit: Optional[float] = None):
        if isinstance(sources, (str, os.PathLike, int, Source)):
            sources = [sources]
        self.sinks, self.callbacks, self.sources = [], [], []  # sources: List[Source]
        self._own_detector, self.detector = close_detector, detector
        self._run_iter: Optional[weakref.ref] = None
        try:  # what this pipeline was handed to close is closed when it cannot be made
            self.sinks, self.callbacks = checked_outputs(sinks, callbacks)
            check_detector(detector)
            check_numbers(batch, batch_timeout, queue_size, max_frames, sample_fps)
            self.tracker = tracker_for(track)  # before the sources open: a missing package fails first
            check_events_have_tracks(self.sinks, self.tracker)
            self.sources = open_sources(sources, **checked_source_options(source_options))
            self.batch = batch_size(batch, len(self.sources), getattr(detector, "runner", None))
        except BaseException:
            with contextlib.ExitStack() as steps:
                if close_detector:
                    steps.callback(detector.close)
                for item in [*self.sinks, *self.sources]:
                    steps.callback(getattr(item, "close", _nothing))
            raise
        self.batch_timeout, self.max_frames, self.sample_fps = batch_timeout, max_frames, sample_fps
        self.switch_interval = switch_interval
        self._holds_interval = False
        # a detector whose model is on a server submits batch k+1 while k is on the wire; a
        # 'response' stage waits for the results in order
        self._async = bool(getattr(detector, "asynchronous", False))
        stages = STAGES[:2] + ("infer", "response")[:1 + self._async] + STAGES[3:-1]
        self.metrics = Metrics(stages=stages + self._extra_stages() + STAGES[-1:])
        self.control = Control()
        self._steps = DetectorSteps(detector, self.metrics, self.control, self._async,
                                    frames_failed=lambda frames: self._stream_ends.frames_failed(frames))
        self.interrupted = False
        self._signals = StopSignals(stop_signals, drain=self._interrupt, abort=self.control.abort,
                                    drain_limit=drain_limit)
        # a signal handler only sets flags; closing the sources takes locks the interrupted
        # main thread may hold, so a thread of its own does it
        self._close_requested, self._run_over = threading.Event(), False
        self._closer = threading.Thread(target=self._close_when_asked, name="source-closer", daemon=True)
        self._gate = LiveGate.for_run(self.sources, self.batch, queue_size, self.control)
        live = any(s.live for s in self.sources)
        cap, self._positions = max(1, queue_size or (1 if live else 4)), itertools.count()
        # live: one batch waits while one is prepared, so a frame is at most ~2 batches old
        self._decoded = self._channel("decoded", self.batch if self._gate
                                      else cap * self.batch + len(self.sources))
        self._prepared = self._channel("prepared", cap)
        self._inferred = self._channel("inferred", cap)
        self._responded = self._channel("responded", cap) if self._async else self._inferred
        self._results = self._channel("results", cap * self.batch)
        self._after = {name: self._channel({"track": "tracked"}.get(name, name), cap * self.batch)
                       for name in self._extra_stages()}  # the read / track stages' outboxes
        self._out = self._channel("out", cap * self.batch)
        self._started, self._threads, self._source_errors = False, [], SourceFailures(self.sources)

    def _channel(self, name: str, capacity: int) -> Channel:
        """The next channel downstream (made in the run's order: a failed stage's upstream stops)."""
        return Channel(name, capacity, self.control, self.metrics.queue(name, capacity),
                       next(self._positions), self._gate)

    # -- public API -----------------------------------------------------------------------------
    @property
    def total_frames(self) -> Optional[int]:
        """Frames the run will produce when every source knows its length, else None (about
        as many under `sample_fps`: a video's length times its share of the frame rate)."""
        totals = [self._sampled_total(s) for s in self.sources]
        if any(t is None for t in totals):
            return None
        if self.max_frames is not None:
            totals = [min(t, self.max_frames) for t in totals]
        return sum(totals)

    def _sampled_total(self, source) -> Optional[int]:
        total, fps = source.total_frames, source.fps
        if total is None or self.sample_fps is None or source.kind == "images" or not fps:
            return total
        return min(total, math.ceil(total * self.sample_fps / fps))

    @property
    def dropped(self) -> int:
        return sum(s.stats.dropped for s in self.sources)

    @property
    def lost(self) -> int:
        """Frames read but never written (a run stopped at once, or failed; those whose inference
        failed: `metrics.failed_frames`); report() has them once the run is over, 0 until then."""
        delivered = sum(s.stats.delivered for s in self.sources)
        return delivered - self.metrics.frames_out - self.metrics.failed_frames

    def stop(self) -> None:
        """Stop reading new frames; frames already read still reach the sinks (those that
        would wait for a model server that is away fail at once, counted)."""
        self.control.draining.set()
        self._close_sources()

    def __iter__(self) -> Iterator[FrameResult]:
        if self._started or self._run_iter is not None:
            raise RuntimeError("a Pipeline runs once; make a new one")
        run = RunIterator(self._iterate())
        # close() ends a run left partway through it; a weak reference, so that a loop that
        # breaks still drops the last reference and ends the run at once
        self._run_iter = weakref.ref(run)
        return run

    def _iterate(self) -> Iterator[FrameResult]:
        finished = False
        end_may_be_lost = False
        try:
            self._start()  # inside: a start that fails half-way still shuts down what it began
            while True:
                try:
                    item = self._out.get(timeout=POLL_S) if end_may_be_lost else self._out.get()
                except queue.Empty:
                    if self._threads[-1].is_alive() or len(self._out):
                        continue
                    item = END  # the sink stage has ended: its END was the item interrupted
                except KeyboardInterrupt:  # Ctrl-C without our handler (stop_signals=())
                    if self.interrupted:  # second Ctrl-C: stop now
                        raise
                    self._interrupt()
                    self._signals.start_deadline()
                    end_may_be_lost = True  # it may have landed after get() took an item
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
            self._signals.drained()  # the drain limit is not the outputs' closing
            try:
                self._shutdown()
            except BaseException as exc:
                if self.control.error is None:
                    raise
                # the run's own error stays the one raised; a sink that then failed to close
                # (a broken encoder, a full disk) is kept as its context
                self.control.error.__context__ = exc
            finally:
                self._signals.restore()
        if self.control.error is not None:
            raise self.control.error
        if self.interrupted:
            raise Interrupted(self._signals.first or signal.SIGINT)
        if self._source_errors:
            raise self._source_errors.ending()

    def close(self) -> None:
        """Release sources, sinks and the detector of a pipeline that will not run, or stop a
        run left partway (`with Pipeline(...) as p: next(iter(p))`) as a `break` would, also
        from another thread; a run iterated to its end has released them itself."""
        run = self._run_iter() if self._run_iter is not None else None
        if run is not None and not run.close():  # a step under way (in another thread): it
            return self.control.abort()  # stops at its next one (stop() lets frames through)
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
            drain_expired=self._signals.drain_expired, lost=self.lost if self.metrics.finished else 0, sample_fps=self.sample_fps, model=self.detector.describe(), **extra)

    # -- threads ----------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        if self.switch_interval:
            hold_switch_interval(self.switch_interval)
            self._holds_interval = True
        self._signals.install()  # first: a run whose clock runs handles its stop signals
        self.metrics.start()
        self._closer.start()
        self._threads = self._stages()
        self._stream_ends = StreamEnds(self.sources, self.sinks)  # the sinks as extended by now
        if self.tracker is not None:
            self.tracker.lead(self.sinks)
        for stage in self._threads:
            stage.start()

    def _shutdown(self) -> None:
        """Stop the threads, end and close the sinks, close the detector: every step runs even
        when one raises (the first error propagates)."""
        if self.control.draining.is_set():  # stopped, not ended: sinks may close sooner
            for sink in self.sinks:
                getattr(sink, "stopping", _nothing)()
        with contextlib.ExitStack() as steps:  # callbacks run last-pushed first
            if self._own_detector:
                steps.callback(self.detector.close)
            for step in ("close", "ending"):  # every sink ends before the first one closes
                for sink in reversed(self.sinks):  # one's own sink may have neither
                    steps.callback(getattr(sink, step, _nothing))
            steps.callback(self._release_switch_interval)
            steps.callback(self._join_threads)
            steps.callback(self._close_sources)
            steps.callback(self._cancel_inference)

    def _cancel_inference(self) -> None:
        """An aborted or failed run does not wait for a model server (requests in flight, a
        reconnect): what the stages after a failure held has been written by now."""
        cancel = getattr(self.detector, "cancel", None)
        if (self.control.aborted.is_set() or self.control.error is not None) and cancel is not None:
            cancel()

    def _join_threads(self) -> None:
        for stage in self._threads:
            if stage.ident is not None:  # a start that failed left the rest unstarted
                stage.join()
        for source in self.sources:
            source.join(timeout=READER_GRACE_S)
            if self._threads and source.state in ("up", "connecting", "reconnecting"):
                source.state = "stopped"  # its stage read no frame after the stop (no finally)
        self.metrics.finish()
        self._run_over = True
        self._close_requested.set()  # the closer's last wake-up: nothing left for it to close
        if self._closer.ident is not None:
            self._closer.join()

    def _release_switch_interval(self) -> None:
        if self._holds_interval:
            self._holds_interval = False
            release_switch_interval()

    def _interrupt(self) -> None:
        """The first stop signal (called from its handler): flags only, the closer does the rest."""
        self.interrupted = True
        self.control.draining.set()
        self._close_requested.set()

    def _close_when_asked(self) -> None:
        if self._close_requested.wait() and not self._run_over:
            self._close_sources()

    def _close_sources(self) -> None:
        for source in self.sources:
            source.close()
        stop_waiting = getattr(self.detector, "stop_waiting", None)  # a Detector of one's own
        if stop_waiting is not None and self.control.draining.is_set():  # may lack it
            stop_waiting()

    def _stages(self) -> List[Stage]:
        """The run, one Stage per step; adding a step is one line here plus its function."""
        def stage(name, fn, inbox, outbox, **kw):
            return Stage(name, fn, inbox, outbox, self.control, self.metrics, **kw)

        batches = Batcher(self._decoded, len(self.sources), self.batch, self.batch_timeout,
                          self.detector.input_size_for)
        decoders = [stage(f"decode:{s.stream}", stamp(s.stream),
                          source_frames(s, self.max_frames, self.control.draining,
                                        self._source_errors, self.sample_fps),
                          self._decoded, metric="decode",
                          admit=self._gate and self._gate.admission(s)) for s in self.sources]
        work = self._steps
        steps = [stage("preprocess", work.prepare, batches, self._prepared),
                 stage("infer", work.infer, self._prepared, self._inferred)]
        if self._async:
            steps.append(stage("response", work.response, self._inferred, self._responded))
        steps.append(stage("postprocess", work.postprocess, self._responded, self._results, many=True))
        results = self._results
        for name in self._extra_stages():  # read, track: FrameResult -> FrameResult
            fn, outbox = {"read": work.read_texts, "track": self._track}[name], self._after[name]
            steps.append(stage(name, fn, results, outbox))
            results = outbox
        sink = stage("sink", self._sink, results, self._out, idle=lambda: self._stream_ends.idle())
        return decoders + steps + [sink]

    def _extra_stages(self) -> tuple:
        """The optional steps between post-processing and the sinks, in order."""
        reads = getattr(self.detector, "recognizer", None) is not None
        return ("read",) * reads + ("track",) * (self.tracker is not None)

    def _track(self, result: FrameResult) -> FrameResult:
        frame, detections = result
        return FrameResult(frame, self.tracker(frame, detections))

    def _sink(self, result: FrameResult) -> FrameResult:
        frame, detections = result
        written = 0
        try:
            for sink in self.sinks:
                sink.write(frame, detections)
                written += 1
        finally:  # a frame a later sink failed on is written all the same (its JSON line is)
            if written or not self.sinks:
                self.metrics.frame_done(frame.t_read)
        self._stream_ends.frame_written(frame)
        for callback in self.callbacks:
            callback(frame, detections)
        return result

