"""ParallelRunner: a batch split across several ONNX Runtime sessions gives the same outputs,
in order, as one session; mismatched runners and bad inputs fail clearly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError, ShapeError
from engine.loader import RunnerOptions
from engine.onnxruntime.runner import OnnxRuntimeRunner
from engine.onnxruntime.parallel import ParallelRunner


def _onnx(path: Path, scale: float = 3.0, channels: int = 3, batch="n") -> Path:
    """A detector-shaped toy: sigmoid(scale * channel mean), (N, C, H, W) -> (N, 1, H, W)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "k"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["prob"])]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, channels, "h", "w"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [batch, 1, "h", "w"])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [scale])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              str(path))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return _onnx(tmp_path_factory.mktemp("parallel") / "toy.onnx")


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_split_batch_matches_one_session(toy, rng, batch):
    x = rng.standard_normal((batch, 3, 32, 64)).astype(np.float32)
    with OnnxRuntimeRunner(toy, device="cpu", threads=1) as single:
        expected = single.infer(x)["prob"]
    with ParallelRunner.onnxruntime(toy, sessions=3, threads=1) as runner:
        assert runner.input_names == ("images",) and runner.output_names == ("prob",)
        np.testing.assert_array_equal(runner.infer({"images": x})["prob"], expected)


def test_runners_of_different_models_are_refused(toy, tmp_path):
    other = _onnx(tmp_path / "other.onnx", channels=1)
    runner = ParallelRunner([OnnxRuntimeRunner(toy, device="cpu", threads=1),
                             OnnxRuntimeRunner(other, device="cpu", threads=1)])
    with pytest.raises(ModelError, match="do not serve the same model"):
        runner.activate()
    assert not any(r.is_active for r in runner.runners)  # the sessions made were let go
    with pytest.raises(ModelError, match=">= 1"):
        ParallelRunner.onnxruntime(toy, sessions=0)


def test_a_session_that_fails_to_load_lets_go_of_the_ones_made_before_it(toy):
    """The first session stayed active (its memory held, on a GPU too) once the second
    failed: the ParallelRunner was never active, so nothing deactivated it."""
    def broken():
        raise ModelError("cannot load the second session")

    runner = ParallelRunner([OnnxRuntimeRunner(toy, device="cpu", threads=1),
                             OnnxRuntimeRunner(broken, device="cpu", threads=1)])
    with pytest.raises(ModelError, match="second session"):
        runner.activate()
    assert not runner.runners[0].is_active and not runner.is_active


def test_a_model_with_a_fixed_batch_is_never_sent_more_frames(toy, tmp_path, rng):
    """A model exported for one frame per call (its batch dimension fixed) said it took any
    number: detect_batch and a run of two sources sent it two, which ONNX Runtime refused."""
    from pipeline.detector import Detector

    single = _onnx(tmp_path / "batch1.onnx", batch=1)
    with OnnxRuntimeRunner(single, device="cpu", threads=1) as runner, \
            OnnxRuntimeRunner(toy, device="cpu", threads=1) as dynamic:
        assert (runner.max_batch, dynamic.max_batch) == (1, 0)
    with ParallelRunner.onnxruntime(single, sessions=2) as runner:
        assert runner.max_batch == 2
        assert runner.infer(np.zeros((2, 3, 32, 32), np.float32))["prob"].shape[0] == 2
    images = [rng.integers(0, 255, (64, 96, 3), np.uint8) for _ in range(3)]
    with Detector(single, preset="db", options=RunnerOptions(threads=1)) as det:
        assert len(det.detect_batch(images)) == 3


def test_bad_input_fails_with_the_runner_error(toy):
    with ParallelRunner.onnxruntime(toy, sessions=2) as runner:
        with pytest.raises(ShapeError, match="rank 3"):
            runner.infer(np.zeros((2, 32, 32), np.float32))


def test_detector_runs_on_a_parallel_runner(toy, rng):
    from dbnet.spec import PRESETS
    from pipeline.detector import Detector

    frames = [np.full((40, 60, 3), 255, np.uint8)] * 3
    with Detector(ParallelRunner.onnxruntime(toy, sessions=2),
                  lambda spec: spec.replace(limit_side=64)) as det:
        assert det.spec == PRESETS["db"].replace(limit_side=64)  # no metadata: DB defaults
        results = det.detect_batch(frames)
    assert all((r.boxes_xyxy[:, 2:] <= [60, 40]).all() for r in results)
    assert len({len(r) for r in results}) == 1  # identical frames, identical boxes


def test_load_runner_sessions_and_spin(toy, rng):
    from engine.loader import RunnerOptions, load_runner

    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    with OnnxRuntimeRunner(toy, device="cpu", threads=1) as single:
        expected = single.infer(x)["prob"]
    runner = load_runner(toy, backend="onnxruntime", device="cpu",
                         options=RunnerOptions(sessions=2, spin=False))
    assert isinstance(runner, ParallelRunner) and runner.parallelism == 2
    with runner:
        np.testing.assert_array_equal(runner.infer(x)["prob"], expected)
    with pytest.raises(ModelError, match="sessions must be >= 1"):
        load_runner(toy, options=RunnerOptions(sessions=-1))
    with pytest.raises(ModelError, match="for ONNX Runtime on the CPU"):
        load_runner(toy, backend="tensorrt", options=RunnerOptions(sessions=2))


@pytest.mark.parametrize("spin, entry", [(None, ""), (True, "1"), (False, "0")])
def test_spin_reaches_the_session_options(toy, monkeypatch, spin, entry):
    import onnxruntime as ort

    seen = {}
    real = ort.InferenceSession

    def spy(model, sess_options=None, **kwargs):
        seen["entry"] = sess_options.get_session_config_entry("session.intra_op.allow_spinning") \
            if spin is not None else ""
        return real(model, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    with OnnxRuntimeRunner(toy, device="cpu", threads=1, spin=spin):
        pass
    assert seen["entry"] == entry
