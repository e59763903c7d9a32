"""Bad command lines end with one error line naming the flag and the value, and a non-zero exit,
before any work starts; never a traceback, never silently accepted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder holding a plain file `afile` and a small image `photo.jpg`."""
    import cv2
    import numpy as np

    (tmp_path / "afile").write_text("not a folder")
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((40, 60, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error_line(capsys, argv, code=2) -> str:
    """Run `dbrt argv` in-process; the exit code and a single 'error' line on stderr."""
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert rc == code, captured.err
    assert len(errors) == 1, captured.err
    return errors[0]


RUN = ["run", "clip.mp4", "--quiet"]


@pytest.mark.parametrize("argv, fragment", [
    (RUN + ["-o", "afile"], "-o/--output: 'afile' is a file, not a folder"),
    (RUN + ["-o", "afile/sub"], "-o/--output: cannot create folder 'afile/sub': 'afile' is a file"),
    (RUN + ["--input-size", "0x0"], "--input-size: expected HxW with sides from 32 to 4000"),
    (RUN + ["--input-size", "736x5000"], "got '736x5000'"),
    (RUN + ["--max-side", "0"], "--max-side: must be an integer from 32 to 4000, got '0'"),
    (RUN + ["--limit-side", "100000"], "--limit-side: must be an integer from 32 to 4000"),
    (RUN + ["--device", "bogus"], "--device: invalid choice: 'bogus'"),
    (RUN + ["--decode-threads", "-1"], "--decode-threads: must be an integer >= 0, got '-1'"),
    (RUN + ["--batch-timeout-ms", "-5"], "--batch-timeout-ms: must be a number >= 0, got '-5'"),
    (RUN + ["--batch-timeout-ms", "nan"], "--batch-timeout-ms: must be a number >= 0, got 'nan'"),
    (RUN + ["--batch", "-1"], "--batch: must be an integer >= 0"),
    (RUN + ["--queue-size", "0"], "--queue-size: must be an integer >= 1"),
    (RUN + ["--reconnect-delay", "-1"], "--reconnect-delay: must be a number >= 0"),
    (RUN + ["--threads", "two"], "--threads: must be an integer >= 0, got 'two'"),
])
def test_run_flags(place, capsys, argv, fragment):
    assert fragment in one_error_line(capsys, argv)


def test_usage_errors_exit_2_in_a_subprocess_with_one_line(place):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--max-side", "0"], cwd=place,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "dbrt run: error: argument --max-side: must be an integer from 32 to 4000, got '0' "
        "(see dbrt run --help)"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into a read-only folder")
def test_read_only_output_folder(place, capsys):
    ro = place / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = one_error_line(capsys, RUN + ["-o", "ro/out"])
    finally:
        ro.chmod(0o755)
    assert "cannot create folder 'ro/out': 'ro' is not writable" in line
