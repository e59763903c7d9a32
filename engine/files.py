"""Writing a file whole or not at all, for every layer above (engine records and caches, the
models, reports and configs dbrt writes)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def write_whole(path, data: Union[bytes, str]) -> None:
    """`path` gets `data` (text as UTF-8) whole or not at all: written beside it, then renamed,
    so a process killed while writing leaves the earlier file (or none), never half of one, and
    no litter."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        if isinstance(data, str):
            partial.write_text(data, encoding="utf-8")
        else:
            partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
