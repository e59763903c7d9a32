"""The Python objects TensorRT calls back from C++ during a build (the INT8 calibrator, the
progress monitor). TensorRT's binding catches an exception raised in them, prints it and goes
on as if the method had answered "no more" (python/src/infer/pyInt8.cpp, PyProgressMonitor in
pyCore.cpp): the double does the same, so an error dbrt lets escape there is lost."""
import numpy as np
import pytest
from engine_helpers import SMALL

import trt_double
from engine.errors import DbrtError, ModelError
from engine.tensorrt.build import BuildOptions, build_engine_file


def _failing_after(count, error, rng):
    def batches(shape):
        for k in range(count + 1):
            if k == count:
                raise error
            yield rng.random(shape, dtype=np.float32)
    return batches


@pytest.mark.parametrize("flavour", ["8.6", "10.x"])
@pytest.mark.parametrize("error, raised, match", [
    (DbrtError("cannot read calibration image 7.jpg"), DbrtError, "7.jpg"),
    (MemoryError("out of memory allocating 12 MB"), ModelError,
     "INT8 calibration failed: MemoryError: out of memory"),
])
def test_an_error_in_the_calibration_data_fails_the_build_and_caches_nothing(
        monkeypatch, tiny_onnx, tmp_path, rng, capfd, flavour, error, raised, match):
    """A calibration source failing at its second batch: TensorRT took that as the end of the
    data, built an engine calibrated on one batch and cached its ranges as whole."""
    trt_double.install(monkeypatch, flavour)
    cache = tmp_path / "calib.cache"
    options = BuildOptions(precision="int8", profile=SMALL, calibration=_failing_after(1, error, rng),
                           calibration_cache=cache)
    with pytest.raises(raised, match=match):
        build_engine_file(tiny_onnx, tmp_path / "int8.engine", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no engine, no calibration cache
    assert "Exception caught" not in capfd.readouterr().err  # the calibrator kept it to itself


def test_the_double_swallows_callback_exceptions_as_tensorrt_does(capsys):
    from trt_double.plan import python_override

    class Calibrator:
        def get_batch(self, names):
            raise ValueError("boom")

    assert python_override(Calibrator(), "get_batch", None, ["images"]) is None
    assert "[ERROR] Exception caught in get_batch(): boom" in capsys.readouterr().err


def test_the_calibrators_batch_size_stays_that_of_its_batches(monkeypatch, rng):
    """get_batch_size answered 0 once the first batch had been handed over: TensorRT's docs
    ask it to be the size of every batch, whenever it is asked."""
    from engine.tensorrt.calibrator import entropy_calibrator
    from trt_double import fake_cuda

    trt = trt_double.install(monkeypatch, "8.6")
    batches = [rng.random((4, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    calibrator = entropy_calibrator(trt, batches, fake_cuda.HostBackend())
    sizes = [calibrator.get_batch_size()]
    while calibrator.get_batch(["input"]):
        sizes.append(calibrator.get_batch_size())
    assert sizes == [4, 4, 4] and calibrator.batches_used == 2
