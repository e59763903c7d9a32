"""The PyTorch DBNet behind the Runner interface: same maps as its ONNX export under ONNX
Runtime on CPU; on a GPU (marked gpu) CuPy in, CuPy out on its own stream."""
import numpy as np
import pytest

from dbnet.spec import ModelSpec
from engine.errors import DbrtError, ShapeError
from engine.lazy import cupy_or_none

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_model():
    from export.model import DBNet

    torch.manual_seed(0)                                  # the weights conftest exports
    return DBNet("resnet18", width=0.25).eval()


def test_cpu_runner_matches_the_onnx_export(tiny_model, tiny_onnx, rng):
    from engine.onnxruntime.runner import OnnxRuntimeRunner
    from export.torch_runner import TorchRunner

    torch.set_num_threads(1)
    batch = rng.random((2, 3, 64, 96), dtype=np.float32)
    with TorchRunner(tiny_model) as runner:
        assert runner.output_device == "cpu" and runner.output_names == ("prob",)
        assert ModelSpec.from_metadata(runner.metadata).arch == "dbnet_resnet18_w0.25"
        out = runner.infer(batch)["prob"]
        with pytest.raises(ShapeError):
            runner.infer(np.zeros((1, 4, 64, 64), np.float32))
    with OnnxRuntimeRunner(tiny_onnx, device="cpu", threads=1) as ort:
        expected = ort.infer(batch)["prob"]
    assert isinstance(out, np.ndarray) and out.shape == (2, 1, 64, 96)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_bad_device():
    from export.torch_runner import TorchRunner

    with pytest.raises(DbrtError, match="'cpu' or 'cuda'"):
        TorchRunner(object(), device="tpu")


@pytest.mark.gpu
def test_cuda_runner_keeps_cupy_on_the_gpu(tiny_model, rng):
    cp = cupy_or_none()
    if cp is None or not torch.cuda.is_available():
        pytest.skip("needs CuPy, a CUDA build of torch and a GPU")
    from export.torch_runner import TorchRunner

    batch = rng.random((2, 3, 64, 96), dtype=np.float32)
    with TorchRunner(tiny_model, device="cpu") as cpu:
        expected = cpu.infer(batch)["prob"]
    with TorchRunner(tiny_model, device="cuda") as runner:
        assert runner.output_device == "cuda"
        out = runner.infer(cp.asarray(batch))["prob"]
        assert isinstance(out, cp.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(cp.asnumpy(out), expected, atol=2e-2)   # FP16 on the GPU
        np.testing.assert_allclose(cp.asnumpy(runner.infer(batch)["prob"]), expected, atol=2e-2)

