"""Exported repositories on a real Triton Inference Server (the nvidia-pytriton wheel's
tritonserver, Python backend, CPU; skipped where .venv-triton cannot be built): the network's
outputs equal local ONNX Runtime, concurrent clients are batched, the ensemble returns the local
pipeline's boxes, and a broken repository is one line from `dbrt triton serve`."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from triton_fixtures import export_triton_repository

from engine.onnxruntime.runner import OnnxRuntimeRunner
from engine.triton.repository import Scheduling
from pipeline.cli import main
from pipeline.detections import Detections
from pipeline.detector import Detector
from pipeline.shipped import DEMO_VIDEO, default_model_path

grpc = pytest.importorskip("tritonclient.grpc")


def infer_input(name, array, datatype="FP32"):
    tensor = grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def local_prob(onnx_path, batch):
    with OnnxRuntimeRunner(onnx_path, device="cpu") as runner:
        return runner.infer(batch)["prob"]


def test_outputs_equal_local_onnxruntime(triton_server, tiny_onnx, rng):
    client = grpc.InferenceServerClient(triton_server.grpc_url)
    for shape in [(1, 3, 64, 96), (3, 3, 96, 64)]:
        batch = rng.random(shape, dtype=np.float32)
        served = client.infer("dbnet", [infer_input("images", batch)]).as_numpy("prob")
        assert served.shape == (shape[0], 1) + shape[2:]
        assert np.abs(served - local_prob(tiny_onnx, batch)).max() == 0.0


def test_the_model_spec_comes_back_from_the_server(triton_server, tiny_onnx):
    from dbnet.spec import ModelSpec
    from engine.onnx_info import summarize_onnx

    config = grpc.InferenceServerClient(triton_server.grpc_url).get_model_config("dbnet").config
    served = ModelSpec.from_metadata({k: v.string_value for k, v in config.parameters.items()})
    assert served == ModelSpec.from_metadata(summarize_onnx(tiny_onnx).metadata)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_an_int8_model_on_a_saturating_server_cpu_is_logged(triton_server_factory, tiny_onnx,
                                                            tmp_path, precision):
    """The server checks its own CPU (where ONNX Runtime's kernels run), as the local Detector
    does: an INT8 model there gets the warning in the server's log, others nothing."""
    from dbnet.spec import resolve_spec
    from engine.onnx_info import summarize_onnx
    from engine.onnxruntime.int8_cpu import int8_kernels_saturate

    spec = resolve_spec(summarize_onnx(tiny_onnx).metadata).replace(precision=precision)
    repo = export_triton_repository(tiny_onnx, tmp_path / "repo", spec=spec, name="dbnet")
    server = triton_server_factory(repo)
    warned = "'dbnet': INT8 model on the CPU: this CPU has no VNNI" in server.log_text()
    assert warned == (precision == "int8" and int8_kernels_saturate())
    server.close()


def test_concurrent_clients_are_batched(triton_server_factory, tiny_onnx, tmp_path, rng):
    """Four clients send one image each at once: the dynamic batcher (preferred batch 4, up to
    1 s of queueing) runs them in fewer model executions than requests, each answer its own."""
    repo = export_triton_repository(tiny_onnx, tmp_path / "repo", name="dbnet",
                                    scheduling=Scheduling(8, (4,), 1_000_000, 1), threads=1)
    server = triton_server_factory(repo)
    images = [rng.random((1, 3, 64, 96), dtype=np.float32) for _ in range(4)]
    answers, errors = [None] * 4, []
    start = threading.Barrier(4)

    def ask(i):
        try:
            client = grpc.InferenceServerClient(server.grpc_url)
            start.wait()
            answers[i] = client.infer("dbnet", [infer_input("images", images[i])]).as_numpy("prob")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for image, answer in zip(images, answers):
        np.testing.assert_allclose(answer, local_prob(tiny_onnx, image), rtol=0, atol=1e-6)
    stats = grpc.InferenceServerClient(server.grpc_url).get_inference_statistics("dbnet").model_stats[0]
    assert stats.inference_count == 4 and stats.execution_count < stats.inference_count
    server.close()


def demo_frame(index=150, height=180):
    """A frame of the demo video with text in it, at a small size (CPU time)."""
    capture = cv2.VideoCapture(str(DEMO_VIDEO))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return cv2.resize(frame, (height * frame.shape[1] // frame.shape[0], height))


def test_ensemble_returns_the_local_pipeline_boxes(triton_server_factory, tmp_path):
    """The shipped model's repository with post-processing (short side 256, letterboxed): the
    ensemble's polygons and scores for two demo frames of different sizes, batched onto one
    input size, are the local Detector's, in each frame's own pixels."""
    from dbnet.spec import resolve_spec
    from engine.onnx_info import summarize_onnx

    model = default_model_path()
    spec = resolve_spec(summarize_onnx(model).metadata).replace(limit_side=256, keep_aspect=True)
    repo = export_triton_repository(model, tmp_path / "repo", spec=spec, name="dbnet",
                                    scheduling=Scheduling(4, (2,), 1000, 1), with_postprocess=True)
    server = triton_server_factory(repo)
    frames = [demo_frame(150, height=180), demo_frame(40, height=200)]
    with Detector(model, spec) as detector:
        batch, letterboxes = detector.prepare(frames)
        local = detector.postprocess(detector.infer(batch), letterboxes)
    sizes = np.array([f.shape[:2] for f in frames], np.int32)
    client = grpc.InferenceServerClient(server.grpc_url)
    result = client.infer("dbnet_detect", [infer_input("images", batch),
                                           infer_input("frame_size", sizes, "INT32")])
    served = [Detections.from_records(json.loads(row[0])) for row in result.as_numpy("detections")]
    assert len(served) == 2 and len(local[0]) >= 3, "the demo frames should show text"
    for mine, theirs in zip(local, served):
        assert mine.to_records(6) == theirs.to_records(6)
    server.close()


def test_a_broken_repository_is_one_line_from_serve(triton_venv, tiny_onnx, tmp_path, capsys):
    repo = export_triton_repository(tiny_onnx, tmp_path / "repo", name="dbnet")
    (repo / "dbnet" / "1" / "model.onnx").write_bytes(b"not a model")
    assert main(["triton", "serve", str(repo), "--venv", str(triton_venv), "--http-port", "0",
                 "--grpc-port", "0", "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dbrt triton: error: tritonserver exited"), err
    assert "model.onnx" in err, err
