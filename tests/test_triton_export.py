"""`dbrt triton export`: the model repository and its configs, parsed with tritonclient's
ModelConfig protobuf (no server needed). The TensorRT repository is built through the TensorRT
test double (tests/trt_double), not a real TensorRT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import ort_prob, trt  # noqa: F401

from dbnet.spec import ModelSpec
from engine.triton.repository import RepositoryError, Scheduling, read_config
from pipeline.cli import main

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def config_of(repo, name):
    return read_config(repo / name / "config.pbtxt")


def parameters(config):
    return {key: value.string_value for key, value in config.parameters.items()}


def test_onnx_repository_config(tiny_onnx, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["triton", "export", str(tiny_onnx), "-o", str(repo), "--name", "det", "--max-batch", "16",
                 "--preferred-batch", "4", "8", "--queue-delay-us", "500", "--instances", "3",
                 "--threads", "1", "--box-thresh", "0.45"]) == 0
    assert "triton://HOST:8001/det" in capsys.readouterr().out
    config = config_of(repo, "det")
    assert (config.name, config.backend, config.max_batch_size) == ("det", "python", 16)
    assert [(t.name, list(t.dims)) for t in config.input] == [("images", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("prob", [1, -1, -1])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert (group.count, group.Kind.Name(group.kind)) == (3, "KIND_CPU")
    spec = ModelSpec.from_metadata(parameters(config))
    assert spec.post.box_thresh == 0.45 and spec.resize.limit_side == 256
    assert parameters(config)["threads"] == "1"
    assert (repo / "det" / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert "onnxruntime" in (repo / "det" / "1" / "model.py").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["det"]


def test_shipped_model_with_postprocess_is_an_ensemble(tmp_path):
    repo = tmp_path / "repo"
    assert main(["triton", "export", "-o", str(repo), "--with-postprocess"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["dbnet", "dbnet_detect", "dbnet_postprocess"]
    ensemble = config_of(repo, "dbnet_detect")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 8
    assert [t.name for t in ensemble.input] == ["images", "frame_size"]
    assert [(t.name, pb.DataType.Name(t.data_type)) for t in ensemble.output] == [
        ("detections", "TYPE_STRING")]
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["dbnet", "dbnet_postprocess"]
    assert dict(steps[0].output_map) == {"prob": "prob_map"}
    assert dict(steps[1].input_map) == {"prob": "prob_map", "frame_size": "frame_size"}
    post = config_of(repo, "dbnet_postprocess")
    spec = ModelSpec.from_metadata(parameters(post))
    assert spec.post == ModelSpec.from_metadata(parameters(config_of(repo, "dbnet"))).post
    assert parameters(post)["dbrt_path"] == "dbrt"
    sources = repo / "dbnet_postprocess" / "1" / "dbrt"
    assert (sources / "pipeline" / "postprocess" / "cpu.py").is_file()
    assert not list(sources.rglob("*.onnx")) and not list(sources.rglob("*.mp4"))


@pytest.mark.parametrize("flags, message", [
    (["missing.onnx"], "ONNX file not found: missing.onnx"),
    (["--input-size", "64x96"], "--input-size fixes a TensorRT engine's shape; it needs --backend tensorrt"),
    (["--max-batch", "4", "--preferred-batch", "8"], "preferred batch sizes [8] are outside 1..4"),
    (["--name", "a/b"], "model name 'a/b' must be letters, digits"),
    (["--name", ".."], "model name '..' must be letters, digits"),
    (["--name", "."], "and not only dots"),
    (["--backend", "tensorrt", "--threads", "2"], "--threads sets ONNX Runtime's threads"),
])
def test_bad_export_is_one_line(tmp_path, capsys, flags, message):
    assert main(["triton", "export", *flags, "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbrt triton: error: ") and err.count("\n") == 1 and message in err, err


def test_export_refuses_a_file_that_is_not_onnx(tmp_path, capsys):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"plan")
    assert main(["triton", "export", str(engine), "-o", str(tmp_path / "r")]) == 2
    assert "expected an ONNX model (.onnx)" in capsys.readouterr().err
    notes = tmp_path / "notes.onnx"
    notes.write_text("hello")
    assert main(["triton", "export", str(notes), "-o", str(tmp_path / "r")]) == 2
    assert "is not a readable ONNX model" in capsys.readouterr().err


def test_tensorrt_repository_dynamic(trt, tiny_onnx, tmp_path, rng):  # noqa: F811
    repo = tmp_path / "repo"
    assert main(["triton", "export", str(tiny_onnx), "-o", str(repo), "--backend", "tensorrt",
                 "--max-batch", "4", "--preferred-batch", "2", "4", "--instances", "2"]) == 0
    config = config_of(repo, "dbnet")
    assert (config.platform, config.default_model_filename, config.max_batch_size) == (
        "tensorrt_plan", "model.plan", 4)
    assert [list(t.dims) for t in config.input] == [[3, -1, -1]]
    assert [list(t.dims) for t in config.output] == [[1, -1, -1]]
    (group,) = config.instance_group
    assert (group.count, group.Kind.Name(group.kind)) == (2, "KIND_GPU")
    assert not config.optimization.cuda.graphs  # H and W vary: no graphs
    (warmup,) = config.model_warmup
    # the default profile of the model's resize rule (short side 256): opt is 16:9
    assert warmup.batch_size == 1 and list(warmup.inputs["images"].dims) == [3, 256, 480]
    assert warmup.inputs["images"].zero_data
    params = parameters(config)
    assert params["tensorrt_version"] == trt.__version__ and ModelSpec.from_metadata(params)
    _plan_matches_onnx(trt, repo / "dbnet" / "1" / "model.plan", tiny_onnx, rng, (3, 3, 64, 96))


def test_tensorrt_repository_static_shape_uses_cuda_graphs(trt, tiny_onnx, tmp_path, rng):  # noqa: F811
    repo = tmp_path / "repo"
    assert main(["triton", "export", str(tiny_onnx), "-o", str(repo), "--backend", "tensorrt",
                 "--input-size", "64x96", "--with-postprocess"]) == 0
    config = config_of(repo, "dbnet")
    assert [list(t.dims) for t in config.input] == [[3, 64, 96]]
    assert [list(t.dims) for t in config.output] == [[1, 64, 96]]
    assert config.optimization.cuda.graphs and config.max_batch_size == 8
    assert list(config.model_warmup[0].inputs["images"].dims) == [3, 64, 96]
    ensemble = config_of(repo, "dbnet_detect")
    assert [list(t.dims) for t in ensemble.input] == [[3, 64, 96], [2]]
    assert [list(t.dims) for t in config_of(repo, "dbnet_postprocess").input] == [[1, 64, 96], [2]]
    _plan_matches_onnx(trt, repo / "dbnet" / "1" / "model.plan", tiny_onnx, rng, (8, 3, 64, 96))


def _plan_matches_onnx(trt, plan, onnx_path, rng, shape):  # noqa: F811
    """The plan in the repository is the engine: deserialized by the (double) runtime, it
    computes what ONNX Runtime computes."""
    from engine.tensorrt.runner import TensorRTRunner

    batch = rng.random(shape, dtype=np.float32)
    with TensorRTRunner(plan.read_bytes()) as runner:
        np.testing.assert_allclose(np.asarray(runner.infer(batch)["prob"]), ort_prob(onnx_path, batch),
                                   atol=1e-5)


def test_scheduling_and_configs_are_checked(tmp_path):
    with pytest.raises(RepositoryError, match="outside 1..4"):
        Scheduling(4, (5,))
    bad = tmp_path / "config.pbtxt"
    bad.write_text("max_batch_size: many\n")
    with pytest.raises(RepositoryError, match="config.pbtxt is not a Triton model config"):
        read_config(bad)


def test_a_dots_only_name_deletes_nothing(tmp_path, capsys):
    """'..' would name the repository's parent, which writing a model replaces."""
    (tmp_path / "repo" / "kept").mkdir(parents=True)
    (tmp_path / "keep").write_text("x")
    assert main(["triton", "export", "--name", "..", "-o", str(tmp_path / "repo")]) == 2
    assert (tmp_path / "keep").is_file() and (tmp_path / "repo" / "kept").is_dir()


