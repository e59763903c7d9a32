"""A local server's work folder in the temporary folder (its backends directory with the Python
backend's stub, its log: 2.8 MB with the pip wheel's server), and the removal of those that
killed launchers left.

`TritonServer.close()` removes its folder, but a launcher killed with SIGKILL (the OOM killer,
`docker kill` of a container whose /tmp is a volume, a service manager's stop timeout) skips
that: each restart of a `dbrt triton serve` service left one more `dbrt-triton-*` folder. So
each folder has a lock file beside it (`dbrt-triton-XXXX.lock`), held with flock from before
the server starts until its folder is removed (engine.triton.leftovers.OwnerLock, as the client's
shared memory pools do) and inherited by the server's process, so that it stays held while a
server whose launcher died is still running. The next server started on this machine removes
every folder whose lock nobody holds; a folder made by a launcher killed before its lock was,
or by an older dbrt, has no lock file and is left alone.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Tuple

from .leftovers import LOCK_SUFFIX, OwnerLock, dead_owners

PREFIX = "dbrt-triton-"


def make_workdir() -> Tuple[Path, OwnerLock]:
    """A new work folder and its held lock; remove_workdir() ends both."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    return folder, OwnerLock(folder.name, folder.parent)


def remove_workdir(folder: Path, lock: OwnerLock) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    lock.release()


def remove_dead_workdirs() -> List[Path]:
    """Remove the work folders whose launcher and server are gone; those removed. A folder
    that cannot be removed whole keeps its lock file for a later start."""
    temp = Path(tempfile.gettempdir())
    removed = []
    for name, lock, fd in dead_owners(temp, f"{PREFIX}*{LOCK_SUFFIX}"):
        try:
            folder = temp / name
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                lock.unlink(missing_ok=True)
                removed.append(folder)
        finally:
            os.close(fd)
    return removed
