"""A real Triton Inference Server for the tests: the nvidia-pytriton wheel's tritonserver
(Python backend) from .venv-triton (`make triton-venv`; DBRT_TRITON_VENV names another), started
on 127.0.0.1 with free ports and always stopped. Tests skip with a message where it is absent.

    def test_x(triton_server_factory, tmp_path):
        server = triton_server_factory(repository)      # started and ready; stopped at session end
        tritonclient.grpc.InferenceServerClient(server.grpc_url)

    def test_y(triton_server):      # the tiny DBNet as models dbnet, dbnet_postprocess, dbnet_detect
        url = f"triton://{triton_server.grpc_url}/dbnet"
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.triton.repository import Scheduling
from engine.triton.server import TritonInstall, TritonServer, TritonServerError

REPO = Path(__file__).resolve().parents[1]
TRITON_VENV = Path(os.environ.get("DBRT_TRITON_VENV", REPO / ".venv-triton"))


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """The virtual environment with tritonserver; skips (with why) where it cannot be used."""
    try:
        TritonInstall.find(str(TRITON_VENV))
    except TritonServerError as exc:
        pytest.skip(f"no Triton Inference Server to test against: {exc}")
    return TRITON_VENV


@pytest.fixture(scope="session")
def triton_server_factory(triton_venv):
    """start(repository, **TritonServer options) -> a ready TritonServer on 127.0.0.1 (free
    ports); every server started is stopped at the end of the session (or by `server.close()`)."""
    servers = []

    def start(repository, **options) -> TritonServer:
        server = TritonServer(repository, venv=str(triton_venv), **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


def export_triton_repository(onnx_path, repository, spec=None, **export) -> Path:
    """`dbrt triton export` of `onnx_path` into `repository` (TritonExport fields as keywords;
    `spec`: a ModelSpec instead of the model's own)."""
    from dbnet.spec import resolve_spec
    from engine.onnx_info import summarize_onnx
    from pipeline.triton.repository import TritonExport, export_repository

    summary = summarize_onnx(onnx_path)
    export_repository(repository, summary, spec or resolve_spec(summary.metadata), TritonExport(**export))
    return Path(repository)


@pytest.fixture(scope="session")
def shipped_triton_repository(tmp_path_factory, triton_venv) -> Path:
    """`dbrt triton export`'s repository of the shipped model (`dbnet`), as a user makes it."""
    from pipeline.cli import main

    repo = tmp_path_factory.mktemp("triton-shipped") / "repo"
    assert main(["triton", "export", "-o", str(repo)]) == 0
    return repo


@pytest.fixture(scope="session")
def triton_repository(tiny_onnx, tmp_path_factory) -> Path:
    """A repository with the tiny random DBNet (conftest.tiny_onnx, 64x96-friendly): `dbnet`
    (ONNX Runtime in the Python backend, max batch 8, preferred 4, 20 ms queue delay, one CPU
    instance, ModelSpec JSON in config parameter "dbrt"), `dbnet_postprocess` and the ensemble
    `dbnet_detect` (images + frame_size -> detections JSON)."""
    return export_triton_repository(
        tiny_onnx, tmp_path_factory.mktemp("triton") / "repo", name="dbnet",
        scheduling=Scheduling(8, (4,), 20_000, 1), threads=1, with_postprocess=True)


@pytest.fixture(scope="session")
def triton_server(triton_server_factory, triton_repository) -> TritonServer:
    """A running server on `triton_repository` (127.0.0.1, free ports; .grpc_url "127.0.0.1:PORT",
    .http_url, .metrics_url), shared by the session and stopped at its end."""
    return triton_server_factory(triton_repository)