def test_a_folder_that_is_not_a_triton_model_is_never_replaced(tiny_onnx, tmp_path, capsys):
    (tmp_path / "repo" / "dbnet").mkdir(parents=True)
    (tmp_path / "repo" / "dbnet" / "important.py").write_text("x")
    assert main(["triton", "export", str(tiny_onnx), "-o", str(tmp_path / "repo")]) == 2
    assert "is not a Triton model folder" in capsys.readouterr().err
    assert (tmp_path / "repo" / "dbnet" / "important.py").is_file()


def test_a_re_export_without_post_processing_removes_the_earlier_ensemble(tiny_onnx, tmp_path):
    repo = tmp_path / "repo"
    assert main(["triton", "export", str(tiny_onnx), "-o", str(repo), "--with-postprocess"]) == 0
    assert (repo / "dbnet_detect" / "config.pbtxt").is_file()
    assert main(["triton", "export", str(tiny_onnx), "-o", str(repo), "--max-batch", "2"]) == 0
    assert (repo / "dbnet" / "config.pbtxt").is_file()
    assert not (repo / "dbnet_detect").exists() and not (repo / "dbnet_postprocess").exists()



@pytest.mark.parametrize("flags, model, stop_at", [
    ([], "dbnet", "dbnet/1/model.onnx"),
    (["--with-postprocess"], "dbnet_postprocess", "dbnet_postprocess/1/dbrt/")])
def test_an_export_stopped_half_way_is_replaced_by_the_next(tiny_onnx, tmp_path, monkeypatch, flags,
                                                            model, stop_at):
    """The config.pbtxt came before the post-processing's sources, and a folder an export
    stopped before its config.pbtxt was refused by every later export ('not a Triton model
    folder')."""
    import shutil

    repo = tmp_path / "repo"
    real_copy = shutil.copyfile

    def stopped(source, target, *args, **kwargs):
        if stop_at in Path(target).as_posix():
            raise KeyboardInterrupt
        return real_copy(source, target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfile", stopped)
        assert main(["triton", "export", str(tiny_onnx), "-o", str(repo)] + flags) == 130
    assert not (repo / model / "config.pbtxt").exists()       # never half a model for a server
    assert main(["triton", "export", str(tiny_onnx), "-o", str(repo)] + flags) == 0
    assert (repo / "dbnet" / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert (repo / model / "config.pbtxt").is_file() and not list(repo.rglob(".dbrt-partial"))
