"""What a model server's outage says as it happens, as a live stream's does (the CLI's "dbrt
run: warning:" lines on stderr, a service's journal; a Python caller's `warnings`): one line
when the client loses the server, one when it is back; the line that gives up is the run's
error. A loss within QUIET_S of the last one said is not said, nor its return: a server that
fails a request every few seconds would flood the journal (the report counts them all)."""
from __future__ import annotations

import time
from typing import Optional

from ..errors import warn_caller
from ..outage_words import count, duration, retry_policy

QUIET_S = 60.0


class ServerOutage:
    """The outage under way of the server behind `name` (a triton:// URL)."""

    def __init__(self, name: str, clock=time.monotonic):
        self.name, self._clock = name, clock
        self._since: Optional[float] = None
        self._said = False
        self._last_said: Optional[float] = None

    def lost(self, why: str, retries: Optional[int]) -> None:
        """The client starts waiting for the server (`retries`: the probes it allows; None:
        for ever)."""
        now = self._since = self._clock()
        self._said = self._last_said is None or now - self._last_said >= QUIET_S
        if self._said:
            self._last_said = now
            warn_caller(f"lost {self.name} ({why}): retrying it {retry_policy(retries)}",
                        every_time=True)

    def back(self, attempts: int) -> None:
        """The server answers again, after `attempts` probes."""
        if self._said and self._since is not None:
            warn_caller(f"{self.name} is back after {duration(self._clock() - self._since)} "
                        f"({count(attempts, 'reconnect attempt')})", every_time=True)
        self._since, self._said = None, False
