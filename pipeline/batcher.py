"""`Batcher`: the inbox of the preprocess stage; groups decoded frames into engine batches.

Frames of several sources share a batch when they need the same network input size; a batch
holds up to `batch` frames and waits at most `timeout` seconds for more once it has its first. A
frame that needs another size is left first in its channel to start the next batch (still waiting
there, as a LiveGate counts it), so order per source holds.
"""
from __future__ import annotations

import queue
import time
from typing import Callable, List, Tuple

from engine.errors import ModelError
from engine.padding import runner_min_batch

from .sources import Frame
from .stages import END, Channel


class Batcher:
    """`get()` -> the next list of frames of one input size, or END once every source ended."""

    def __init__(self, decoded: Channel, sources: int, batch: int, timeout: float,
                 input_size_for: Callable[[int, int], Tuple[int, int]]):
        self._decoded = decoded
        self._live = sources  # decode stages that have not sent END yet
        self._batch = batch
        self._timeout = timeout
        self._size_of = input_size_for

    def get(self):
        while self._live:
            frames = self._collect()
            if frames:
                return frames
        return END

    def _collect(self) -> List[Frame]:
        frames: List[Frame] = []
        size = deadline = None

        def fits(item) -> bool:  # a frame of another size is left first in the channel
            return not frames or item is END or self._size_of(*item.size) == size

        while len(frames) < self._batch and self._live:
            wait = None if not frames else max(0.0, deadline - time.perf_counter())
            try:
                item = self._decoded.get(timeout=wait, keep=fits)
            except queue.Empty:  # the wait is over, or the next frame needs another size
                break
            if item is END:  # one decode stage finished
                self._live -= 1
                continue
            if not frames:
                size, deadline = self._size_of(*item.size), time.perf_counter() + self._timeout
            frames.append(item)
        return frames


def batch_size(batch: int, sources: int, runner) -> int:
    """Frames per engine call: as asked, else one per source and at least one per parallel
    session; never more than the runner takes (`Runner.max_batch`, 0: no limit). Unasked, at
    least as many as a model of a fixed batch size takes (`Runner.min_batch`): a shorter batch
    is padded to it and costs a whole call. Asked for fewer (`--batch 1`: no frame waits for
    others), a batch is padded (Detector.submit)."""
    limit = int(getattr(runner, "max_batch", 0) or 0)
    if batch and limit and batch > limit:
        raise ModelError(f"--batch {batch}: the model takes at most {limit} "
                         f"frame{'s' if limit > 1 else ''} per call "
                         "(a served model's max_batch_size, an engine's profile, an ONNX's fixed batch "
                         "size)")
    chosen = batch or max(sources, getattr(runner, "parallelism", 1), runner_min_batch(runner))
    return min(chosen, limit) if limit else chosen
