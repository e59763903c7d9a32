"""`--mqtt`'s retained TOPIC/status: "online" on each connection, "offline" at the end of the
run, and "offline" from the broker (the last will) when dbrt dies without a goodbye; the status
messages are no events (the event counters and the outbox are the events' own). A real
Mosquitto broker."""
from __future__ import annotations

import signal

import pytest

from media import until
from serve_helpers import Mosquitto, Subscriber, dbrt, mosquitto_or_skip, wait_until

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'dbrt[serve]')")

TOPIC = "dbrt/test/events"
STATUS = TOPIC + "/status"


@pytest.fixture
def broker(tmp_path):
    server = Mosquitto(mosquitto_or_skip(), tmp_path).start()
    yield server
    server.stop()


def states(subscriber: Subscriber) -> list:
    return [e["state"] for e in subscriber.received() if e.get("type") == "status"]


def test_status_is_online_while_connected_and_offline_after_the_run(broker):
    from pipeline.mqtt import MqttSink

    subscriber = Subscriber(broker.port, STATUS)
    try:
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}")
        until(lambda: states(subscriber) == ["online"], "the retained online status", 60)
        for index in range(3):
            sink.publish_text_event({"event": "end", "track_id": index})
        sink.close()
        until(lambda: states(subscriber) == ["online", "offline"], "the offline status", 60)
    finally:
        subscriber.close()
    counters = sink.counters()  # the status messages' acknowledgements are no events'
    assert counters["published_total"] == counters["acked_total"] == 3, counters
    assert counters["queued"] == 0, counters
    later = Subscriber(broker.port, STATUS)  # a subscriber that comes later gets the retained
    try:
        until(lambda: states(later) == ["offline"], "the retained offline status", 60)
    finally:
        later.close()


def test_the_broker_says_offline_when_the_run_is_killed(tmp_path, broker):
    subscriber = Subscriber(broker.port, STATUS)
    proc = dbrt("run", "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", "--no-video",
                "--quiet", "-o", str(tmp_path / "out"))
    try:
        wait_until(lambda: states(subscriber) == ["online"], proc, "the online status")
        assert proc.poll() is None, "the demo video ended before the kill"
        proc.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the last will
        proc.communicate(timeout=60)
        until(lambda: states(subscriber) == ["online", "offline"], "the last will", 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
        subscriber.close()


def test_online_is_announced_after_a_full_outbox_while_the_broker_was_away(tmp_path):
    """Events fill the outbox while the broker is down; the online status still gets out when
    it comes (it does not take an event's place, nor is it refused for want of room)."""
    from pipeline.mqtt import MqttSink

    server = Mosquitto(mosquitto_or_skip(), tmp_path)
    sink = MqttSink(f"mqtt://127.0.0.1:{server.port}/{TOPIC}", max_queued=3, min_delay=1,
                    max_delay=1)
    try:
        for index in range(5):
            sink.publish_text_event({"event": "end", "track_id": index})
        assert sink.counters()["dropped_total"] == 2 and sink.counters()["queued"] == 3
        server.start()
        subscriber = Subscriber(server.port, STATUS)
        try:
            until(lambda: states(subscriber) == ["online"], "the online status", 60)
            until(lambda: sink.counters()["acked_total"] == 3, "the 3 queued events acked", 60)
        finally:
            subscriber.close()
    finally:
        sink.close()
        server.stop()
    counters = sink.counters()
    assert counters["published_total"] == counters["acked_total"] == 3, counters
