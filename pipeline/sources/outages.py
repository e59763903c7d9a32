"""What a live source's outages say as they happen, as warnings (the CLI's "dbrt run: warning:"
lines on stderr, a service's journal; a Python caller's `warnings`): one line when the stream
is lost, one when it is back, and the report and the summary say the rest. Never a line per
attempt (a camera down for an hour would flood the journal), and a loss a minute at most."""
from __future__ import annotations

import time
from typing import Optional

from engine.errors import warn_caller, without_credentials
from engine.outage_words import count, duration, retry_policy


def say(message: str) -> None:
    """One warning each time it is said (the same words may be a new outage: Python's default
    filter shows a warning once per text), its passwords left out. Said from a source's reader,
    where a caller's filter that turns warnings into errors does not end the stream (warn_caller)."""
    warn_caller(without_credentials(message), every_time=True)


# a source's "lost" lines come at most this often: a stream that flaps (a timeout after each
# frame, a link that drops every few seconds) would flood the journal with a line pair each time
QUIET_S = 60.0


class OutageLog:
    """The outage of one live source under way, from its loss (or a first connect that failed)
    to its next frame, and whether its start was said (`lost`, or the start's "is not up"
    warning: `said_down`), so that its end is said too (`over`). `attempts`: the connects it
    took so far, as the source counts them (`attempt`)."""

    def __init__(self, name: str, clock=time.monotonic):
        self.name, self._clock = name, clock
        self.since: Optional[float] = None  # when the outage under way began; None: none
        self.attempts = 0
        self._first = False  # the outage is the run's start (connect, not reconnect, attempts)
        self._said = False
        self._pending: Optional[str] = None  # the loss under way, not said yet: "(why): policy"
        self._last_said: Optional[float] = None  # when a loss was last said
        self._unsaid = 0  # losses since then, the one under way included

    def began(self, since: Optional[float] = None) -> None:
        """A first connect failed (or did not answer): the outage is the run's start, from
        `since` (when that connect began; by `clock`)."""
        if self.since is None:
            self.since, self.attempts, self._first = since or self._clock(), 1, True

    def said_down(self, since: Optional[float] = None) -> None:
        self.began(since)
        self._said = True

    def lost(self, why: str, retries: Optional[int]) -> None:
        self.since, self.attempts, self._first, self._said = self._clock(), 0, False, False
        self._pending = f"({why}): retrying it {retry_policy(retries)}"
        self._unsaid += 1
        self._say_loss()

    def attempt(self, number: int) -> None:
        """Connect attempt `number` of the outage begins: a loss not said for QUIET_S after the
        last one is said now."""
        self.attempts = number
        self._say_loss()

    def _say_loss(self) -> None:
        now = self._clock()
        quiet = self._last_said is not None and now - self._last_said < QUIET_S
        if self._pending is None or quiet:
            return
        ago = f" {duration(now - self.since)} ago" if now - self.since >= 1 else ""
        text = f"lost {self.name}{ago} {self._pending}"
        if self._unsaid > 1:
            text += (f" (lost {count(self._unsaid - 1, 'more time')} in the "
                     f"{duration(now - self._last_said)} before, not said one by one)")
        say(text)
        self._said, self._pending, self._last_said, self._unsaid = True, None, now, 0

    def over(self) -> None:
        """A frame came."""
        if self._said and self.since is not None:
            what = "connect attempt" if self._first else "reconnect attempt"
            state = "is up" if self._first else "is back"
            say(f"{self.name} {state} after {duration(self._clock() - self.since)} "
                f"({count(self.attempts, what)})")
        self.since, self._said, self._pending = None, False, None
