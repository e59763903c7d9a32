"""`ParallelRunner`: one batch split across several runners of the same model, run concurrently.

On a CPU, one ONNX Runtime session with k intra-op threads scales poorly for small detectors
(many thin layers, threads spinning at every barrier); k single-thread sessions each taking
1/k of the batch keep every core busy. The pipeline feeds it batches of >= k frames.

    with ParallelRunner.onnxruntime("ppocr_det.onnx", sessions=2) as runner:
        prob = runner.infer({"x": batch_of_4})["fetch_name_0"]    # two frames per session
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..base import Runner, TensorInfo
from ..errors import ModelError


class ParallelRunner(Runner):
    """Runs each batch as up to len(runners) chunks along N, one chunk per runner, in threads.

    The runners must serve the same model (same inputs and outputs); outputs are NumPy arrays
    concatenated back in batch order. A batch of one frame uses the first runner alone.
    """

    name = "parallel"

    def __init__(self, runners: Sequence[Runner]):
        super().__init__()
        if not runners:
            raise ModelError("ParallelRunner needs at least one runner")
        self.runners = tuple(runners)
        self.parallelism = len(self.runners)  # frames per batch that keep every runner busy
        self._pool = None

    @classmethod
    def onnxruntime(cls, model: os.PathLike, sessions: int = 2, threads: int = 1,
                    device: str = "cpu", spin: Optional[bool] = None) -> "ParallelRunner":
        """`sessions` ONNX Runtime sessions of `threads` intra-op threads each."""
        from .runner import OnnxRuntimeRunner

        if sessions < 1 or threads < 1:
            raise ModelError(f"sessions and threads must be >= 1, got {sessions} and {threads}")
        return cls([OnnxRuntimeRunner(model, device=device, threads=threads, spin=spin)
                    for _ in range(sessions)])

    def _activate(self) -> None:
        try:  # this runner is not active when this fails: the sessions made so far are let go
            for runner in self.runners:
                runner.activate()
            first = self.runners[0]
            for runner in self.runners[1:]:
                if (runner.inputs, runner.outputs) != (first.inputs, first.outputs):
                    raise ModelError("ParallelRunner: the runners do not serve the same model")
        except BaseException:
            self._deactivate_runners()
            raise
        self._pool = ThreadPoolExecutor(len(self.runners), thread_name_prefix="dbrt-infer")

    def _deactivate_runners(self) -> None:
        with contextlib.ExitStack() as steps:  # each one, even when another fails to let go
            for runner in self.runners:
                steps.callback(runner.deactivate)

    def _deactivate(self) -> None:
        self._pool.shutdown(wait=True)
        self._pool = None
        self._deactivate_runners()

    def _check_feed(self, feed: Mapping[str, object]) -> None:
        """The inputs but for their batch size: each runner checks its own share (a model of
        a fixed batch size takes one share a runner)."""
        share = self.runners[0].min_batch  # one frame, or all a session of a fixed batch takes
        super()._check_feed({name: array[:share] if getattr(array, "ndim", 0) else array
                             for name, array in feed.items()})

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        n = len(next(iter(feed.values())))
        parts = min(n, len(self.runners))
        if parts <= 1:
            return self.runners[0].infer(feed)
        bounds = np.linspace(0, n, parts + 1).astype(int)
        chunks = [{k: v[lo:hi] for k, v in feed.items()} for lo, hi in zip(bounds, bounds[1:])]
        futures = [self._pool.submit(r.infer, c) for r, c in zip(self.runners, chunks)]
        results = [f.result() for f in futures]  # re-raises a runner's error here
        return {name: np.concatenate([np.asarray(r[name]) for r in results])
                for name in self.output_names}

    @property
    def inputs(self) -> Tuple[TensorInfo, ...]:
        return self.runners[0].inputs

    @property
    def outputs(self) -> Tuple[TensorInfo, ...]:
        return self.runners[0].outputs

    @property
    def max_batch(self) -> int:
        """Each runner takes its share of a batch (at most one frame more than another's)."""
        return self.runners[0].max_batch * len(self.runners)

    @property
    def min_batch(self) -> int:
        """Sessions of a fixed batch size each take exactly their share, so a call takes a
        share for every session (padded by the caller); 1 when a session takes any number."""
        each = self.runners[0].min_batch
        return each * len(self.runners) if each > 1 else 1

    @property
    def metadata(self) -> Dict[str, str]:
        return self.runners[0].metadata
