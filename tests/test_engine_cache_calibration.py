"""The engine cache and --calib-cache: TensorRT takes INT8 ranges from an existing calibration
cache file instead of the images, so the cached engine follows that file's content."""
from __future__ import annotations

import numpy as np
import pytest

import trt_double
from engine_helpers import SMALL
from engine.errors import ModelError
from engine.tensorrt.cache import calibration_cache_sha256, cached_engine_runner
from engine.tensorrt.build import BuildOptions


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def images(shape):
    return (np.full(shape, 0.25, dtype=np.float32) for _ in range(2))


def build(onnx, table):
    with cached_engine_runner(onnx, precision="int8", profile=SMALL, calibration=images,
                              calibration_cache=table):
        pass


def test_another_calibration_cache_at_the_same_path_is_another_engine(monkeypatch, tiny_onnx,
                                                                       tmp_path):
    """Keyed by the path, a new file at the same path reused the engine of the old ranges. The
    file the first build writes from the images is the one it was built from: no second build."""
    trt = trt_double.install(monkeypatch, "10.x")
    table = tmp_path / "calib.cache"
    build(tiny_onnx, table)                    # no file yet: calibrated from the images, written
    assert trt._double.builds == 1 and table.is_file()
    build(tiny_onnx, table)                    # the file it wrote: the cached engine
    assert trt._double.builds == 1
    table.write_bytes(table.read_bytes().replace(b": ", b": 1"))  # other ranges, same path
    build(tiny_onnx, table)
    assert trt._double.builds == 2
    build(tiny_onnx, table)
    assert trt._double.builds == 2             # the same file: the cached engine
    moved = tmp_path / "elsewhere.cache"
    moved.write_bytes(table.read_bytes())      # the same content at another path: the same plan
    build(tiny_onnx, moved)
    assert trt._double.builds == 2


def test_a_calibration_cache_that_cannot_be_read_is_one_error(monkeypatch, tiny_onnx, tmp_path):
    trt_double.install(monkeypatch, "10.x")
    options = BuildOptions(precision="int8", profile=SMALL, calibration=images,
                           calibration_cache=tmp_path)  # a folder
    with pytest.raises(ModelError, match="calibration cache .* cannot be read"):
        calibration_cache_sha256(options.calibration_cache)
