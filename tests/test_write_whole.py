"""engine.files.write_whole: a process killed between writing `NAME.<pid>.partial` and its
rename left that file for ever (report.json is rewritten every minute of a run, so crash
after crash filled its folder). A later write of the same file removes those of processes
that no longer exist, never a live process's."""
from __future__ import annotations

import os
import subprocess
import sys

from engine.files import write_whole


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process (until it is reused, which keeps its file)
    return child.pid


def test_a_dead_writers_partial_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "report.json"
    stale = tmp_path / f"report.json.{_dead_pid()}.partial"
    stale.write_text('{"half": ')
    write_whole(target, '{"whole": true}')
    assert target.read_text() == '{"whole": true}'
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_a_live_writers_partial_and_other_files_are_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = [f"report.json.{os.getppid()}.partial", f"report.json.{child.pid}.partial",
                "report.json.old.partial", "report.json.1.2.partial",  # not a pid: not ours
                f"other.json.{_dead_pid()}.partial"]  # another file's
        for name in kept:
            (tmp_path / name).write_text("being written")
        write_whole(tmp_path / "report.json", "{}")
        assert sorted(os.listdir(tmp_path)) == sorted(kept + ["report.json"])
    finally:
        child.kill()
        child.wait()
