"""The Triton server launcher (engine.triton.server) and `dbrt triton serve` against the real
tritonserver of the nvidia-pytriton wheel (skipped where .venv-triton cannot be built)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
import urllib.request

import numpy as np
import pytest

from engine.triton.ports import free_port, free_ports
from engine.triton.server import TritonServer, TritonServerError
from pipeline.cli import main

from media import until

DOUBLER = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() * 2)]) for r in requests]
'''
DOUBLER_CONFIG = '''backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
'''


def python_model_repository(root, name="double", code=DOUBLER, config=DOUBLER_CONFIG):
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.py").write_text(code)
    (root / name / "config.pbtxt").write_text(config)
    return root


def test_a_python_model_answers_and_the_server_stops(triton_venv, tmp_path):
    grpc = pytest.importorskip("tritonclient.grpc")
    server = TritonServer(python_model_repository(tmp_path), venv=str(triton_venv))
    with server:
        assert server.host == "127.0.0.1"
        assert until(server.is_ready, "the server to answer its readiness probe", 60)
        client = grpc.InferenceServerClient(server.grpc_url)
        x = grpc.InferInput("x", [1, 3], "FP32")
        x.set_data_from_numpy(np.array([[1, 2, 3]], np.float32))
        assert client.infer("double", [x]).as_numpy("y").tolist() == [[2, 4, 6]]
        with urllib.request.urlopen(server.metrics_url) as resp:
            assert b"nv_inference_count" in resp.read()
    assert server.process.returncode is not None and not server.is_ready()


def no_process_left(group: int, patience: float = 10.0) -> bool:
    """True once no process of `group` exists (killed stubs are zombies until init reaps them)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("end", ["close", "kill"])
def test_nothing_of_the_server_outlives_it(triton_venv, tmp_path, end):
    """Neither a stop nor a crash (kill: SIGKILL, as a client's reconnect test does) leaves the
    server's Python-backend stubs behind."""
    server = TritonServer(python_model_repository(tmp_path), venv=str(triton_venv)).start()
    group = server.process.pid
    regions = sorted(Path("/dev/shm").glob(f"{server._shm_prefix}*"))
    assert regions  # the Python backend's shared memory carries our name
    getattr(server, end)()
    server.close()
    assert no_process_left(group)
    assert not any(region.exists() for region in regions)  # a killed server cannot remove them


def test_a_server_started_from_a_worker_thread_outlives_the_thread(triton_venv, tmp_path):
    """The parent-death signal follows the thread that forked, so a server started from a thread
    that then ends (a restart thread, a web handler) must keep running until it is closed."""
    started = []
    worker = threading.Thread(target=lambda: started.append(
        TritonServer(python_model_repository(tmp_path), venv=str(triton_venv)).start()))
    worker.start()
    worker.join()
    server = started[0]
    try:
        # the parent-death signal is sent as the forking thread exits, which can be after
        # join() returns: wait until the kernel has removed the thread
        until(lambda: not Path(f"/proc/self/task/{worker.native_id}").exists(),
              "the worker thread to be gone")
        # no direct way to read another process's parent-death setting: give a SIGTERM time
        # to take effect (what this sleep shows is an absence; it cannot make the test fail
        # wrongly, only miss a regression on a very slow machine)
        time.sleep(1.0)
        assert server.process.poll() is None
        assert until(server.is_ready, "the server to answer its readiness probe", 60)
        assert server.process.poll() is None
    finally:
        server.close()


def test_a_broken_config_is_one_clear_error(triton_venv, tmp_path):
    python_model_repository(tmp_path, config="backend: \"python\"\nmax_batch_size: foo\n")
    with pytest.raises(TritonServerError, match="Expected integer, got: foo"):
        TritonServer(tmp_path, venv=str(triton_venv)).start()


def test_a_model_that_fails_to_load_names_its_error(triton_venv, tmp_path):
    python_model_repository(tmp_path, code="import no_such_module_here\n")
    with pytest.raises(TritonServerError, match="no_such_module_here"):
        TritonServer(tmp_path, venv=str(triton_venv)).start()


