"""Shared memory that a killed run left on a REAL tritonserver (127.0.0.1, the nvidia-pytriton
wheel's) and in /dev/shm is removed by the next run, and only a dead run's (engine.triton.
leftovers); skipped with a message where .venv-triton is absent."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from engine.loader import RunnerOptions
from engine.triton.options import TritonOptions
from pipeline.cli import main
from pipeline.detector import Detector

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: pip install 'dbrt[triton]'")

SYSTEM = RunnerOptions(triton=TritonOptions(shm="system"))

# a client that detects one frame through system shared memory, says its regions' prefix and
# waits (as pid 1 of a container does: its pid says nothing about whether it is alive)
CLIENT = ("import os, sys, numpy as np; os.getpid = lambda: 1; "
          "from pipeline.detector import Detector; from engine.loader import RunnerOptions; "
          "from engine.triton.options import TritonOptions; "
          "d = Detector(sys.argv[1], input_size=(128, 224), "
          "options=RunnerOptions(triton=TritonOptions(shm='system'))); "
          "d.detect(np.zeros((200, 300, 3), np.uint8)); "
          "print(d.runner._pool._prefix, flush=True); sys.stdin.read()")


@pytest.fixture(scope="module")
def url(tmp_path_factory, triton_venv, triton_server_factory):
    repo = tmp_path_factory.mktemp("triton") / "repo"
    assert main(["triton", "export", "-o", str(repo)]) == 0
    return f"triton://{triton_server_factory(repo).grpc_url}/dbnet"


@pytest.fixture
def server(url):
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url.split("//")[1].split("/")[0])
    yield client
    client.close()


def _registered(client, prefix):
    regions = client.get_system_shared_memory_status(as_json=True).get("regions", {})
    return sorted(name for name in regions if name.startswith(prefix + "_"))


def _files(prefix):
    return sorted(glob.glob(f"/dev/shm/{glob.escape(prefix)}*"))


def _client_with_regions(url):
    """A client process (a session of its own) holding its regions; (process, their prefix)."""
    child = subprocess.Popen([sys.executable, "-c", CLIENT, url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    prefix = child.stdout.readline().strip()
    assert prefix.startswith("dbrt_1_"), child.stderr.read() if not prefix else prefix
    return child, prefix


@pytest.mark.parametrize("killed", ["the process", "its process group"])
def test_the_next_run_removes_what_a_killed_run_left(url, server, killed):
    """SIGKILL (the OOM killer, docker kill) skips the clean-up: the regions stayed registered
    and mapped by the server (30 MB of /dev/shm a kill at the default input size, though
    multiprocessing's resource tracker had removed the files) and, with the tracker killed
    too, in /dev/shm: a service restarted after each kill filled it."""
    child, prefix = _client_with_regions(url)
    assert _registered(server, prefix) and len(_files(prefix)) > 1
    if killed == "the process":
        child.kill()
    else:
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close(), child.stderr.close(), child.stdin.close()
    assert _registered(server, prefix), "the server let go of a killed client's regions itself"
    with Detector(url, input_size=(128, 224), options=SYSTEM) as detector:
        detector.detect(np.zeros((200, 300, 3), np.uint8))
        assert _registered(server, prefix) == []
        assert _files(prefix) == []


def test_a_live_runs_regions_are_left_alone(url, server):
    child, prefix = _client_with_regions(url)
    try:
        held = _registered(server, prefix)
        with Detector(url, input_size=(128, 224), options=SYSTEM) as detector:
            detector.detect(np.zeros((200, 300, 3), np.uint8))
            assert _registered(server, prefix) == held and len(_files(prefix)) == len(held) + 1
    finally:
        child.communicate("", timeout=60)  # the client ends as a script does
    assert child.returncode == 0
    assert _registered(server, prefix) == [] and _files(prefix) == []


def test_without_a_dev_shm_regions_are_made_with_no_lock(tmp_path, monkeypatch):
    """macOS has no /dev/shm (its shm_open keeps none): the lock is skipped, not an error that
    failed every request."""
    from engine.triton import leftovers

    monkeypatch.setattr(leftovers, "SHM_DIR", tmp_path / "none")
    lock = leftovers.OwnerLock("dbrt_1_00000000_0_dbnet")
    lock.release()
    assert leftovers.remove_dead_owners(client=None, timeout=1.0) == []
