"""What a model server's outages say as they happen (engine.triton.outage): a line when the
server is lost and one when it is back, a loss at most once a minute (a flapping server would
flood a service's journal). Time is simulated."""
from __future__ import annotations

import warnings

from engine.errors import DbrtWarning
from engine.triton.outage import QUIET_S, ServerOutage


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def _said(action) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        action()
    assert all(issubclass(w.category, DbrtWarning) for w in caught)
    return [str(w.message) for w in caught]


def test_a_loss_and_its_end_are_one_line_each():
    clock, url = Clock(), "triton://gpu-box:8001/dbnet"
    outage = ServerOutage(url, clock)
    assert _said(lambda: outage.lost("Deadline Exceeded", 10)) == [
        f"lost {url} (Deadline Exceeded): retrying it up to 10 times"]
    clock.now += 75.5
    assert _said(lambda: outage.back(4)) == [f"{url} is back after 1 min 15 s (4 reconnect attempts)"]


def test_a_server_that_flaps_is_said_lost_once_a_minute():
    clock = Clock()
    outage = ServerOutage("triton://h:8001/m", clock)
    said = []
    for _ in range(10):  # lost every 5 s, back 1 s later
        said += _said(lambda: outage.lost("Socket closed", None))
        clock.now += 1
        said += _said(lambda: outage.back(1))
        clock.now += 4
    assert len(said) == 2 and "retrying it for ever" in said[0] and "is back after 1.0 s" in said[1]
    clock.now += QUIET_S
    assert len(_said(lambda: outage.lost("Socket closed", None))) == 1
