"""How an outage's lines word counts, durations and a reconnect policy: one wording for a live
stream's (pipeline.sources.outages) and a model server's (engine.triton.outage, .startup)."""
from __future__ import annotations

from typing import Optional


def count(number: int, what: str) -> str:
    """1 time, 2 times."""
    return f"{number} {what}{'' if number == 1 else 's'}"


def duration(seconds: float) -> str:
    """12.3 s, 4 min 5 s, 2 h 3 min: how long an outage lasted."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60)} s"
    return f"{minutes // 60} h {minutes % 60} min"


def retry_policy(retries: Optional[int]) -> str:
    """How a reconnect policy retries, as the lines say it (None: for ever)."""
    return "for ever" if retries is None else f"up to {count(retries, 'time')}"
