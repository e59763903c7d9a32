"""Triton Inference Server backend: the model runs on a server, reached over gRPC.

    with TritonRunner("triton://127.0.0.1:8001/dbnet") as runner:
        prob = runner.infer(batch)["prob"]            # or runner.submit(batch).result()

- the model's inputs, outputs, max batch size and config `parameters` (the runner's `metadata`)
  come from the server; shapes the model cannot take are refused before anything is sent;
- `submit` sends a request and returns at once (gRPC async inference), at most
  `options.inflight` requests in flight, so a pipeline prepares the next batch meanwhile;
- tensors go through shared memory when the server is on this machine (engine.triton.shm);
- every call has a timeout; a request that fails (server gone, deadline) raises
  `InferenceFailed` from its result (the frames are lost, the run goes on) and the next
  `submit` waits with back-off until the server and model are ready again, giving up with one
  ModelError line after `options.retries` attempts; a server or model not ready yet when the
  runner is activated is waited for under the same policy (engine.triton.startup).
"""
from __future__ import annotations

import threading
import warnings
import weakref
from concurrent.futures import Future
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ..base import Runner, TensorInfo, fixed_batch
from ..errors import DbrtWarning, InferenceFailed, ModelError, ShapeError
from ..lazy import require
from .channel import open_client
from .leftovers import remove_dead_owners
from .messages import first_line
from .model_info import ModelInfo, read_model_info
from .options import TritonOptions, TritonUrl
from .outage import ServerOutage
from .shm import SlotPool, memory, nbytes_of, resolved_shape
from .startup import connect_when_ready

# an aborted run lets go of its regions on the server for at most this long: its requests were
# cancelled, so the server may be hung (each call would wait the control calls' timeout) or
# still busy with them (it refuses to unregister a region in use), and the run must exit
# within a service manager's stop timeout (docker stop: 10 s, after a drain of up to 5 s)
ABORTED_CLOSE_S = 1.0

# gRPC codes that mean the request itself was wrong, not that the server is away
_FATAL_CODES = ("INVALID_ARGUMENT", "UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED")


def _status(exc: BaseException) -> str:
    status = exc.status() if hasattr(exc, "status") and callable(exc.status) else None
    return str(status or "")


