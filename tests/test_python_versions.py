"""dbrt runs on the oldest Python that setup.cfg's python_requires admits (3.10: Ubuntu 22.04's,
JetPack 6's), while the suite usually runs on a newer one, where a newer standard-library API
(`datetime.UTC`, `tomllib`, `enum.StrEnum`, `typing.Self`...) or syntax works and would only
fail on the users' interpreter. vermin checks the sources against the oldest version from any
interpreter, without a second one in CI."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("engine", "dbnet", "export", "pipeline", "benchmarks", "tests", "docs", "setup.py")


def oldest_python() -> str:
    """'3.10' from setup.cfg's `python_requires = >=3.10`."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    match = re.fullmatch(r">=\s*(3\.\d+)", config["options"]["python_requires"].strip())
    assert match, "python_requires is expected as >=3.N"
    return match.group(1)


def vermin(*paths) -> subprocess.CompletedProcess:
    """vermin's verdict on `paths` for the oldest Python: exit status 1 and each use of something
    newer (file, line, what, the version it needs) where there is one."""
    pytest.importorskip("vermin")
    script = "import sys; from vermin.main import main; sys.argv[0] = 'vermin'; main()"
    return subprocess.run([sys.executable, "-c", script, f"--target={oldest_python()}-", "--violations",
                           "--no-tips", *map(str, paths)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_vermin_finds_what_the_oldest_python_lacks(tmp_path):
    # the check below passes only if vermin, as called here, does see such uses
    newer = tmp_path / "newer.py"
    newer.write_text("import tomllib\nfrom datetime import UTC\nfrom enum import StrEnum\n")
    verdict = vermin(newer)
    assert verdict.returncode == 1, verdict.stdout + verdict.stderr
    assert all(name in verdict.stdout for name in ("tomllib", "datetime.UTC", "enum.StrEnum"))


@pytest.mark.slow
def test_no_source_needs_a_python_newer_than_python_requires():
    verdict = vermin(*SOURCES)
    assert verdict.returncode == 0, verdict.stdout[-4000:] + verdict.stderr[-2000:]