def test_missing_venv_or_repository_is_one_line(tmp_path, capsys):
    assert main(["triton", "serve", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dbrt triton: error: model repository {tmp_path / 'nope'} is not a folder")
    assert main(["triton", "serve", str(tmp_path)]) == 2
    assert "holds no model folders" in capsys.readouterr().err
    (tmp_path / "model").mkdir()
    assert main(["triton", "serve", str(tmp_path), "--venv", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no virtual environment with Triton" in err and "make triton-venv" in err


def test_serve_run_from_another_folder_finds_the_checkouts_venv(tmp_path, monkeypatch, capsys):
    """make triton-venv makes .venv-triton in the checkout; dbrt triton serve run from
    another folder said there was none there."""
    import engine.triton.server as server

    checkout = tmp_path / "checkout"
    python = checkout / ".venv-triton" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\nprintf '3.11\\n{tmp_path}\\n{tmp_path}\\n'\n")
    python.chmod(0o755)
    monkeypatch.setattr(server, "CHECKOUT", checkout, raising=False)
    (tmp_path / "repo" / "model").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["triton", "serve", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err  # that environment, found, lacks the server
    assert f"{checkout / '.venv-triton'} has no tritonserver for Python 3.11" in err, err


def test_serving_a_model_the_repository_lacks_is_one_line(triton_venv, tmp_path, capsys):
    python_model_repository(tmp_path)
    assert main(["triton", "serve", str(tmp_path), "--venv", str(triton_venv), "--model", "nosuch",
                 "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed to poll model 'nosuch': model not found" in err, err


def test_a_busy_port_is_one_line(triton_venv, tmp_path, capsys):
    python_model_repository(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["triton", "serve", str(tmp_path), "--venv", str(triton_venv),
                     "--grpc-port", str(port), "--http-port", "0", "--metrics-port", "0"]) == 2
    assert capsys.readouterr().err == (f"dbrt triton: error: the gRPC port 127.0.0.1:{port} cannot "
                                       "be used (Address already in use)\n")


def test_dbrt_triton_serve_until_sigterm(triton_venv, tmp_path):
    python_model_repository(tmp_path)
    http = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "triton", "serve", str(tmp_path), "--venv", str(triton_venv),
         "--http-port", str(http), "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("tritonserver ready: gRPC 127.0.0.1:"), line + proc.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/double/ready") as resp:
            assert resp.status == 200
        proc.terminate()
        assert proc.wait(60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/live", timeout=2)


def test_a_server_killed_from_outside_is_named_as_such(triton_venv, tmp_path):
    """`kill -9` of the tritonserver process ends `dbrt triton serve` with one line saying so
    (it quoted the last line of the server's log, a harmless pinned-memory warning)."""
    import signal

    python_model_repository(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "triton", "serve", str(tmp_path), "--venv", str(triton_venv),
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("tritonserver ready: gRPC 127.0.0.1:"), line + proc.stderr.read()
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        (server,) = [int(pid) for pid in children.stdout.split()]
        os.kill(server, signal.SIGKILL)
        assert proc.wait(60) == 2
        err = proc.stderr.read()
        assert err.count("\n") == 1 and "tritonserver was killed by SIGKILL" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_free_ports_are_distinct():
    ports = free_ports(3)
    assert len(set(ports)) == 3


@pytest.mark.parametrize("taken", ["http_port", "grpc_port", "metrics_port"])
def test_a_port_taken_after_the_pick_is_picked_again(triton_venv, tmp_path, taken):
    """Another program may listen on a port of ours between the pick and the start; the server
    would not start (HTTP, gRPC) or run without metrics."""
    server = TritonServer(python_model_repository(tmp_path), venv=str(triton_venv))
    first = getattr(server, taken)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        with server:
            assert getattr(server, taken) != first
            assert server.is_ready()
            with urllib.request.urlopen(server.metrics_url) as resp:
                assert b"nv_inference_count" in resp.read()


def test_a_port_given_twice_is_refused_before_the_start(triton_venv, tmp_path):
    port = free_port()
    with pytest.raises(TritonServerError, match=f"ports must differ \\(given: {port}, {port}, 0"):
        TritonServer(python_model_repository(tmp_path), venv=str(triton_venv),
                     http_port=port, grpc_port=port)


def test_a_refusal_without_an_error_line_shows_the_last_line(triton_venv, tmp_path):
    """tritonserver states some refusals as plain text after its usage page."""
    log = tmp_path / "server.log"
    log.write_text("Usage: tritonserver [options]\n  --http-port <integer>\n\n"
                   "The server cannot listen to HTTP requests and GRPC requests at the same "
                   "address and port 0.0.0.0:8000\n\n")
    server = TritonServer(python_model_repository(tmp_path / "repo"), venv=str(triton_venv), log=log)
    assert server.log_tail() == ("The server cannot listen to HTTP requests and GRPC requests "
                                 "at the same address and port 0.0.0.0:8000")


def test_launchers_with_one_pid_in_containers_of_their_own_name_their_regions_apart(tmp_path, monkeypatch):
    """The Python backend's regions were named by the launcher's pid: two launchers that are
    pid 1 in containers sharing /dev/shm gave their servers one prefix, and stop() removed the
    other server's regions as if they were left by a killed server of its own."""
    import itertools

    from engine.triton import server as launcher

    python_model_repository(tmp_path)
    monkeypatch.setattr(os, "getpid", lambda: 1)
    prefixes = []
    for _container in range(2):
        monkeypatch.setattr(launcher, "_SERVERS", itertools.count())  # a process of its own
        prefixes.append(TritonServer(tmp_path, install=object())._shm_prefix)
    assert prefixes[0] != prefixes[1], prefixes