class TritonRunner(Runner):
    """Runs a model served by Triton. `url`: triton://HOST[:PORT]/NAME[/VERSION] (or a
    TritonUrl); `options`: engine.triton.options.TritonOptions."""

    name = "triton"
    asynchronous = True
    remote = True

    def __init__(self, url, options: Optional[TritonOptions] = None):
        super().__init__()
        self.url = url if isinstance(url, TritonUrl) else TritonUrl.parse(str(url))
        self.options = options or TritonOptions()
        self.shm = self.options.shm_for(self.url)
        self._grpc = None
        self._client = None
        self._info: Optional[ModelInfo] = None
        self._pool: Optional[SlotPool] = None
        self._healthy = threading.Event()
        self._cancelled = threading.Event()
        self._no_wait = threading.Event()  # a stopping run: no more waiting for the server
        self._calls: Dict[int, object] = {}  # slot index -> the request in flight (cancellable)
        self._recover_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._last_error = ""
        self._ended_by = ""  # why the client gave up (report.json, /healthz), if it did
        self._outage = ServerOutage(str(self.url))  # said as it happens, as a stream's is
        self._failed_in_a_row = 0
        self.failed_requests = 0
        self.reconnects = 0

    # -- lifecycle ------------------------------------------------------------------------
    def _activate(self) -> None:
        self._grpc = require("tritonclient.grpc")
        self._client, self._info = connect_when_ready(self._new_client, self.url, self.options)
        try:
            self._inputs, self._outputs = self._info.inputs, self._info.outputs
            self._pool = self._slots()
        except BaseException:
            self._client.close()
            raise
        # a runner never deactivated (a Detector dropped or left open at exit) still lets go of
        # its regions: the server keeps them registered, /dev/shm keeps them, until a restart
        self._let_go_later = weakref.finalize(self, _let_go, self._pool,
                                              min(self.options.timeout, 2.0))
        self._healthy.set()

    def cancel(self) -> None:
        """Stop at once (a run aborted): requests in flight are cancelled (their waiters get
        InferenceFailed), a wait for the server ends, and further submits raise ModelError."""
        self._cancelled.set()
        self._no_wait.set()
        for call in list(self._calls.values()):
            call.cancel()

    def stop_waiting(self) -> None:
        """A run that is stopping (the first Ctrl-C) does not wait for a server that is away:
        requests to a live server go on, frames that would wait fail at once (counted)."""
        self._no_wait.set()

    def _slots(self) -> SlotPool:
        """The request slots, their shared memory checked with the server once. With
        `shm="auto"`, a local server that cannot map this machine's shared memory (a container
        without --ipc=host) gets the tensors in the requests instead, with one warning."""
        try:
            return self._checked_pool(self.shm)
        except ModelError as exc:
            if self.options.shm != "auto" or self.shm == "none":
                raise ModelError(f"{self.url}: {exc}") from None
            warnings.warn(f"{self.url}: the server cannot use this machine's shared memory "
                          f"({first_line(exc)}); sending tensors in the requests instead "
                          "(--triton-shm none says so up front)", DbrtWarning, stacklevel=2)
            self.shm = "none"
            return self._checked_pool("none")

    def _checked_pool(self, kind: str) -> SlotPool:
        pool = SlotPool(memory(kind, self._client, self.options.connect_timeout),
                        self.options.inflight, self.url.model)
        pool.probe()
        if pool.mem.files:  # the server maps our /dev/shm: free what runs killed there left
            try:
                remove_dead_owners(self._client, self.options.connect_timeout)
            except Exception:  # noqa: BLE001 - a later run tries again; this one goes on
                pass
        return pool

    def _deactivate(self) -> None:
        self._let_go_later.detach()
        try:
            if self._pool is not None:  # an aborted run does not wait for requests in flight,
                aborted = self._cancelled.is_set()  # but lets go of a live server's regions
                self._pool.close(drain_timeout=0 if aborted else self.options.timeout,
                                 unregister=not aborted or self._healthy.is_set(),
                                 limit=ABORTED_CLOSE_S if aborted else None)
        finally:
            self._client.close()

    def _new_client(self):
        return open_client(self._grpc, self.url)

    # -- description ----------------------------------------------------------------------
    @property
    def metadata(self) -> Dict[str, str]:
        """The model config's `parameters` (string values), e.g. dbrt's ModelSpec under "dbrt"."""
        return dict(self._info.parameters) if self._info else {}

    @property
    def max_batch(self) -> int:
        """The most frames a call takes: the model's max_batch_size; for a model that does not
        batch (max_batch_size 0), the batch its dims fix (0: none, any number)."""
        return (self._info.max_batch or fixed_batch(self._info.inputs)) if self._info else 0

    @property
    def min_batch(self) -> int:
        """1 for a model that batches (max_batch_size > 0, Triton takes any batch up to it);
        for one that does not, the batch its dims fix, if any."""
        return 1 if self._info and self._info.max_batch else super().min_batch

    @property
    def state(self) -> str:
        """"up", "reconnecting" (a request failed; the next one waits for the server),
        "failed" (it gave up, or the server refused a request) or "cancelled"."""
        if self._ended_by:
            return "failed"
        if self._cancelled.is_set():
            return "cancelled"
        return "up" if self._healthy.is_set() else "reconnecting"

    def describe(self) -> dict:
        with self._stats_lock:
            return dict(url=str(self.url), state=self.state, error=self._ended_by or None,
                        shm=self.shm, inflight=self.options.inflight,
                        max_batch=self.max_batch, failed_requests=self.failed_requests,
                        reconnects=self.reconnects)

    def _check_feed(self, feed: Mapping[str, object]) -> None:
        try:
            super()._check_feed(feed)
        except ShapeError as exc:
            raise ShapeError(f"{self.url}: {exc}") from None
        if self._info and self._info.max_batch:  # a fixed batch: checked with the dims above
            for name, array in feed.items():
                if array.shape[0] > self.max_batch:
                    raise ShapeError(f"{self.url}: input {name!r} {tuple(array.shape)} is a batch of "
                                     f"{array.shape[0]}, more than the model's max_batch_size "
                                     f"{self.max_batch} (use a smaller --batch)")

    # -- inference ------------------------------------------------------------------------
    def _infer(self, feed: Mapping[str, object]) -> Dict[str, object]:
        return self._send(feed).result()

    def submit(self, feed) -> Future:
        return self._send(self._checked(feed))

    def _send(self, feed: Mapping[str, object]) -> Future:
        if self._cancelled.is_set():
            raise ModelError(f"{self.url}: the client was cancelled")
        try:
            self._recover_if_needed()
        except InferenceFailed as exc:  # the run is stopping: this frame is not waited for
            future: Future = Future()
            future.set_exception(exc)
            return future
        except ModelError as exc:
            raise self._ended(exc)
        slot = self._pool.acquire(self.options.timeout + self.options.connect_timeout)
        future: Future = Future()
        try:
            inputs = [self._input(slot, t, feed[t.name]) for t in self._inputs]
            like = tuple(feed[self._inputs[0].name].shape)
            outputs, shared = self._requested_outputs(slot, like)
        except Exception as exc:  # noqa: BLE001 - a region could not be registered: server away?
            self._pool.release(slot)
            self._request_failed(exc)
            future.set_exception(InferenceFailed(f"{self.url}: {first_line(exc)}"))
            return future

        def done(result, error):
            try:
                if error is not None:
                    future.set_exception(self._failure(error))
                else:
                    future.set_result(self._read_outputs(slot, result, shared))
                    self._request_succeeded()
            except BaseException as exc:  # noqa: BLE001 - never lose the waiter
                future.set_exception(exc)
            finally:
                self._calls.pop(slot.index, None)
                self._pool.release(slot)

        try:
            self._calls[slot.index] = self._client.async_infer(
                self.url.model, inputs, done, model_version=self.url.version, outputs=outputs,
                client_timeout=self.options.timeout)
        except Exception as exc:  # noqa: BLE001 - could not even send it
            self._pool.release(slot)
            future.set_exception(self._failure(exc))
        return future

    def _input(self, slot, info: TensorInfo, array):
        if not isinstance(array, np.ndarray) and not (self.shm == "cuda" and hasattr(array, "__dlpack__")):
            array = array.get() if hasattr(array, "get") else np.asarray(array)  # CuPy -> host
        if isinstance(array, np.ndarray) and array.dtype != np.dtype(info.dtype):
            array = array.astype(info.dtype)
        shape = [int(d) for d in array.shape]
        tensor = self._grpc.InferInput(info.name, shape, self._info.datatypes[info.name])
        if self._pool.shared:
            nbytes = nbytes_of(shape, info.dtype)
            region = self._pool.region(slot, info.name, nbytes)
            self._pool.mem.write(region, array)
            tensor.set_shared_memory(region.name, nbytes)
        else:
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
        return tensor

    def _requested_outputs(self, slot, like: Tuple[int, ...]):
        """The outputs to ask for, and those written into shared memory {name: (region, shape)}."""
        requested, shared = [], {}
        for info in self._outputs:
            out = self._grpc.InferRequestedOutput(info.name)
            shape = resolved_shape(info.shape, like) if self._pool.shared else None
            if shape is not None:
                region = self._pool.region(slot, info.name, nbytes_of(shape, info.dtype))
                out.set_shared_memory(region.name, nbytes_of(shape, info.dtype))
                shared[info.name] = region
            requested.append(out)
        return requested, shared

    def _read_outputs(self, slot, result, shared) -> Dict[str, object]:
        outputs = {}
        for info in self._outputs:
            if info.name in shared:
                tensor = result.get_output(info.name)
                outputs[info.name] = self._pool.mem.read(shared[info.name], info.dtype,
                                                         [int(d) for d in tensor.shape])
            else:
                outputs[info.name] = result.as_numpy(info.name)
        return outputs

    # -- failures and recovery ------------------------------------------------------------
    def _failure(self, error) -> Exception:
        """The exception a failed request's waiter gets: fatal for a malformed request, else
        InferenceFailed (and the next submit first waits for the server)."""
        message = f"{self.url}: {first_line(error)}"
        if any(code in _status(error) for code in _FATAL_CODES):
            return self._ended(ModelError(f"{message} (the server refused the request)"))
        self._request_failed(error)
        return InferenceFailed(message)

    def _ended(self, error: ModelError) -> ModelError:
        """The run ends with `error`: unless it was cancelled, report.json says why."""
        if not self._cancelled.is_set():
            self._ended_by = self._ended_by or str(error)
        return error

    def _request_failed(self, error) -> None:
        if self._cancelled.is_set():  # our own cancel (an aborted run), not the server failing
            return
        with self._stats_lock:
            self.failed_requests += 1
            self._last_error = first_line(error)
            # one outage fails every request in flight at once: count outages, not requests
            if self._healthy.is_set():
                self._failed_in_a_row += 1
                self._healthy.clear()

    def _request_succeeded(self) -> None:
        with self._stats_lock:
            self._failed_in_a_row = 0

    def _recover_if_needed(self) -> None:
        """After a failed request: wait with back-off until the server and model are ready,
        register the shared memory again, and go on; one ModelError line when giving up."""
        if self._healthy.is_set():
            return
        with self._recover_lock:
            if self._healthy.is_set():
                return
            retries = self.options.retries
            if retries == 0:
                raise ModelError(f"lost {self.url}: gave up at once (--reconnect 0; last: "
                                 f"{self._last_error})")
            if retries is not None and self._failed_in_a_row > retries:
                slow = (f", no answer within --triton-timeout {self.options.timeout:g} s"
                        if "Deadline" in self._last_error else "")  # a server that slow
                raise ModelError(f"lost {self.url}: gave up after {self._failed_in_a_row} outages in a "
                                 f"row (the server came back each time, but requests failed again; "
                                 f"last: {self._last_error}{slow})")
            last = self._last_error
            self._outage.lost(last, retries)
            for attempt, wait in enumerate(self.options.delays(), 1):
                if self._no_wait.wait(wait):  # at once when the run is already stopping
                    raise (ModelError if self._cancelled.is_set() else InferenceFailed)(
                        f"{self.url}: stopped while waiting for the server (last: {last})")
                try:
                    self._reconnect()
                except _ModelChanged:
                    raise
                except Exception as exc:  # noqa: BLE001 - still away: try again later
                    last = first_line(exc)
                    continue
                with self._stats_lock:
                    self.reconnects += 1
                self._healthy.set()
                self._outage.back(attempt)
                return
            raise ModelError(f"lost {self.url}: gave up after {retries} reconnect attempts "
                             f"(last: {last})")

    def _reconnect(self) -> None:
        """A fresh channel (a broken one may sit in gRPC's own long back-off), the model ready
        again, and the shared memory registered with the (possibly restarted) server."""
        client = self._new_client()
        try:
            info = read_model_info(client, self.url, self.options.connect_timeout)
            if info != self._info:  # the settings, input shape or batch this run relies on
                changed = [f for f in ("inputs", "outputs", "max_batch", "parameters", "datatypes")
                           if getattr(info, f) != getattr(self._info, f)]
                raise _ModelChanged(f"{self.url}: the server came back with another model "
                                    f"({', '.join(changed)} differ from the one this run "
                                    "started with); start the run again")
            self._pool.mem.client = client
            self._pool.register_again()
        except BaseException:
            client.close()
            raise
        old, self._client = self._client, client
        old.close()


def _let_go(pool: SlotPool, drain_timeout: float) -> None:
    try:
        pool.close(drain_timeout=drain_timeout)
    finally:
        pool.mem.client.close()  # the client of the last reconnect


class _ModelChanged(ModelError):
    """The server is back with a model other than the one the run was set up for."""
