"""`--mqtt` per-stream topics ({stream} in the topic: each stream's detections and text events
on its own topic, one status topic for the connection) and `--mqtt-empty first` (a stream's
frames without detections published only when they say something new). A real Mosquitto
broker; before, every stream published to the one topic and every empty frame was sent."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from pipeline.cli import main

from media import until
from serve_helpers import Mosquitto, Subscriber, dbrt, mosquitto_or_skip, wait_until

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'dbrt[serve]')")

PER_STREAM = "dbrt/test/cam{stream}"
STATUS = "dbrt/test/status"


@pytest.fixture
def broker(tmp_path):
    server = Mosquitto(mosquitto_or_skip(), tmp_path).start()
    yield server
    server.stop()


def frame_and_detections(stream: int, index: int, count: int):
    from pipeline.detections import Detections
    from pipeline.sources import Frame

    quad = np.array([[1, 2], [3, 2], [3, 4], [1, 4]], np.float32)
    frame = Frame(np.zeros((4, 4, 3), np.uint8), index, index / 30, f"cam{stream}", stream=stream)
    return frame, Detections(np.repeat(quad[None], count, 0).reshape(count, 4, 2),
                             np.full(count, 0.9, np.float32))


def states(subscriber: Subscriber, topic: str) -> list:
    return [e["state"] for e in subscriber.received_on(topic) if e.get("type") == "status"]


@pytest.mark.parametrize("topic, status", [
    ("dbrt/cam{stream}", "dbrt/status"),
    ("site7/{stream}/dbrt", "site7/status"),
    ("site7/dbrt/events", "site7/dbrt/events/status"),  # no placeholder: as before
])
def test_the_status_topic_of_a_topic(topic, status):
    from pipeline.mqtt_routing import events_topic, status_topic

    assert status_topic(topic) == status
    assert events_topic(topic, 3) == topic.replace("{stream}", "3")


def test_mqtt_empty_without_mqtt_is_one_line(capsys, tmp_path):
    assert main(["run", "--mqtt-empty", "first", "--quiet", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mqtt-empty applies to --mqtt only" in err[0], err


def test_each_stream_publishes_to_its_own_topic(broker):
    """Stream N's detections and text events reach dbrt/test/camN only; the status (online,
    then offline) is dbrt/test/status; the counters stay one set for the sink."""
    from pipeline.mqtt import MqttSink

    subscriber = Subscriber(broker.port, "dbrt/test/#")
    try:
        until(lambda: subscriber.client.is_connected(), "the subscriber to connect", 60)
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{PER_STREAM}")
        until(lambda: states(subscriber, STATUS) == ["online"], "the online status", 60)
        for index in range(3):
            for stream in (0, 1):
                sink.write(*frame_and_detections(stream, index, count=stream + index))
        sink.publish_text_event({"event": "end", "stream": 1, "track_id": 7})
        sink.close()
        until(lambda: states(subscriber, STATUS) == ["online", "offline"], "offline", 60)
        until(lambda: len(subscriber.received()) >= 2 + 7, "the 7 events", 60)
    finally:
        subscriber.close()
    assert set(subscriber.topics) == {STATUS, "dbrt/test/cam0", "dbrt/test/cam1"}
    for stream in (0, 1):
        events = subscriber.received_on(f"dbrt/test/cam{stream}")
        assert {e["stream"] for e in events} == {stream}, events
        assert [e["frame_index"] for e in events if e["type"] == "detections"] == [0, 1, 2]
    assert [e["track_id"] for e in subscriber.received_on("dbrt/test/cam1")
            if e["type"] == "text"] == [7]
    counters = sink.counters()
    assert counters["published_total"] == counters["acked_total"] == 7, counters
    assert counters["url"].endswith("/" + PER_STREAM)


def test_streams_share_the_topic_without_the_placeholder(broker):
    """As before: every stream's events on TOPIC, the status on TOPIC/status."""
    from pipeline.mqtt import MqttSink

    subscriber = Subscriber(broker.port, "dbrt/test/#")
    try:
        until(lambda: subscriber.client.is_connected(), "the subscriber to connect", 60)
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/dbrt/test/events")
        for stream in (0, 1):
            sink.write(*frame_and_detections(stream, 0, count=1))
        sink.close()
        until(lambda: states(subscriber, "dbrt/test/events/status") == ["online", "offline"],
              "the status on TOPIC/status", 60)
        until(lambda: len(subscriber.received_on("dbrt/test/events")) >= 2, "both events", 60)
    finally:
        subscriber.close()
    assert sorted(e["stream"] for e in subscriber.received_on("dbrt/test/events")) == [0, 1]
    assert set(subscriber.topics) == {"dbrt/test/events", "dbrt/test/events/status"}


