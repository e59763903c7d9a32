"""Request slots for the Triton client: each request in flight owns one slot, and with shared
memory a slot owns one region per tensor (system: POSIX shared memory, `tritonclient.utils.
shared_memory`; CUDA: IPC device memory, `tritonclient.utils.cuda_shared_memory`), so tensors
cross to a server on the same machine without being serialised into gRPC messages.

Regions grow when a larger tensor comes (re-created and re-registered) and are registered again
after the server restarts (it forgets registrations). System regions are files in /dev/shm
under a lock file a pool holds while they exist, so that a next run removes those a killed run
left (engine.triton.leftovers). The slot queue bounds the requests in flight. The CUDA path
follows tritonclient's documented API and has not run on a GPU here.
"""
from __future__ import annotations

import importlib
import itertools
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ModelError
from ..lazy import require
from .leftovers import OwnerLock
from .messages import first_line

_serial = itertools.count()


@dataclass
class Region:
    name: str       # the name the server knows it by
    key: str        # system shared memory: the POSIX key; CUDA: unused
    size: int
    handle: object


@dataclass
class Slot:
    index: int
    regions: Dict[str, Region] = field(default_factory=dict)  # tensor name -> region


class _NoMemory:
    """Tensors travel inside the gRPC messages."""

    kind = "none"
    files = False  # regions are files in /dev/shm (engine.triton.leftovers)

    def __init__(self, client, timeout: float):
        self.client, self.timeout = client, timeout


class _SystemMemory(_NoMemory):
    kind = "system"
    files = True

    def __init__(self, client, timeout: float):
        super().__init__(client, timeout)
        self.lib = require("tritonclient.utils.shared_memory")

    def create(self, name: str, size: int) -> Region:
        key = f"/{name}"
        handle = self.lib.create_shared_memory_region(name, key, size, create_only=True)
        region = Region(name, key, size, handle)
        try:
            _reserve(key, size)
        except OSError as exc:
            self.destroy(region)
            raise ModelError(f"cannot reserve {size / 2**20:.0f} MB of shared memory for a "
                             f"request ({exc.strerror or exc}): /dev/shm is too small (a Docker "
                             f"container's is 64 MB: --shm-size), or --triton-shm none sends "
                             "the tensors inside the gRPC messages") from None
        return region

    def register(self, region: Region) -> None:
        self.client.register_system_shared_memory(region.name, region.key, region.size,
                                                  client_timeout=self.timeout)

    def unregister(self, region: Region) -> None:
        self.client.unregister_system_shared_memory(region.name, client_timeout=self.timeout)

    def destroy(self, region: Region) -> None:
        self.lib.destroy_shared_memory_region(region.handle)

    def write(self, region: Region, array) -> None:
        view = self.lib.get_contents_as_numpy(region.handle, array.dtype, array.shape)
        view[...] = array  # one copy, straight into the region
        del view  # the region cannot be destroyed while a view exists

    def read(self, region: Region, dtype, shape) -> np.ndarray:
        view = self.lib.get_contents_as_numpy(region.handle, np.dtype(dtype), shape)
        out = np.array(view, copy=True)  # the slot is reused by the next request
        del view
        return out


class _CudaMemory(_SystemMemory):
    """CUDA IPC regions on `device` (the server must run on this machine's GPU)."""

    kind = "cuda"
    files = False

    def __init__(self, client, timeout: float, device: int = 0):
        _NoMemory.__init__(self, client, timeout)
        try:  # raises RuntimeError, not ImportError, without cuda-python
            self.lib = importlib.import_module("tritonclient.utils.cuda_shared_memory")
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"CUDA shared memory needs an NVIDIA GPU and tritonclient's CUDA "
                             f"support (pip install 'tritonclient[cuda]'): "
                             f"{first_line(exc)}") from None
        self.device = device

    def create(self, name: str, size: int) -> Region:
        return Region(name, "", size, self.lib.create_shared_memory_region(name, size, self.device))

    def register(self, region: Region) -> None:
        self.client.register_cuda_shared_memory(region.name, self.lib.get_raw_handle(region.handle),
                                                self.device, region.size,
                                                client_timeout=self.timeout)

    def unregister(self, region: Region) -> None:
        self.client.unregister_cuda_shared_memory(region.name, client_timeout=self.timeout)

    def write(self, region: Region, array) -> None:
        if isinstance(array, np.ndarray):
            self.lib.set_shared_memory_region(region.handle, [np.ascontiguousarray(array)])
        else:  # a CuPy array stays on the GPU (DLPack)
            self.lib.set_shared_memory_region_from_dlpack(region.handle, [array])

    def read(self, region: Region, dtype, shape) -> np.ndarray:
        return self.lib.get_contents_as_numpy(region.handle, np.dtype(dtype), shape)


def _reserve(key: str, size: int) -> None:
    """Allocate a new region's pages now: the region is only sized, and a write beyond what
    the shared memory file system has free would kill the process (SIGBUS), not raise."""
    path = f"/dev/shm{key}"  # where Linux keeps POSIX shared memory
    if not hasattr(os, "posix_fallocate") or not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def memory(kind: str, client, timeout: float):
    """The shared memory backend for a mode: "system", "cuda" or "none"."""
    return {"none": _NoMemory, "system": _SystemMemory, "cuda": _CudaMemory}[kind](client, timeout)


