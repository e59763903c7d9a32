"""System shared memory that runs which did not end cleanly left behind, removed by the next run.

A run killed (SIGKILL: the OOM killer, `docker kill`, a service manager's stop timeout) or
ended by a forced exit (os._exit) skips its clean-up: its regions stay registered on the
server, which keeps them mapped (the memory stays used even once their files are gone, and
`df /dev/shm` counts it with no file to show for it), and unless multiprocessing's resource
tracker outlived it their files stay in /dev/shm too. A 24/7 service restarted after each such
end fills /dev/shm (a Docker container's is 64 MB) until no region can be made.

So each request pool holds a lock file, /dev/shm/PREFIX.lock (flock, which the kernel lets go
of however the process ends), while its regions PREFIX_* exist. A run whose server maps its
shared memory (the probe at start) takes every such lock nobody holds: its owner is gone, so
it unregisters the owner's regions from the server and removes their files and the lock file.
The pid in a name cannot tell this: a run in a container of its own is pid 1, another
container's pid means nothing here, and a pid is reused. The same locks, in the temporary
folder, mark the work folders of local servers (engine/triton/workdirs.py).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # not POSIX: no /dev/shm either
    fcntl = None

SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared memory
LOCK_SUFFIX = ".lock"
OWNERS = "dbrt_*" + LOCK_SUFFIX


def _usable(directory: Optional[Path] = None) -> bool:
    # not so for /dev/shm on macOS, whose shm_open has none
    return fcntl is not None and (SHM_DIR if directory is None else directory).is_dir()


class OwnerLock:
    """Held from before a pool's first region is made until its regions are freed; none where
    there is no /dev/shm, or no file can be made there (the regions fail there if they must).
    `directory`: where the lock file is made instead of /dev/shm (a local server's work folder
    is `prefix` there)."""

    def __init__(self, prefix: str, directory: Optional[Path] = None):
        directory = SHM_DIR if directory is None else Path(directory)
        self.path = directory / f"{prefix}{LOCK_SUFFIX}"
        self._fd: Optional[int] = None
        if not _usable(directory):
            return
        # locked under another name first: a run sweeping meanwhile never finds it unlocked
        making = self.path.with_name(self.path.name + ".new")
        try:
            self._fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.rename(making, self.path)
        except OSError:  # no locks there: this pool's regions are not a later run's to remove
            os.close(self._fd)
            self._fd = None
            making.unlink(missing_ok=True)

    @property
    def fd(self) -> Optional[int]:
        """The locked descriptor (None: no lock), for a child process to inherit: the lock is
        held until the last process holding it ends."""
        return self._fd

    def release(self) -> None:
        """The pool's regions are freed: nothing is left to remove."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def remove_dead_owners(client, timeout: float) -> List[str]:
    """Unregister from the server (`client`: tritonclient.grpc, each call within `timeout` s)
    and remove from /dev/shm the regions of pools whose lock nobody holds; their prefixes. A
    region the server cannot let go of yet keeps its owner's lock file for a later run."""
    removed, registered = [], None
    for prefix, lock, fd in dead_owners(SHM_DIR, OWNERS):
        try:
            if registered is None:  # asked once, and only when a run did leave regions
                registered = _registered(client, timeout)
            off_the_server = _unregister(client, timeout, prefix, registered)
            for region in SHM_DIR.glob(f"{glob.escape(prefix)}_*"):
                region.unlink(missing_ok=True)
            if off_the_server:
                lock.unlink(missing_ok=True)
            removed.append(prefix)
        finally:
            os.close(fd)
    return removed


def dead_owners(directory: Path, pattern: str) -> Iterator[Tuple[str, Path, int]]:
    """(prefix, lock file, its descriptor, now locked here: the caller closes it) of each lock
    file `pattern` in `directory` whose owner is gone (none where locks cannot be had)."""
    if not _usable(directory):
        return
    for path in directory.glob(pattern):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or another user's
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its run is alive (or another run is removing its leftovers)
            os.close(fd)
            continue
        yield path.name[:-len(LOCK_SUFFIX)], path, fd


def _registered(client, timeout: float) -> Dict[str, dict]:
    status = client.get_system_shared_memory_status(as_json=True, client_timeout=timeout)
    return dict(status.get("regions", {}))


def _unregister(client, timeout: float, prefix: str, registered: Dict[str, dict]) -> bool:
    """Whether all of `prefix`'s regions are off the server now."""
    done = True
    for name in [n for n in registered if n.startswith(prefix + "_")]:
        try:
            client.unregister_system_shared_memory(name, client_timeout=timeout)
        except Exception:  # noqa: BLE001 - still in use by a request of the dead run: later
            done = False
    return done
