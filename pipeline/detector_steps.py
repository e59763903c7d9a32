"""The pipeline's detector stages as functions of a batch: prepare, infer (and, for a model on a
server, collect the response), post-process; and read, a function of one frame's result. The
Pipeline (runner.py) wires them between its queues; each runs in its own stage thread.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from engine.errors import InferenceFailed

from .detections import FrameResult
from .metrics import Metrics
from .sources import Frame
from .stages import Aborted, Control


@dataclass
class Batch:
    frames: List[Frame]
    array: object = None
    letterboxes: list = field(default_factory=list)
    prob: object = None
    pending: object = None  # an asynchronous detector's submitted call (Detector.submit)


class DetectorSteps:
    """What each detector stage does with one batch (or one result, for reading)."""

    def __init__(self, detector, metrics: Metrics, control: Control, asynchronous: bool,
                 frames_failed: Callable[[List[Frame]], None] = lambda frames: None):
        self.detector = detector
        self.frames_failed = frames_failed  # told of the frames a failed call cost
        self.metrics = metrics
        self.control = control
        self.asynchronous = asynchronous
        self._first_sizes_told: set = set()  # streams whose Frame.first_size the detector has
        # frames uploaded by the GPU preprocessor stay on the GPU for the read stage's crops
        self.crops_on_gpu = (getattr(detector, "recognizer", None) is not None
                             and bool(getattr(detector, "uses_gpu_preprocess", False)))

    def prepare(self, frames: List[Frame]) -> Batch:
        images = [f.image for f in frames]
        if not self.crops_on_gpu:
            return Batch(frames, *self.detector.prepare(images))
        uploads: list = []  # the frames as uploaded: the read stage crops them on the GPU
        array, letterboxes = self.detector.prepare(images, device_frames=uploads)
        for frame, upload in zip(frames, uploads):
            frame.device_image = upload
        return Batch(frames, array, letterboxes)

    def infer(self, batch: Batch) -> Optional[Batch]:
        array, batch.array = batch.array, None
        with self._quiet_after_abort():
            if self.asynchronous:
                batch.pending = self.detector.submit(array)
                return batch
            return self._inferred_or_failed(batch, lambda: self.detector.infer(array))

    def response(self, batch: Batch) -> Optional[Batch]:
        """An asynchronous detector's results, in submission order."""
        pending, batch.pending = batch.pending, None
        with self._quiet_after_abort():
            return self._inferred_or_failed(batch, lambda: self.detector.collect(pending))

    @contextlib.contextmanager
    def _quiet_after_abort(self):
        """Once the run aborts, a cancelled engine call is its consequence, not the run's error."""
        try:
            yield
        except Exception:
            if self.control.aborted.is_set():
                raise Aborted() from None
            raise

    def _inferred_or_failed(self, batch: Batch, call) -> Optional[Batch]:
        """The batch with its maps; a call that failed but may recover (a server away) costs
        its frames, counted in the report, and the run goes on."""
        try:
            batch.prob = call()
        except InferenceFailed as exc:
            self.metrics.frames_failed(len(batch.frames), str(exc))
            self.frames_failed(batch.frames)
            return None
        self.metrics.batch_done(len(batch.frames))
        return batch

    def postprocess(self, batch: Batch) -> List[FrameResult]:
        options: dict = {}  # (a detector of one's own may take neither)
        if getattr(self.detector, "roi", None) is not None or getattr(self.detector, "ignore", None):
            self._first_reads(batch.frames)
            # a frame the region or a zone misses names its source
            options["sources"] = [frame.source for frame in batch.frames]
            options["streams"] = [frame.stream for frame in batch.frames]  # images: one source
        if getattr(self.detector, "ignore", None):  # counted before reading and tracking
            options["dropped"] = []
        results = self.detector.postprocess(batch.prob, batch.letterboxes, **options)
        if "dropped" in options:
            self.metrics.detections_ignored(sum(options["dropped"]))
        return [FrameResult(frame, dets) for frame, dets in zip(batch.frames, results)]

    def _first_reads(self, frames: List[Frame]) -> None:
        """The size of each live source's first frame read, once, before its frames are
        post-processed: a camera whose first connection's frames were all dropped (read while
        the run got ready, or fell behind) and that came back smaller than a pixel --roi was
        refused as a mistake in the flag."""
        first_read = getattr(self.detector, "first_read", None)
        for frame in frames:
            if first_read is not None and frame.first_size is not None \
                    and frame.stream not in self._first_sizes_told:
                self._first_sizes_told.add(frame.stream)
                first_read(*frame.first_size, source=frame.source, stream=frame.stream)

    def read_texts(self, result: FrameResult) -> FrameResult:
        frame, detections = result
        image = frame.image if frame.device_image is None else frame.device_image
        frame.device_image = None  # read: its GPU memory goes back to the pool
        return FrameResult(frame, self.detector.read(image, detections))
