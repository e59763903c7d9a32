"""A real Triton Inference Server for the tests: the nvidia-pytriton wheel's tritonserver
(Python backend) from .venv-triton (`make triton-venv`; DBRT_TRITON_VENV names another), started
on 127.0.0.1 with free ports and always stopped. Tests skip with a message where it is absent.

    def test_x(triton_server_factory, tmp_path):
        server = triton_server_factory(repository)      # started and ready; stopped at session end
        tritonclient.grpc.InferenceServerClient(server.grpc_url)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
