"""Legacy INT8 calibration for weakly typed TensorRT (8.6, 10.x): an entropy calibrator that
feeds preprocessed NCHW batches from CuPy device buffers.

TensorRT 11.x removed calibrators; there INT8 means a Q/DQ ONNX from `dbrt export`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import ModelError
from ..files import write_whole


def entropy_calibrator(trt, batches: Optional[Iterable[np.ndarray]], backend,
                       cache_path: Optional[os.PathLike] = None, stop: Optional[threading.Event] = None):
    """A `trt.IInt8EntropyCalibrator2` over `batches` (same-shape float32 NCHW arrays).

    The calibration cache, when `cache_path` exists, lets TensorRT skip calibration entirely;
    `batches` None: the cache alone, and an error if TensorRT does not take it and asks for data.
    `stop` set (Ctrl-C): no further batch, and the cut-short calibration is not cached (a later
    build would take its ranges as whole).

    TensorRT calls these methods from C++, whose binding catches any exception a method raises,
    prints it and goes on as if calibration had ended (python/src/infer/pyInt8.cpp): the error
    never reaches the caller. So each method keeps its first error in `error`, which ends the
    calibration and its caching; `build_engine` raises it once the build returns.
    """
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ModelError(f"TensorRT {trt.__version__} has no INT8 calibrator (strongly typed "
                         "builds only); export a Q/DQ INT8 ONNX instead")

    class _EntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self._cache_only = batches is None
            self._batches = iter(() if batches is None else batches)
            self._first = next(self._batches, None)
            # fixed for the whole calibration, as TensorRT's docs ask of every batch
            self._batch_size = 0 if self._first is None else int(self._first.shape[0])
            self._device = None
            self._stream = backend.stream()
            self.cache_path = Path(cache_path) if cache_path else None
            self.batches_used = 0
            self.error: Optional[BaseException] = None

        def get_batch_size(self):
            return self._batch_size

        def get_batch(self, names):
            try:
                return self._next_batch(names)
            except Exception as exc:  # noqa: BLE001 - it would be lost in TensorRT's binding
                self.error = self.error or exc
                return None

        def _next_batch(self, names):
            batch, self._first = self._first, None
            if batch is None:
                batch = next(self._batches, None)
            if self._cache_only:
                raise ModelError(f"TensorRT did not take the calibration cache {self.cache_path} "
                                 "(made for another model or TensorRT version?) and asked for "
                                 "calibration images: give --calib DIR")
            if batch is None or self._stopped():
                return None                      # tells TensorRT calibration is over
            if self._device is None or self._device.shape != batch.shape:
                self._device = backend.empty(batch.shape, np.float32)
            backend.copy_into(self._device, batch, self._stream)
            backend.synchronize(self._stream)
            self.batches_used += 1
            return [backend.pointer(self._device)] * len(names)

        def _stopped(self) -> bool:
            return (stop is not None and stop.is_set()) or self.error is not None

        def read_calibration_cache(self):
            try:
                if self.cache_path is not None and self.cache_path.is_file():
                    return self.cache_path.read_bytes()
            except OSError as exc:
                self.error = self.error or exc
            return None

        def write_calibration_cache(self, cache):
            if self.cache_path is None or self._stopped():  # whole: it is reused when it exists
                return
            try:
                write_whole(self.cache_path, bytes(cache))
            except OSError as exc:
                self.error = self.error or exc

    return _EntropyCalibrator()
