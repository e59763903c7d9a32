"""The wait for a Triton server at the start of a run, as for a stream down at the start:
services started together (docker compose, systemd) bring the client up before the server
answers, and a server loading TensorRT plans takes tens of seconds to.

What may pass by itself (engine.triton.model_info.NotReadyYet: no answer, connection refused,
a server not live, a model loading) is retried under the client's reconnect policy
(TritonOptions.retries / delays: --reconnect N --reconnect-delay S), with one warning line
when the wait begins and one when the server is up; what the user is to fix (a model the
server does not have, a port that is not gRPC, a host name that does not exist) and the last
failure once the retries are spent are one ModelError. `options.stop` set (a run's stop
signal) or KeyboardInterrupt ends the wait at once."""
from __future__ import annotations

import threading
import time
from typing import Callable, Tuple

from ..errors import ModelError, warn_caller
from ..outage_words import count, duration, retry_policy
from .model_info import ModelInfo, NotReadyYet, read_model_info
from .options import TritonOptions, TritonUrl


class StartWait:
    """The start's wait under way: what it says, how long it took."""

    def __init__(self, url: TritonUrl, options: TritonOptions, clock=time.monotonic):
        self.url, self.options, self._clock = url, options, clock
        self.began = clock()
        self.attempts = 0
        self.said = False

    def waiting(self, why: str) -> None:
        """The first attempt failed for a reason that may pass: said once."""
        warn_caller(f"{self.url} is not ready ({why}): retrying it "
                    f"{retry_policy(self.options.retries)}", every_time=True)
        self.said = True

    def up(self) -> None:
        if self.said:
            warn_caller(f"{self.url} is up after {duration(self._clock() - self.began)} "
                        f"({count(self.attempts, 'connect attempt')})", every_time=True)

    def gave_up(self, last: ModelError) -> ModelError:
        if not self.said:  # --reconnect 0: today's line, as it was
            return ModelError(str(last))
        return ModelError(f"{last} (gave up after {count(self.attempts, 'connect attempt')} in "
                          f"{duration(self._clock() - self.began)})")


def connect_when_ready(open_client: Callable[[], object], url: TritonUrl,
                       options: TritonOptions) -> Tuple[object, ModelInfo]:
    """A client of the server and the model's description, once both are ready (waiting as
    the module says); the client is the caller's to close."""
    wait, delays = StartWait(url, options), options.delays()
    stop = options.stop or threading.Event()  # never set: a wait Ctrl-C still interrupts
    while True:
        wait.attempts += 1
        last = _attempt(open_client, url, options)
        if not isinstance(last, NotReadyYet):
            wait.up()
            return last
        delay = next(delays, None)
        if delay is None:
            raise wait.gave_up(last) from None
        if not wait.said:
            wait.waiting(last.why)
        if stop.wait(delay):
            raise ModelError(f"{url}: stopped while waiting for the server (last: {last})")


def _attempt(open_client, url: TritonUrl, options: TritonOptions):
    """(client, info), or the NotReadyYet that says why not yet; a mistake raises."""
    client = open_client()
    try:
        return client, read_model_info(client, url, options.connect_timeout)
    except NotReadyYet as exc:
        client.close()
        return exc
    except BaseException:
        client.close()
        raise

