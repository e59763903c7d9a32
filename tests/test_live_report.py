"""report.json while a run goes on: `dbrt run` rewrites it every --report-every seconds (and at
each new segment), atomically and marked "running": true, so that a service killed outright
(SIGKILL, an out-of-memory kill) leaves a complete, recent report; the final one replaces it.
Real `dbrt run` processes on a loopback MPEG-TS stream."""
from __future__ import annotations

import json

import pytest

from pipeline.metrics import write_report


def test_write_report_replaces_the_file_whole_or_not_at_all(tmp_path):
    """A report that fails half-way (here an object JSON cannot hold, as a full disk would)
    left the earlier report cut short; now it stays as it was, and no temporary file stays."""
    path = tmp_path / "report.json"
    write_report(dict(frames=1, running=True), path)
    with pytest.raises(TypeError):
        write_report(dict(frames=2, sources=[{"fps": 25.0}, object()]), path)
    assert json.loads(path.read_text()) == dict(frames=1, running=True)
    write_report(dict(frames=3, running=False), path)
    assert json.loads(path.read_text()) == dict(frames=3, running=False)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_report_is_on_the_disk_before_it_replaces_the_earlier_one(tmp_path, monkeypatch):
    """A power cut right after the rename leaves the new report whole, not an empty file."""
    import os

    from engine import files

    steps = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: steps.append("fsync") or fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: steps.append("replace") or replace(a, b))
    write_report(dict(frames=1), tmp_path / "report.json")
    assert steps == ["fsync", "replace"]