class SlotPool:
    """`count` request slots; `acquire` waits for a free one (at most `timeout` seconds)."""

    def __init__(self, mem, count: int, label: str):
        self.mem = mem
        self.slots = [Slot(i) for i in range(count)]
        self._free: "queue.Queue[Slot]" = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)
        # the pid alone is not unique among the clients of one server: each dbrt in a
        # container of its own is pid 1, and sharing the server's IPC namespace (what shared
        # memory needs) they share /dev/shm and the server's names of regions too
        self._prefix = f"dbrt_{os.getpid()}_{os.urandom(4).hex()}_{next(_serial)}_{label}"[:48]
        self._owner: Optional[OwnerLock] = None  # held while regions exist (a next run's sweep)

    @property
    def shared(self) -> bool:
        return self.mem.kind != "none"

    def acquire(self, timeout: float) -> Slot:
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            raise ModelError(f"no Triton request finished within {timeout:g} s") from None

    def release(self, slot: Slot) -> None:
        self._free.put(slot)

    def region(self, slot: Slot, tensor: str, nbytes: int) -> Region:
        """The slot's region for `tensor`, at least `nbytes` long (grown by half again when
        too small, so a slowly growing size does not re-create it every time)."""
        region = slot.regions.get(tensor)
        if region is not None and region.size >= nbytes:
            return region
        if region is not None:
            self._drop(region)
        size = max(nbytes, int(region.size * 1.5) if region is not None else 0)
        name = f"{self._prefix}_{slot.index}_{len(slot.regions)}_{next(_serial)}"
        self._own()
        region = self.mem.create(name, size)
        try:
            self.mem.register(region)
        except BaseException:
            self.mem.destroy(region)
            raise
        slot.regions[tensor] = region
        return region

    def probe(self) -> None:
        """Register one small region and drop it again: a server that cannot map our memory
        (another machine, no GPU) is found before the first frame, not at every request."""
        if not self.shared:
            return
        self._own()
        region = self.mem.create(f"{self._prefix}_probe_{next(_serial)}", 64)
        try:
            self.mem.register(region)
        except Exception as exc:  # noqa: BLE001
            self._drop(region, unregister=False)  # the server could not map it
            self._disown()
            raise ModelError(f"the server cannot use {self.mem.kind} shared memory from this "
                             f"client ({first_line(exc)}); is it on this machine? --triton-shm none "
                             f"sends the tensors inside the gRPC messages") from None
        self._drop(region)

    def register_again(self) -> None:
        """After a server restart: the regions still exist here, the server forgot them. A
        server that did not restart (requests past their deadline on a slow server) may still
        use a region for a request this client gave up on: it refuses to let go of it, and
        keeps it registered, which is what it is asked for."""
        for region in self._regions():
            try:
                self.mem.unregister(region)
            except Exception:  # noqa: BLE001 - a fresh server does not know it: fine
                pass
            try:
                self.mem.register(region)
            except Exception as exc:  # noqa: BLE001 - tritonclient's own exception type
                if "already in manager" not in first_line(exc):
                    raise

    def close(self, drain_timeout: float, unregister: bool = True,
              limit: Optional[float] = None) -> None:
        """Wait (bounded) for requests in flight, then unregister and free every region. After
        one unregister fails (the server is gone or hung), or with `unregister=False` (a run
        aborted while the server was away), only our side is freed: each call would wait for
        the server's timeout. `limit`: seconds for all the unregistering together (an aborted
        run, which must exit within a service manager's stop timeout), each call included;
        the regions left when it has passed are freed on our side only."""
        for _ in self.slots:
            try:
                self._free.get(timeout=drain_timeout)
            except queue.Empty:
                break
        until = None
        if limit is not None:
            self.mem.timeout = min(self.mem.timeout, limit)  # a hung server's call waits this
            until = time.monotonic() + limit
        all_off = True
        for region in self._regions():
            unregister = unregister and (until is None or time.monotonic() < until)
            unregister, off = self._drop(region, unregister, until)
            all_off = all_off and off
        for slot in self.slots:
            slot.regions.clear()
        if all_off:  # else the lock file stays: the next run unregisters what is left
            self._disown()

    def _own(self) -> None:
        """Lock PREFIX.lock before the first region is made: while it is held, no other run
        takes the regions for those of a run that is gone (engine.triton.leftovers)."""
        if self._owner is None and getattr(self.mem, "files", False):
            self._owner = OwnerLock(self._prefix)

    def _disown(self) -> None:
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def _regions(self) -> List[Region]:
        return [r for slot in self.slots for r in slot.regions.values()]

    def _drop(self, region: Region, unregister: bool = True,
              until: Optional[float] = None) -> Tuple[bool, bool]:
        """Free a region (unregistered first when asked); whether unregistering still works,
        and whether this region is off the server.
        A region a cancelled request still uses on the server is unregistered once it is done
        (Triton refuses while it is in use), waiting at most the control calls' timeout (or
        until `until`, a time.monotonic(), when that comes first)."""
        deadline = time.monotonic() + self.mem.timeout
        deadline = deadline if until is None else min(deadline, until)
        off = False
        while unregister:
            try:
                self.mem.unregister(region)
                off = True
                break
            except Exception as exc:  # noqa: BLE001 - the server may be gone; free our side anyway
                if "in use" not in first_line(exc):
                    unregister = False  # gone or hung: the others would wait the same
                elif time.monotonic() > deadline:
                    break  # the server is up: the other regions can still be let go
                else:
                    time.sleep(0.02)
        self.mem.destroy(region)
        return unregister, off


def nbytes_of(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def resolved_shape(dims, like) -> Optional[tuple]:
    """An output's shape when its dynamic dims (None) can be read off the input's at the same
    positions (a DB probability map: (N, 1, H, W) for an (N, 3, H, W) image); else None."""
    if len(dims) != len(like):
        return None
    return tuple(int(d) if isinstance(d, int) and d >= 0 else int(w) for d, w in zip(dims, like))
