"""Where `--mqtt`'s events go, and which frames without detections go at all.

Topics: `dbrt/events` sends every stream's events to that one topic (a subscriber tells them
apart by the payload's `stream`), its retained online / offline status to `dbrt/events/status`.
`dbrt/cam{stream}` sends stream N's events (detections and text events) to `dbrt/camN`; the
status, one for the connection (MQTT has one last will per connection), goes to the levels
before the first one holding `{stream}`, plus `/status`: `dbrt/status` (a topic whose first
level holds `{stream}` has no such levels and is refused). That level holds a number, so no
stream's topic is ever the status topic.

`--mqtt-empty first` (EmptyFrames): a stream's frame without detections is published when the
stream's previous published frame had some (subscribers learn that the text went), when it is
the stream's first frame, and when it is its first after a reconnect (what the broker had
before may be lost); the other empty frames are skipped and counted. `every` publishes them all.
"""
from __future__ import annotations

import re
from typing import Dict

PLACEHOLDER = "{stream}"
EMPTY_MODES = ("every", "first")


def check_topic(topic: str) -> None:
    """ValueError says what is wrong with an events topic (wildcards, placeholders)."""
    if not topic or "+" in topic or "#" in topic:
        raise ValueError("expected one topic after the host, without + or # wildcards, "
                         "e.g. mqtt://broker/dbrt/events")
    unknown = [p for p in re.findall(r"\{[^{}]*\}?|\}", topic) if p != PLACEHOLDER]
    if unknown:
        raise ValueError(f"unknown placeholder {unknown[0]!r} in the topic; the one placeholder "
                         "is {stream} (the stream's index), e.g. mqtt://broker/dbrt/cam{stream}")
    if PLACEHOLDER in topic and not _status_levels(topic):
        raise ValueError("{stream} in the topic's first level leaves none for the status "
                         "topic (the levels before {stream}'s, plus /status): put one in front, "
                         "e.g. mqtt://broker/dbrt/cam{stream} (status: dbrt/status)")


def _status_levels(topic: str) -> str:
    """The levels before the first one holding {stream} ("" when it is the first)."""
    levels = topic.split("/")
    first = next(i for i, level in enumerate(levels) if PLACEHOLDER in level)
    return "/".join(levels[:first])


def status_topic(topic: str) -> str:
    """The retained online / offline topic of an events topic (see the module docstring)."""
    if PLACEHOLDER in topic:
        return f"{_status_levels(topic)}/status"
    return f"{topic}/status"


def events_topic(topic: str, stream: int) -> str:
    """Stream `stream`'s topic: `topic` with its {stream} filled in (the topic itself without)."""
    return topic.replace(PLACEHOLDER, str(int(stream)))


class EmptyFrames:
    """--mqtt-empty: whether a frame's detections event is published (see the module docstring).
    Called from the sink's thread only; `reconnects` comes from the client's counters."""

    def __init__(self, mode: str = "every"):
        if mode not in EMPTY_MODES:
            raise ValueError(f"--mqtt-empty {mode!r}: choose from {', '.join(EMPTY_MODES)}")
        self.every = mode == "every"
        self.skipped = 0
        self._had_detections: Dict[int, bool] = {}  # stream -> its last published frame's
        self._reconnects = 0

    def wanted(self, stream: int, count: int, reconnects: int) -> bool:
        """Whether to publish stream `stream`'s frame of `count` detections; counts a skip."""
        if self.every or count:
            return True
        if reconnects != self._reconnects:  # a new connection: each stream tells its state again
            self._reconnects = reconnects
            self._had_detections.clear()
        if self._had_detections.get(stream, True):
            return True
        self.skipped += 1
        return False

    def published(self, stream: int, count: int) -> None:
        """The frame's event was handed to the client (one dropped for a full outbox is not)."""
        self._had_detections[stream] = count > 0
