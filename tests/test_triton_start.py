"""A Triton server or model not ready when `dbrt run` starts (docker compose and systemd start
both at once; a server loading TensorRT plans takes tens of seconds) is waited for under the
--reconnect policy, with one line when the wait begins and one when it is up; what waiting
cannot heal stays one error line at once; a stop signal ends the wait at once. And a server
host that vanishes without closing the connection (SIGSTOP here: the connection stays open,
nothing answers) fails the requests through gRPC keepalive pings, not after --triton-timeout.
Against a REAL tritonserver on 127.0.0.1 (skipped with a message where .venv-triton is absent)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from engine.errors import DbrtWarning, InferenceFailed, ModelError
from engine.loader import RunnerOptions
from engine.triton.options import TritonOptions
from engine.triton.ports import free_port, free_ports
from engine.triton.server import TritonServer
from pipeline.cli import main
from pipeline.detector import Detector
from pipeline.shipped import DEMO_VIDEO

from serve_helpers import dbrt

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: pip install 'dbrt[triton]'")

SIZE = ["--input-size", "128x224"]  # small network inputs: the server shares the two cores

# a model whose load fails (the server says why), and one whose input is not an image batch
BROKEN = {"config.pbtxt": 'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
                          'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                          'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n',
          "1/model.py": "class TritonPythonModel:\n    def initialize(self, args):\n"
                        "        raise RuntimeError('no such weights')\n"}
NOT_DBNET = {"config.pbtxt": BROKEN["config.pbtxt"].replace("broken", "notdbnet"),
             "1/model.py": "import triton_python_backend_utils as pb\n\n\n"
                           "class TritonPythonModel:\n    def execute(self, requests):\n"
                           "        return [pb.InferenceResponse([pb.Tensor('y', pb.get_input_tensor_"
                           "by_name(r, 'x').as_numpy())]) for r in requests]\n"}


@pytest.fixture(scope="module")
def repository(shipped_triton_repository):
    return shipped_triton_repository


@pytest.fixture(scope="module")
def explicit_server(repository, tmp_path_factory, triton_venv):
    """A server that loads models only when asked (explicit model control): the shipped model
    `dbnet` (not loaded), `broken` and `notdbnet`."""
    repo = tmp_path_factory.mktemp("explicit") / "repo"
    shutil.copytree(repository, repo)
    for name, files in (("broken", BROKEN), ("notdbnet", NOT_DBNET)):
        for path, text in files.items():
            (repo / name / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / name / path).write_text(text)
    server = TritonServer(repo, venv=str(triton_venv),
                          extra_args=["--model-control-mode=explicit"]).start()
    yield server
    server.close()


def _warnings(err: str) -> list:
    return [line for line in err.splitlines() if ": warning: " in line]


def _errors(err: str) -> list:
    return [line for line in err.splitlines() if "error" in line and ": warning: " not in line]


def _run(url, tmp_path, *flags) -> list:
    return ["run", str(DEMO_VIDEO), "--model", url, "--max-frames", "3", "--no-video", "--quiet",
            *SIZE, *flags, "-o", str(tmp_path / "out")]


def _eval(url, tmp_path, *flags) -> list:
    """dbrt eval of one blank image (no text, none in its ground truth) through `url`."""
    data = tmp_path / "ic15"
    if not data.is_dir():
        data.mkdir()
        import cv2

        cv2.imwrite(str(data / "img_1.jpg"), np.full((128, 224, 3), 255, np.uint8))
        (data / "gt_img_1.txt").write_text("")
    return ["eval", "--model", url, "--dataset", str(data), "--quiet", *flags]


@pytest.mark.parametrize("command", [_run, _eval], ids=["run", "eval"])
def test_a_command_started_before_its_server_waits_for_it(repository, triton_venv, tmp_path, capsys,
                                                          command):
    """It ended at once with 'cannot reach the Triton server' and exit 2 (dbrt run, before it
    had --reconnect for the server); dbrt eval had no --reconnect and waited about a minute."""
    ports = dict(zip(("grpc_port", "http_port", "metrics_port"), free_ports(3)))
    server = TritonServer(repository, venv=str(triton_venv), **ports)
    url = f"triton://127.0.0.1:{ports['grpc_port']}/dbnet"
    failed = []

    def start():  # compose / systemd: both start at once, the server answers later
        time.sleep(2.0)
        try:
            server.start()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            failed.append(exc)

    later = threading.Thread(target=start)
    later.start()
    try:
        code = main(command(url, tmp_path, "--reconnect", "20", "--reconnect-delay", "0.2"))
    finally:
        later.join()
        server.close()
    assert not failed, f"the server did not start: {failed}"
    err = capsys.readouterr().err
    assert code == 0, err
    warned = _warnings(err)
    assert len(warned) == 2, warned
    assert f"warning: {url} is not ready (Connection refused): retrying it up to 20 times" in warned[0]
    assert re.search(rf"warning: {re.escape(url)} is up after [\d.]+ s \(\d+ connect attempts\)",
                     warned[1]), warned


def test_eval_with_reconnect_0_fails_at_once_in_one_line(tmp_path, capsys):
    """dbrt eval waited under the default policy (10 attempts, about a minute) whatever it was
    told: it had no --reconnect."""
    url = f"triton://127.0.0.1:{free_port()}/dbnet"
    assert main(_eval(url, tmp_path, "--reconnect", "0")) == 2
    err = capsys.readouterr().err
    assert not _warnings(err), err
    assert err.count("\n") == 1 and "cannot reach the Triton server" in err and url in err, err


def test_eval_reconnect_without_a_triton_model_is_refused(tmp_path, capsys, tiny_onnx):
    for flags in (["--reconnect", "3"], ["--reconnect-delay", "1"]):
        assert main(_eval(str(tiny_onnx), tmp_path, *flags)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flags[0]} applies to a triton://" in err, err


def test_a_model_the_server_loads_later_is_waited_for(explicit_server, tmp_path, capsys):
    """Known to the server, not loaded yet (a controller loads it once the server is up, or the
    server is loading it): it ended at once with 'the model is not ready (not loaded)'."""
    import tritonclient.grpc as grpc

    url = f"triton://{explicit_server.grpc_url}/dbnet"
    client = grpc.InferenceServerClient(explicit_server.grpc_url)
    later = threading.Timer(1.5, client.load_model, ["dbnet"])
    later.start()
    try:
        code = main(_run(url, tmp_path, "--reconnect-delay", "0.2"))
    finally:
        later.join()
        client.unload_model("dbnet")
        client.close()
    err = capsys.readouterr().err
    assert code == 0, err
    warned = _warnings(err)
    assert len(warned) == 2 and "is not ready (model not loaded): retrying it up to 10 times" in warned[0]
    assert f"{url} is up after" in warned[1], warned


def test_what_waiting_cannot_heal_is_one_line_at_once(explicit_server, tmp_path, capsys):
    """With the default --reconnect 10: no wait, no warning. The HTTP port for the gRPC one was
    'cannot reach the Triton server ... (Socket closed)', which says nothing of the port."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(explicit_server.grpc_url)
    with pytest.raises(Exception, match="no such weights"):
        client.load_model("broken")
    client.load_model("notdbnet")
    base = f"triton://{explicit_server.grpc_url}"
    cases = {f"{base}/nope": "has no model 'nope'; it has: broken, dbnet, notdbnet",
             f"triton://127.0.0.1:{explicit_server.http_port}/dbnet": "answers HTTP/1, not gRPC",
             f"triton://127.0.0.1:{explicit_server.metrics_port}/dbnet": "answers HTTP/1, not gRPC",
             "triton://nosuch.invalid:8001/dbnet": "the host name nosuch.invalid does not resolve",
             f"{base}/broken": "the model is not ready (UNAVAILABLE: ",
             f"{base}/notdbnet": "input 'x' has shape (1,); a DB-family detector takes"}
    try:
        for url, said in cases.items():
            assert main(_run(url, tmp_path)) == 2, url
            err = capsys.readouterr().err
            assert not [line for line in _warnings(err) if "retrying" in line], err  # no wait
            assert len(_errors(err)) == 1, err
            assert said in _errors(err)[0], err
    finally:
        client.unload_model("notdbnet")
        client.close()