def test_two_streams_of_a_run_on_their_topics_and_the_last_will(tmp_path, broker):
    """`dbrt run A B --mqtt .../cam{stream}`: each topic has its stream's events; killed, the
    broker publishes the last will on the one status topic."""
    demo = "pipeline/assets/demo.mp4"
    subscriber = Subscriber(broker.port, "dbrt/test/#")
    proc = dbrt("run", demo, demo, "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{PER_STREAM}",
                "--no-video", "--quiet", "-o", str(tmp_path / "out"))
    try:
        for stream in (0, 1):
            wait_until(lambda: subscriber.received_on(f"dbrt/test/cam{stream}"), proc,
                       f"stream {stream}'s first event")
        assert states(subscriber, STATUS) == ["online"]
        assert proc.poll() is None, "the demo videos ended before the kill"
        proc.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the last will
        proc.communicate(timeout=60)
        until(lambda: states(subscriber, STATUS) == ["online", "offline"], "the last will", 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
        subscriber.close()
    for stream in (0, 1):
        assert {e["stream"] for e in subscriber.received_on(f"dbrt/test/cam{stream}")} == {stream}
    assert set(subscriber.topics) == {STATUS, "dbrt/test/cam0", "dbrt/test/cam1"}


def test_empty_first_publishes_a_streams_first_empty_frame_of_each_run(broker):
    """Per stream: its first frame, each frame with detections and the first empty one after
    them are published; the other empty frames are skipped and counted, text events not."""
    from pipeline.mqtt import MqttSink

    counts = {0: [0, 0, 2, 0, 0, 0, 1, 0], 1: [0, 0, 0]}
    subscriber = Subscriber(broker.port, "dbrt/test/#")
    try:
        until(lambda: subscriber.client.is_connected(), "the subscriber to connect", 60)
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{PER_STREAM}", empty="first")
        for index in range(8):
            for stream, frames in counts.items():
                if index < len(frames):
                    sink.write(*frame_and_detections(stream, index, frames[index]))
        sink.publish_text_event({"event": "end", "stream": 0, "track_id": 1})
        sink.close()
        until(lambda: len(subscriber.received()) >= 6 + 1 + 2, "the published events", 60)
    finally:
        subscriber.close()
    published = {stream: [e["frame_index"] for e in subscriber.received_on(f"dbrt/test/cam{stream}")
                          if e["type"] == "detections"] for stream in counts}
    assert published == {0: [0, 2, 3, 6, 7], 1: [0]}
    counters = sink.counters()
    assert counters["skipped_empty_total"] == 5 and counters["published_total"] == 7, counters


def test_empty_first_tells_each_stream_again_after_a_reconnect(broker):
    """The broker restarted: a stream's next empty frame is published once more (what it had
    been told before may be lost), then skipped again."""
    from pipeline.mqtt import MqttSink

    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{PER_STREAM}", empty="first",
                    min_delay=1, max_delay=1)
    try:
        until(lambda: sink.connected, "the sink to connect", 60)
        for index in range(3):
            sink.write(*frame_and_detections(0, index, 0))
        assert sink.counters()["published_total"] == 1
        broker.restart()
        until(lambda: sink.counters()["reconnects_total"] == 1 and sink.connected,
              "the reconnect", 60)
        for index in range(3, 6):
            sink.write(*frame_and_detections(0, index, 0))
    finally:
        sink.close()
    counters = sink.counters()
    assert counters["published_total"] == 2 and counters["skipped_empty_total"] == 4, counters


def test_a_run_with_empty_first_counts_what_it_skipped(tmp_path, broker):
    """The demo video with a box threshold that leaves some frames empty: the broker gets every
    frame but the empty ones after an empty one, which report.json counts as skipped."""
    subscriber = Subscriber(broker.port, "dbrt/test/#")
    out = tmp_path / "out"
    try:
        until(lambda: subscriber.client.is_connected(), "the subscriber to connect", 60)
        assert main(["run", "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{PER_STREAM}",
                     "--mqtt-empty", "first", "--box-thresh", "0.62", "--max-frames", "40",
                     "--no-video", "--quiet", "-o", str(out)]) == 0
        mqtt = json.loads((out / "report.json").read_text())["mqtt"]
        until(lambda: len(subscriber.received_on("dbrt/test/cam0")) >= mqtt["acked_total"],
              "every acknowledged event at the subscriber", 60)
    finally:
        subscriber.close()
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    empty = [not line["detections"] for line in lines]
    skipped = sum(1 for i in range(1, len(empty)) if empty[i] and empty[i - 1])
    assert skipped > 0, "the demo's frames all had detections: no empty frame to skip"
    assert mqtt["skipped_empty_total"] == skipped and mqtt["published_total"] == 40 - skipped
    received = [e["frame_index"] for e in subscriber.received_on("dbrt/test/cam0")]
    assert sorted(set(received)) == [i for i in range(40) if not (i and empty[i] and empty[i - 1])]
