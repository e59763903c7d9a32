"""`dbrt run --mqtt`: events reach a real Mosquitto broker with the documented fields; the
broker stopped and restarted mid-run: events published after the restart arrive and those the
full outbox had to refuse are counted. Bad broker URLs are one line."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from pipeline.cli import main

from media import until
from serve_helpers import Mosquitto, Subscriber, dbrt, mosquitto_or_skip, wait_until

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'dbrt[serve]')")

TOPIC = "dbrt/test/events"


@pytest.fixture
def broker(tmp_path):
    binary = mosquitto_or_skip()
    server = Mosquitto(binary, tmp_path).start()
    yield server
    server.stop()


def jsonl_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.slow
def test_events_arrive_and_survive_a_broker_restart(tmp_path, broker):
    subscriber = Subscriber(broker.port, TOPIC)
    out = tmp_path / "out"
    jsonl = out / "detections.jsonl"
    proc = dbrt("run", "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", "--mqtt-queue", "3",
                "--no-video", "--quiet", "-o", str(out))
    try:
        first = wait_until(lambda: subscriber.received(), proc, "the first event")[0]
        assert set(first) == {"type", "stream", "time", "source", "frame_index", "timestamp",
                              "frame_size", "detections"}
        assert first["type"] == "detections" and first["stream"] == 0
        assert first["frame_size"] == [360, 640] and first["source"].endswith("demo.mp4")
        assert all(set(d) >= {"polygon", "score"} for d in first["detections"])

        down_from = jsonl_lines(jsonl)  # written before the broker stops: all must arrive
        broker.stop()
        wait_until(lambda: jsonl_lines(jsonl) >= down_from + 8, proc, "frames while the broker is down")
        broker.restart()
        restarted_at = jsonl_lines(jsonl)
        wait_until(lambda: any(e["frame_index"] > restarted_at for e in subscriber.received()),
                   proc, "an event published after the restart")
    except BaseException:
        subscriber.close()
        raise
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    try:
        report = json.loads((out / "report.json").read_text())
        mqtt = report["mqtt"]
        # acknowledged by the broker: on their way to the subscriber, not necessarily there yet
        until(lambda: len({e["frame_index"] for e in subscriber.received()}) >= mqtt["acked_total"],
              "every acknowledged event at the subscriber", 60)
    finally:
        subscriber.close()
    assert mqtt["dropped_total"] >= 1, mqtt  # the outbox holds 3; 8+ frames came while away
    assert mqtt["reconnects_total"] >= 1 and "Traceback" not in err
    received = {e["frame_index"] for e in subscriber.received()}
    # every frame was either delivered (once the broker was back) or refused by the full outbox
    assert mqtt["acked_total"] == mqtt["published_total"] and mqtt["queued"] == 0
    assert len(received) + mqtt["dropped_total"] == report["frames"], (received, mqtt)
    assert set(range(down_from)) <= received and max(received) == report["frames"] - 1


def test_events_of_a_run_shorter_than_the_first_connection_are_sent_at_close(tmp_path, broker):
    """The sink connects in the background: a run that ends before its first connection (a
    slow TLS handshake, a broker still starting) queued its events; close() waits, up to its
    flush time, for that connection and sends them. Before, close() waited only while
    connected, and those events were never sent."""
    import paho.mqtt.publish

    from pipeline.mqtt import MqttSink

    # a durable subscription the broker keeps across its restart; the retained probe proves
    # the subscriber is subscribed before the broker goes away
    paho.mqtt.publish.single(TOPIC, json.dumps({"type": "probe"}), qos=1, retain=True,
                             hostname="127.0.0.1", port=broker.port)
    subscriber = Subscriber(broker.port, TOPIC)
    try:
        until(lambda: subscriber.received(), "the subscriber to get the retained probe", 60)
        broker.stop()
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", min_delay=1, max_delay=1,
                        flush_s=60)
        for index in range(5):
            sink.publish_text_event({"event": "end", "track_id": index})
        assert sink.counters()["queued"] == 5 and sink.counters()["reconnects_total"] == 0
        assert not sink.connected  # the broker is down: nothing can have been sent
        broker.start()
        sink.close()  # returns once the first connection is made and the broker acknowledged
        counters = sink.counters()
        assert counters["acked_total"] == 5 and counters["queued"] == 0, counters
        until(lambda: len([e for e in subscriber.received() if e["type"] == "text"]) >= 5,
              "the 5 queued events at the subscriber", 60)
    finally:
        subscriber.close()
    texts = [e for e in subscriber.received() if e["type"] == "text"]
    assert sorted(e["track_id"] for e in texts) == list(range(5))


def test_a_burst_larger_than_the_outbox_reaches_a_connected_broker_whole(broker):
    """The outbox counts events awaiting their acknowledgement: 70 end lines at once (a
    stream's tracks ending together) through an outbox of 20 lost 50 with the broker there."""
    from pipeline.mqtt import MqttSink

    subscriber = Subscriber(broker.port, TOPIC)
    try:
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", max_queued=20)
        until(lambda: sink.connected, "the sink to connect", 60)
        for index in range(70):
            sink.publish_text_event({"event": "end", "track_id": index})
        sink.close()
        assert sink.counters()["dropped_total"] == 0 and sink.counters()["acked_total"] == 70
        until(lambda: len(subscriber.received()) >= 70, "the 70 events at the subscriber", 60)
    finally:
        subscriber.close()
    assert sorted(e["track_id"] for e in subscriber.received()) == list(range(70))


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1/t", "the scheme must be mqtt:// or mqtts://"),
    ("mqtt://127.0.0.1", "expected one topic"),
    ("mqtt://127.0.0.1:99999/t", "bad port"),
    ("mqtt://127.0.0.1/a/#", "without + or # wildcards"),
    ("mqtt://127.0.0.1/a/+", "without + or # wildcards"),
    # a '#' in a password was said to be a wildcard (it starts the URL's fragment)
    ("mqtt://alice:pa#ss@127.0.0.1/t", "is written %23"),
    # {stream} (a topic per stream) is the one placeholder, and leaves a level for the status
    ("mqtt://127.0.0.1/cam{stream}", "leaves none for the status topic"),
    ("mqtt://127.0.0.1/dbrt/{name}", "unknown placeholder '{name}'"),
    ("mqtt://127.0.0.1/dbrt/cam{stream", "unknown placeholder '{stream'"),
    ("mqtt://127.0.0.1/dbrt/+/{stream}", "without + or # wildcards"),
])
def test_bad_broker_url_is_one_line(url, message, capsys):
    assert main(["run", "--mqtt", url, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --mqtt" in err[0] and message in err[0], err


def test_a_password_for_a_url_without_a_user_is_refused():
    """MqttSink(url, password=...) with no user in the URL went without the password silently
    (the command line refuses DBRT_MQTT_PASSWORD so)."""
    pytest.importorskip("paho.mqtt.client")
    from engine.errors import DbrtError
    from pipeline.mqtt import MqttSink

    with pytest.raises(DbrtError, match="a password needs a user name in the URL"):
        MqttSink("mqtt://127.0.0.1:1/t", password="secret")


@pytest.mark.skipif(__import__("importlib").util.find_spec("rapidocr") is None,
                    reason="the PP-OCR rec model comes with the rapidocr wheel")
def test_text_events_are_published_as_well(tmp_path, broker):
    """--read --track --events-every: every line of events.jsonl (starts, updates and ends)
    also reaches the broker as a "text" event, next to the per-frame "detections" events; a
    track's start event is its first, once, right after its first frame's detections event."""
    pytest.importorskip("supervision")
    subscriber = Subscriber(broker.port, TOPIC)
    out = tmp_path / "out"
    proc = dbrt("run", "--read", "--track", "--events-every", "0.4", "--max-frames", "30",
                "--max-side", "320", "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}",
                "--no-video", "--quiet", "-o", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert {e["event"] for e in lines} == {"start", "update", "end"}
    assert report["mqtt"]["acked_total"] == 30 + len(lines) == report["mqtt"]["published_total"]
    deadline = time.monotonic() + 60  # acknowledged by the broker: on their way to the subscriber
    while len(subscriber.received()) < 30 + len(lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    subscriber.close()
    received = subscriber.received()
    texts = [e for e in received if e["type"] == "text"]
    assert len([e for e in received if e["type"] == "detections"]) == 30
    assert [{k: v for k, v in e.items() if k not in ("type", "time")} for e in texts] == lines
    assert all(isinstance(e["time"], float) for e in texts)
    assert any(e["text"] for e in texts)
    # a text event comes after the detections event of the frame it names as its last: an
    # update went out before its own frame's event (the text events' sink wrote first)
    published, heard = set(), {}
    for e in received:
        if e["type"] == "detections":
            published.add(e["frame_index"])
        else:
            assert e["last_frame"] in published, (e, max(published, default=None))
            heard.setdefault(e["track_id"], []).append(e["event"])
        if e["type"] == "text" and e["event"] == "start":  # as its first frame's event is out
            assert max(published) == e["first_frame"] == e["last_frame"], e
    assert all(kinds[0] == "start" and kinds.count("start") == 1 for kinds in heard.values())


def test_event_is_the_jsonl_line_plus_type_stream_time():
    """The event reuses the frame's JSON-lines encoding, yet reads byte for byte as the whole
    object encoded at once: the source without credentials, text as UTF-8 (the line escapes it)."""
    import numpy as np

    from pipeline.detections import Detections, FrameResult
    from pipeline.mqtt import event
    from pipeline.sources import Frame

    quad = np.array([[1.234, 2], [3, 4], [5, 6], [7, 8.555]], np.float32)
    for texts in (["EXIT", "a\\u"], ["Straße", "x\x01"]):
        detections = Detections((quad, quad + 1), np.array([0.5, 0.75], np.float32),
                                {"text": np.array(texts), "track_id": np.array([3, 4])})
        frame = Frame(np.zeros((36, 64, 3), np.uint8), 7, 0.28, "rtsp://u:pw@cam/1", stream=2)
        line = FrameResult(frame, detections).to_json()
        assert line == json.dumps(FrameResult(frame, detections).to_dict(), separators=(",", ":"))
        payload = event(frame, detections, "rtsp://cam/1")
        body = dict(json.loads(line), source="rtsp://cam/1")
        expected = {"type": "detections", "stream": 2, "time": json.loads(payload)["time"], **body}
        assert payload == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))


def broker_with_user(tmp_path, user: str, password: str) -> "Mosquitto":
    """A started broker that takes only `user` logging in with `password`."""
    import shutil
    import subprocess

    binary = mosquitto_or_skip()
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    users = tmp_path / "users"
    subprocess.run([passwd, "-b", "-c", str(users), user, password], check=True)
    users.chmod(0o600)
    return Mosquitto(binary, tmp_path, password_file=users).start()


def test_a_refused_login_ends_the_run_with_one_line_naming_it(tmp_path, capsys):
    server = broker_with_user(tmp_path, "alice", "right")
    try:
        rc = main(["run", "--mqtt", f"mqtt://alice:wrong@127.0.0.1:{server.port}/{TOPIC}",
                   "--no-video", "--quiet", "-o", str(tmp_path / "out"), "--max-frames", "40"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert rc == 2 and "the broker refused the login" in err and "wrong" not in err, err


def test_the_broker_password_is_not_in_its_repr():
    """repr(BrokerUrl) (a log line, a traceback's locals, a debugger) showed the password."""
    from pipeline.mqtt import parse_broker_url

    broker = parse_broker_url("mqtt://mq:S3cr3t@broker:1883/site/dbrt")
    assert broker.password == "S3cr3t" and "S3cr3t" not in repr(broker)


def test_the_broker_password_can_come_from_the_environment(tmp_path, capsys, monkeypatch):
    """A password had to be in --mqtt's URL, where every local user sees it in `ps`: the URL
    now names the user only and DBRT_MQTT_PASSWORD holds the password."""
    server = broker_with_user(tmp_path, "alice", "r+ght@x")
    monkeypatch.setenv("DBRT_MQTT_PASSWORD", "r+ght@x")
    try:
        rc = main(["run", "--mqtt", f"mqtt://alice@127.0.0.1:{server.port}/{TOPIC}",
                   "--no-video", "--quiet", "-o", str(tmp_path / "out"), "--max-frames", "5"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert rc == 0 and "r+ght" not in err, err
    mqtt = json.loads((tmp_path / "out" / "report.json").read_text())["mqtt"]
    assert mqtt["acked_total"] == 5, mqtt


@pytest.mark.parametrize("value,url,message", [
    ("", "mqtt://alice@broker/t", "DBRT_MQTT_PASSWORD is set but empty"),
    ("pw", "mqtt://broker/t", "DBRT_MQTT_PASSWORD is set but --mqtt names no user"),
])
def test_a_broker_password_variable_that_cannot_apply_is_one_line(value, url, message, capsys,
                                                                   monkeypatch, tmp_path):
    monkeypatch.setenv("DBRT_MQTT_PASSWORD", value)
    assert main(["run", "--mqtt", url, "--no-video", "--quiet", "--max-frames", "1",
                 "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_the_url_password_wins_over_the_variable(monkeypatch):
    from pipeline.commands._passwords import mqtt_password as _mqtt_password
    from pipeline.mqtt import MqttSink

    monkeypatch.setenv("DBRT_MQTT_PASSWORD", "from-env")
    assert _mqtt_password(None) is None  # no --mqtt: the variable means nothing
    sink = MqttSink("mqtt://u:in-url@127.0.0.1:1/t", password=_mqtt_password("mqtt://u@h/t"))
    other = MqttSink("mqtt://u@127.0.0.1:1/t", password="from-env")
    try:
        assert sink.broker.password == "in-url" and other.broker.password == "from-env"
    finally:
        sink.close()
        other.close()


def test_the_report_says_whether_the_broker_was_there_when_the_run_ended(broker, capsys):
    """The sink's own disconnect at close cleared `connected`: report.json always said false,
    and a broker that was there but did not acknowledge in time (stalled, a dead link not yet
    noticed) was reported as "not connected at the end"."""
    import numpy as np

    from pipeline.commands._network import print_network_summary
    from pipeline.detections import Detections
    from pipeline.mqtt import MqttSink
    from pipeline.sources import Frame

    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0, 0.0, "cam")
    nothing = Detections(np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32))
    answered = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}")
    until(lambda: answered.connected, "the sink to connect", 60)
    answered.write(frame, nothing)
    answered.close()
    assert answered.counters()["connected"] and answered.counters()["queued"] == 0

    stalled = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", flush_s=0.3)
    until(lambda: stalled.connected, "the sink to connect", 60)
    broker.proc.send_signal(signal.SIGSTOP)  # connected, answering nothing
    try:
        stalled.write(frame, nothing)
        stalled.close()
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    counters = stalled.counters()
    assert counters["connected"] and counters["queued"] == 1, counters
    print_network_summary({"mqtt": counters})
    err = capsys.readouterr().err
    assert "not connected" not in err and "had not acknowledged 1 events" in err, err


def test_the_counters_name_the_broker_without_the_password():
    """report.json's `mqtt` and /api/status's `outputs.mqtt` did not say which broker and topic
    their counts are of (--restream's name their URL)."""
    from pipeline.mqtt import MqttSink

    sink = MqttSink("mqtt://alice:S3cr3t@127.0.0.1:1/site7/dbrt")
    try:
        counters = sink.counters()
    finally:
        sink.close()
    assert counters["url"] == "mqtt://alice@127.0.0.1:1/site7/dbrt"
    assert "S3cr3t" not in str(counters)


def test_a_broker_back_is_found_within_eight_seconds():
    """The reconnect back-off doubled to 16 s: after a 15 s outage the broker was found 17 s
    after it was back, while a 1000-event outbox of several cameras fills in 10 s."""
    from pipeline.mqtt import MqttSink

    sink = MqttSink("mqtt://127.0.0.1:1/site7/dbrt")
    try:
        assert sink.client._reconnect_max_delay == 8  # paho's reconnect_delay_set(max_delay=)
    finally:
        sink.close()
