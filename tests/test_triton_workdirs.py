"""The work folder of a `dbrt triton serve` killed with SIGKILL (the OOM killer, `docker kill`)
is removed by the next server started on the machine, and only a dead server's
(engine/triton/workdirs.py): against the REAL tritonserver of the nvidia-pytriton wheel
(skipped where .venv-triton is absent), and the lock rules without a server."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.triton import workdirs

from media import until
from test_triton_server import python_model_repository


def _serve(repo: Path, venv: Path, temp: Path) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(temp))  # this test's folders only
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "triton", "serve", str(repo), "--venv", str(venv),
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _ready_workdir(proc: subprocess.Popen) -> Path:
    """The server's work folder, which holds the log the ready line names."""
    line = proc.stdout.readline()
    assert line.startswith("tritonserver ready: gRPC 127.0.0.1:"), line + proc.stderr.read()
    return Path(line.split("; log ")[1].split(" (Ctrl-C")[0]).parent


def _running_in(folder: Path) -> list:
    """The pids of processes whose command line names `folder` (its tritonserver)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # ended meanwhile
            pass
    return found


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=60)


def test_the_next_serve_removes_the_folder_a_killed_one_left(triton_venv, tmp_path):
    """Each SIGKILLed `dbrt triton serve` left its dbrt-triton-* folder (the Python backend's
    copy and the log, 2.8 MB here) in /tmp for good."""
    repo = python_model_repository(tmp_path / "repo")
    temp = tmp_path / "tmp"
    temp.mkdir()
    first = _serve(repo, triton_venv, temp)
    try:
        killed = _ready_workdir(first)
        assert killed.parent == temp and (killed / "backends").is_dir()
        first.kill()  # SIGKILL: no clean-up; its server gets SIGTERM (parent-death signal)
        first.wait(60)
        until(lambda: not _running_in(killed), "the killed launcher's tritonserver to end", 60)
        assert killed.is_dir()  # left behind
    finally:
        _stop(first)
    second = _serve(repo, triton_venv, temp)
    try:
        live = _ready_workdir(second)
        assert not killed.exists() and live.is_dir()
        assert sorted(p.name for p in temp.iterdir()) == [live.name, live.name + ".lock"]
        second.terminate()
        assert second.wait(60) == 143
    finally:
        _stop(second)
    assert list(temp.iterdir()) == []  # a clean stop leaves nothing


def test_only_folders_whose_launcher_and_server_are_gone_are_removed(tmp_path, monkeypatch):
    """A live launcher's folder stays, as does one whose launcher died while its server (which
    inherits the lock) still runs; a folder without a lock file (an older dbrt's) is not ours
    to judge."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live, live_lock = workdirs.make_workdir()
    orphan, orphan_lock = workdirs.make_workdir()
    unlocked = tmp_path / f"{workdirs.PREFIX}older"
    unlocked.mkdir()
    server = subprocess.Popen(["sleep", "600"], pass_fds=(orphan_lock.fd,))
    try:
        os.close(orphan_lock.fd)  # its launcher is gone, its server is not
        assert workdirs.remove_dead_workdirs() == []
        assert live.is_dir() and orphan.is_dir() and unlocked.is_dir()
    finally:
        server.kill()
        server.wait()
    assert workdirs.remove_dead_workdirs() == [orphan]
    assert not orphan.exists() and not orphan_lock.path.exists()
    assert live.is_dir() and live_lock.path.exists() and unlocked.is_dir()
    workdirs.remove_workdir(live, live_lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == [unlocked.name]
