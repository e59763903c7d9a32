"""`Batcher`: the inbox of the preprocess stage; groups decoded frames into engine batches.

Frames of several sources share a batch when they need the same network input size; a batch
holds up to `batch` frames and waits at most `timeout` seconds for more once it has its first. A
frame that needs another size is carried over to start the next batch, so order per source holds.
"""
from __future__ import annotations

import queue
import time
from typing import Callable, List, Optional, Tuple

from engine.errors import ModelError

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
        self._carry: Optional[Frame] = None

    def get(self):
        while self._live or self._carry is not None:
            frames = self._collect()
            if frames:
                return frames
        return END

    def _next(self, frames: List[Frame], deadline: Optional[float]):
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        wait = None if not frames else max(0.0, deadline - time.perf_counter())
        return self._decoded.get(timeout=wait)  # queue.Empty once the wait is over

    def _collect(self) -> List[Frame]:
        frames: List[Frame] = []
        size = deadline = None
        while len(frames) < self._batch and (self._carry is not None or self._live):
            try:
                item = self._next(frames, deadline)
            except queue.Empty:
                break
            if item is END:  # one decode stage finished
                self._live -= 1
                continue
            item_size = self._size_of(*item.size)
            if frames and item_size != size:
                self._carry = item
                break
            if not frames:
                size, deadline = item_size, time.perf_counter() + self._timeout
            frames.append(item)
        return frames


def batch_size(batch: int, sources: int, runner) -> int:
    """Frames per engine call: as asked, else one per source and at least one per parallel
    session; never more than the runner takes (`Runner.max_batch`, 0: no limit)."""
    limit = int(getattr(runner, "max_batch", 0) or 0)
    if batch and limit and batch > limit:
        raise ModelError(f"--batch {batch}: the model takes at most {limit} frames per call "
                         "(a served model's max_batch_size, an engine's profile)")
    chosen = batch or max(sources, getattr(runner, "parallelism", 1))
    return min(chosen, limit) if limit else chosen
