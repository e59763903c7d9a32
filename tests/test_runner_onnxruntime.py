"""The ONNX Runtime runner behind the runner interface."""
import numpy as np
import pytest

from dbnet.spec import ModelSpec
from engine.errors import DbrtError, ModelError, ShapeError
from engine.loader import load_runner
from engine.onnxruntime.runner import OnnxRuntimeRunner


def test_runner_infers_dynamic_shapes(tiny_onnx):
    with OnnxRuntimeRunner(tiny_onnx, device="cpu") as runner:
        assert runner.input_names == ("images",) and runner.output_names == ("prob",)
        assert runner.inputs[0].shape[1] == 3
        assert ModelSpec.from_metadata(runner.metadata).resize.limit_side == 256
        for shape in [(1, 3, 64, 64), (2, 3, 96, 128)]:
            out = runner.infer(np.zeros(shape, np.float32))["prob"]
            assert out.shape == (shape[0], 1) + shape[2:]
            assert np.all((out >= 0) & (out <= 1))
        with pytest.raises(ShapeError):
            runner.infer(np.zeros((1, 4, 64, 64), np.float32))
        with pytest.raises(ShapeError):
            runner.infer({"nope": np.zeros((1, 3, 64, 64), np.float32)})
    assert not runner.is_active


def test_runner_refuses_use_before_activate(tiny_onnx):
    runner = OnnxRuntimeRunner(tiny_onnx)
    with pytest.raises(DbrtError):
        runner.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelError):
        load_runner(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        load_runner(bad).activate()
    other = tmp_path / "model.txt"
    other.write_text("x")
    with pytest.raises(ModelError):
        load_runner(other)


def test_runner_takes_a_session_or_a_loader(tiny_onnx):
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    with OnnxRuntimeRunner(tiny_onnx, device="cpu") as plain:
        expected = plain.infer(x)["prob"]
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    calls = []

    def loader():  # called on activation, not before
        calls.append(1)
        return tiny_onnx.read_bytes()

    lazy = OnnxRuntimeRunner(loader, device="cpu")
    assert calls == []
    for runner in (OnnxRuntimeRunner(session), lazy):
        with runner:
            np.testing.assert_array_equal(runner.infer(x)["prob"], expected)
    assert calls == [1]
