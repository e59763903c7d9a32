"""The GPU proof's Triton step on a machine without a GPU Triton: where it looks for the server,
the line it is skipped with, the server command it would run, and the repository it would
serve (built through the TensorRT test double)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import trt  # noqa: F401

from benchmarks import gpu_proof, gpu_triton
from benchmarks.gpu_triton import SystemTriton, find_tritonserver
from engine.triton.server import TritonServer


def fake_install(root: Path, backends=("python", "tensorrt")) -> Path:
    (root / "bin").mkdir(parents=True)
    binary = root / "bin" / "tritonserver"
    binary.write_text("")
    for name in backends:
        (root / "backends" / name).mkdir(parents=True)
    return binary


def test_finds_a_tritonserver_with_the_tensorrt_backend(tmp_path):
    binary = fake_install(tmp_path / "opt")
    assert find_tritonserver(lambda name: None, [tmp_path / "opt"]) == SystemTriton(
        binary, tmp_path / "opt" / "backends")
    on_path = fake_install(tmp_path / "elsewhere")
    assert find_tritonserver(lambda name: str(on_path), []).executable == on_path


def test_a_server_without_the_tensorrt_backend_is_not_used(tmp_path):
    fake_install(tmp_path / "opt", backends=("python",))
    assert find_tritonserver(lambda name: None, [tmp_path / "opt", tmp_path / "absent"]) is None


def test_the_step_is_skipped_with_one_line_where_there_is_no_server(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_triton, "find_tritonserver", lambda: None)
    proof = gpu_proof.Proof(log=lambda line: None)
    proof.step("triton tensorrt", lambda: gpu_triton.triton_step([np.zeros((8, 8, 3), np.uint8)]))
    (step,) = proof.steps
    assert step["status"] == f"skipped: {gpu_triton.NO_SERVER}"
    text = dict(gpu_proof.report_sections(proof.steps))["Triton with the TensorRT backend"]
    assert "no tritonserver with the TensorRT backend on this machine" in text


def test_the_server_command_uses_the_installed_server_and_its_backends(tmp_path):
    binary = fake_install(tmp_path / "opt")
    (tmp_path / "repo" / "dbnet").mkdir(parents=True)
    install = SystemTriton(binary, tmp_path / "opt" / "backends")
    server = TritonServer(tmp_path / "repo", install=install)
    command = server.command(install.backends_dir(tmp_path / "work"))
    assert command[0] == str(binary)
    assert f"--backend-directory={tmp_path / 'opt' / 'backends'}" in command
    assert f"--model-repository={(tmp_path / 'repo').resolve()}" in command


def test_the_step_exports_a_tensorrt_repository(trt, tmp_path):  # noqa: F811
    from pipeline.cli import main

    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from engine.triton.repository import read_config

    repo = tmp_path / "repo"
    assert main(gpu_triton.export_command(repo)) == 0
    config = read_config(repo / "dbnet" / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert (repo / "dbnet" / "1" / "model.plan").is_file()
