"""Writing a file whole or not at all, for every layer above (engine records and caches, the
models, reports and configs dbrt writes)."""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Union


def write_whole(path, data: Union[bytes, str]) -> None:
    """`path` gets `data` (text as UTF-8) whole or not at all: written beside it, on the disk
    (fsync) before it is renamed, so a process killed while writing, or a power cut after the
    rename, leaves the earlier file (or none) or the new one, never half of one, and no litter:
    what a process killed between the write and the rename left is removed by the next write."""
    path = Path(path)
    _remove_stale_partials(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        if isinstance(data, str):
            partial.write_text(data, encoding="utf-8")
        else:
            partial.write_bytes(data)
        _on_disk(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _remove_stale_partials(path: Path) -> None:
    """Remove `path`'s partial files whose writer no longer exists (a report rewritten every
    minute, crash after crash, filled its folder); another live process's is its own."""
    if os.name != "posix":  # os.kill(pid, 0) tells whether it lives on POSIX only
        return
    for partial in path.parent.glob(f"{glob.escape(path.name)}.*.partial"):
        pid = partial.name[len(path.name) + 1:-len(".partial")]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                partial.unlink(missing_ok=True)
            except OSError:  # not ours to remove: the write goes on
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; no pid at all: kept
        pass
    return True


def _on_disk(path: Path) -> None:
    """fsync a file written and closed (Linux flushes its data through any descriptor of it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
