"""The runner interface every backend implements (ONNX Runtime, TensorRT, PyTorch stand-ins).

A runner is loaded once, activated once, asked to `infer` many times and released explicitly:

    with OnnxRuntimeRunner("model.onnx") as runner:
        outputs = runner.infer({"images": batch})     # name -> array

Inputs are NCHW float32 arrays (NumPy, or CuPy for GPU runners that accept them); outputs are a
dict name -> array of the same kind the runner produces (NumPy for CPU runners, CuPy for GPU
runners that keep outputs on the device).
"""
from __future__ import annotations

import abc
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple, Union

from .errors import DbrtError, ShapeError

Dim = Union[int, str, None]  # a fixed size, or a symbolic / unknown one


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[Dim, ...]
    dtype: str  # numpy dtype name, e.g. "float32"


def fixed_batch(inputs: Tuple[TensorInfo, ...]) -> int:
    """The batch size an input fixes (its first dimension a number), 0 when none does."""
    fixed = [t.shape[0] for t in inputs if t.shape and isinstance(t.shape[0], int) and t.shape[0] > 0]
    return min(fixed, default=0)


class Runner(abc.ABC):
    """Base class: activate / infer / deactivate, usable as a context manager."""

    name = "runner"

    def __init__(self):
        self._active = False

    # -- lifecycle ------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self._active:
            self._activate()
            self._active = True
        return self

    def deactivate(self) -> None:
        if self._active:
            self._active = False
            self._deactivate()

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @property
    def is_active(self) -> bool:
        return self._active

    # -- inference ------------------------------------------------------------------------
    def infer(self, feed) -> Dict[str, object]:
        """Run one batch. `feed` is a dict name -> array, or a single array for the only input."""
        return self._infer(self._checked(feed))

    # True when `submit` returns before the batch has run (a remote server), so a caller can
    # prepare the next batch while this one is on its way.
    asynchronous = False
    # the most frames one call takes (a served model's max_batch_size, an engine profile's
    # largest batch); 0: no limit
    max_batch = 0

    @property
    def min_batch(self) -> int:
        """The fewest frames one call takes: a model exported with a fixed batch size takes
        exactly that many, so a caller pads a shorter batch up to it (and drops the padded
        outputs); 1 for a model of any batch size."""
        return fixed_batch(self.inputs) or 1

    def submit(self, feed) -> Future:
        """Start one batch; the Future's result is what `infer` returns. Local runners run it
        here through `infer` (its errors come out of `result()`); remote ones send it and
        return (they check shapes before sending, raising here)."""
        future: Future = Future()
        try:
            future.set_result(self.infer(feed))
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits for the result
            future.set_exception(exc)
        return future

    def _checked(self, feed) -> Mapping[str, object]:
        if not self._active:
            raise DbrtError(f"{self.name} runner is not active: closed, or never activated "
                            "(use it in a `with` block or call activate())")
        if not isinstance(feed, Mapping):
            if len(self.inputs) != 1:
                raise ShapeError(f"model has {len(self.inputs)} inputs; pass a dict")
            feed = {self.inputs[0].name: feed}
        self._check_feed(feed)
        return feed

    def _check_feed(self, feed: Mapping[str, object]) -> None:
        expected = {t.name: t for t in self.inputs}
        missing = set(expected) - set(feed)
        unknown = set(feed) - set(expected)
        if missing or unknown:
            raise ShapeError(f"inputs do not match the model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unknown)}")
        for name, array in feed.items():
            spec = expected[name]
            shape = tuple(getattr(array, "shape", ()))
            if len(shape) != len(spec.shape):
                raise ShapeError(f"input {name!r} has rank {len(shape)}, model expects {spec.shape}")
            for got, want in zip(shape, spec.shape):
                if isinstance(want, int) and want >= 0 and got != want:
                    raise ShapeError(f"input {name!r} has shape {shape}, model expects {spec.shape}")

    # -- description ----------------------------------------------------------------------
    # Backends fill these when they activate (or load); subclasses may override the properties.
    _inputs: Tuple[TensorInfo, ...] = ()
    _outputs: Tuple[TensorInfo, ...] = ()

    @property
    def inputs(self) -> Tuple[TensorInfo, ...]:
        """Input tensors (name, shape with symbolic dims, dtype)."""
        return self._inputs

    @property
    def outputs(self) -> Tuple[TensorInfo, ...]:
        """Output tensors."""
        return self._outputs

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def metadata(self) -> Dict[str, str]:
        """Model metadata (ONNX metadata_props or the engine's record)."""
        return {}

    # Where outputs live: "cpu" (NumPy) or "cuda" (CuPy).
    output_device = "cpu"

    # -- backend hooks --------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, object]) -> Dict[str, object]: ...
