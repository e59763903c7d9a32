"""Writing a file whole or not at all, for every layer above (engine records and caches, the
models, reports and configs dbrt writes)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def write_whole(path, data: Union[bytes, str]) -> None:
    """`path` gets `data` (text as UTF-8) whole or not at all: written beside it, on the disk
    (fsync) before it is renamed, so a process killed while writing, or a power cut after the
    rename, leaves the earlier file (or none) or the new one, never half of one, and no litter."""
    path = Path(path)
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


def _on_disk(path: Path) -> None:
    """fsync a file written and closed (Linux flushes its data through any descriptor of it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
