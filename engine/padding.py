"""Batches padded up to the fewest frames a model takes (`Runner.min_batch`).

A model exported or built with a fixed batch size (an ONNX of batch 4, a TensorRT engine built
with static shapes) takes exactly that many frames a call: a shorter batch (the end of a stream,
a batch timeout, a single image) is filled with copies of its last frame, and the outputs of the
copies are dropped. Each frame is computed on its own, so the kept outputs are those of an
unpadded call.
"""
from __future__ import annotations

from .lazy import array_module


def pad_batch(batch, size: int):
    """`batch` (N, ...) with copies of its last item appended up to `size` items (NumPy or
    CuPy, as given); itself when it has that many already."""
    missing = int(size) - int(batch.shape[0])
    if missing <= 0:
        return batch
    xp = array_module(batch)
    return xp.concatenate([batch, xp.repeat(batch[-1:], missing, axis=0)])


def runner_min_batch(runner) -> int:
    """The fewest frames a call of `runner` takes (1 for a runner that does not say)."""
    return max(1, int(getattr(runner, "min_batch", 1) or 1))
