"""A run's report rewritten while the run goes on: a service that watches cameras for weeks, or
is killed outright (an out-of-memory kill, a power cut, SIGKILL after a stop's grace period),
leaves a report at most `every` seconds old instead of none, or an earlier run's.

    with LiveReport(pipe.report, "out/report.json", every=60):
        pipe.run()
    write_report(pipe.report(), "out/report.json")   # the final one, "running": false

Each write is atomic (pipeline.metrics.write_report) and made by a thread of its own, so the
frames' path never waits for the disk; a report of a run still going says "running": true.
"""
from __future__ import annotations

import math
import numbers
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from engine.errors import warn_caller

from .metrics import write_report

POLL_S = 1.0  # how often `turned` is asked (a new segment or segment file of the results)
EVERY_S = 60.0  # dbrt run's --report-every


class LiveReport:
    """Rewrites `path` with `make()` every `every` seconds, and when `turned()` (if given)
    returns a value other than the last one (checked every POLL_S: the run's results files
    turned to a new segment), from its start until `stop()`, which waits for a write under way:
    the final report written after it is never overwritten. `make()` returning None writes
    nothing (a run not started yet: one that fails to start leaves no report that says it ran).
    A write that fails (a full disk) is said once (a DbrtWarning) and tried again the next time."""

    def __init__(self, make: Callable[[], Optional[dict]], path, every: float = EVERY_S,
                 turned: Optional[Callable[[], object]] = None):
        if not callable(make):
            raise TypeError(f"LiveReport(make=) must be a function that returns the report, e.g. "
                            f"pipe.report, got {make!r}")
        if isinstance(every, bool) or not isinstance(every, numbers.Real):
            raise TypeError(f"LiveReport(every=) must be a number of seconds, got {every!r}")
        if not (every > 0 and math.isfinite(every)):  # NaN too; inf: a wait no clock can time
            raise ValueError(f"LiveReport(every=) must be a finite number of seconds > 0, got {every!r}")
        self.make, self.path, self.every, self.turned = make, Path(path), float(every), turned
        if not self.path.parent.is_dir():  # else a warning from its thread, naming a temp file
            raise FileNotFoundError(f"LiveReport: no folder {self.path.parent} to write "
                                    f"{self.path.name} into")
        self.written = 0  # reports written so far
        self.error: Optional[BaseException] = None  # the last write's failure, if it failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-report", daemon=True)

    def start(self) -> "LiveReport":
        """Start rewriting the report (again, after a stop())."""
        if self._thread.is_alive():
            raise RuntimeError("this LiveReport is running already")
        if self._thread.ident is not None:  # stopped: a thread starts once, its successor anew
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="live-report", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop, after a write under way: nothing is written over the final report after it."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def __enter__(self) -> "LiveReport":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        due = time.monotonic() + self.every
        mark = self._mark()
        while True:
            wait = due - time.monotonic()
            if self.turned is not None:
                wait = min(wait, POLL_S)
            # a wait past TIMEOUT_MAX (every=1e12, --report-every 1e12) is an OverflowError
            if self._stop.wait(min(max(0.0, wait), threading.TIMEOUT_MAX)):
                return
            now, latest = time.monotonic(), self._mark()
            if now >= due or latest != mark:
                self.write()
                due, mark = now + self.every, latest

    def _mark(self):
        return None if self.turned is None else self.turned()

    def write(self) -> bool:
        """Write the report now; whether one was written."""
        try:
            report = self.make()
            if report is None:
                return False
            write_report(report, self.path)
        except Exception as exc:  # the run goes on; its final report says how it ended
            first, self.error = self.error is None, exc
            if first:  # said once, not every time; in its thread, a caller's "error" filter
                # does not end it (warn_caller): no report would be written for the rest of the run
                # of each failure after a write that worked: the filter would hide a second
                warn_caller(f"could not update {self.path} while the run goes on: {exc} "
                            f"(tried again every {self.every:g} s)", every_time=True)
            return False
        self.error = None
        self.written += 1
        return True