def test_a_stop_signal_ends_the_wait_at_once(tmp_path):
    """The wait sleeps on the start's stop Event: no forced exit 2 s later. Before, there was
    no wait: the run ended with exit 2 before any signal."""
    out = tmp_path / "out"
    proc = dbrt("run", str(DEMO_VIDEO), "--model", f"triton://127.0.0.1:{free_port()}/dbnet",
                "--reconnect", "-1", "--reconnect-delay", "30", "--quiet", "--no-video", "-o", str(out))
    try:
        first = proc.stderr.readline()
        assert "is not ready (Connection refused): retrying it for ever" in first, first
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.splitlines() == ["dbrt run: stopped (SIGTERM) while starting: loading the model"]
    assert not out.exists()


def test_the_python_api_waits_per_its_options():
    """Detector("triton://...") waits as TritonOptions say (retries=0: not at all); `stop` set
    ends the wait."""
    dead = f"triton://127.0.0.1:{free_port()}/dbnet"
    with pytest.raises(ModelError, match=r"cannot reach the Triton server .*this gRPC port\?$"):
        Detector(dead, options=RunnerOptions(triton=TritonOptions(retries=0)))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    options = RunnerOptions(triton=TritonOptions(retries=None, delay=0.1, stop=stop))
    with pytest.warns(DbrtWarning, match="is not ready .*retrying it for ever"):
        with pytest.raises(ModelError, match="stopped while waiting for the server"):
            Detector(dead, options=options)
    options = RunnerOptions(triton=TritonOptions(retries=2, delay=0))
    with pytest.warns(DbrtWarning, match="retrying it up to 2 times"):
        with pytest.raises(ModelError, match=r"port\? \(gave up after 3 connect attempts in "):
            Detector(dead, options=options)


def test_a_server_that_stops_answering_fails_the_request_before_its_timeout(repository, triton_venv):
    """SIGSTOP: the server's connection stays open, nothing answers (a power or network cut on
    its host). Without keepalive pings the request waited its whole timeout (60 s: 'Deadline
    Exceeded'); with them the connection is dropped ('ping timeout') and the request fails."""
    server = TritonServer(repository, venv=str(triton_venv)).start()
    options = TritonOptions(timeout=60, retries=0, shm="none")
    batch = np.zeros((1, 3, 64, 96), np.float32)
    try:
        with Detector(f"triton://{server.grpc_url}/dbnet",
                      options=RunnerOptions(triton=options)) as detector:
            detector.runner.infer(batch)
            os.killpg(server.process.pid, signal.SIGSTOP)
            began = time.monotonic()
            with pytest.raises(InferenceFailed) as failed:
                detector.runner.infer(batch)
            os.killpg(server.process.pid, signal.SIGCONT)
            assert "Deadline" not in str(failed.value), f"{failed.value} ({time.monotonic() - began:.1f} s)"
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
        server.close()
