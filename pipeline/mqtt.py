"""`--mqtt`: per-frame detection events as JSON to an MQTT broker (paho-mqtt).

    sink = MqttSink("mqtt://user:pass@broker:1883/dbrt/events")
    sink = MqttSink("mqtt://broker/dbrt/cam{stream}", empty="first")  # stream N: dbrt/camN
    pipe.sinks.append(sink)

`{stream}` in the topic gives each stream its own; `empty="first"` skips a stream's frames
without detections but the first of each run of them (pipeline.mqtt_routing).

QoS 1 (the broker acknowledges every event). paho's network thread connects in the background
and reconnects with back-off (`min_delay` doubling up to `max_delay` seconds) while the run goes
on; events published meanwhile wait in a bounded outbox (`max_queued`) and are sent after the
reconnect; when it is full while the broker is away, new events are dropped and counted
(`counters()["dropped_total"]`); while it is connected, an event waits (up to a second) for room.
`write` blocks the pipeline only then.

Whether dbrt is there: `TOPIC/status` (with {stream}: the levels before it, plus /status) holds
a retained `{"type": "status", "state": "online"}` published on each connection, and `"offline"`
published at the end of the run, or by the broker (the connection's last will) when the
connection is lost without a goodbye: a crash, a kill, a network cut noticed after 1.5
keep-alive periods (45 s).

mqtts:// verifies the broker's certificate against the system's CAs, or against the CA in
`?ca=FILE`; a certificate refused ends the run with one line.

Payload (one JSON object per frame, the JSONL line, `Detections.to_records` included, plus
`type` and `time`):
    {"type": "detections", "source": "rtsp://cam1/stream", "stream": 0, "frame_index": 412,
     "timestamp": 16.48, "time": 1764467200.123, "frame_size": [720, 1280],
     "detections": [{"polygon": [[x, y], ...], "score": 0.91}, ...]}
Per-detection columns of `Detections.data` (recognised `text`, track ids) appear in each
detection object. With tracking, each text-event line (pipeline.reading.events: per track an
`"event": "start"` as it is first reported and an `"event": "end"` as it ends, and with `every`
periodic `"event": "update"` lines) is published too, as the line plus `"type": "text"` and
`time` (`publish_text_event`).
"""
from __future__ import annotations

import json
import os
import ssl
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import DbrtError
from engine.lazy import require

from .detections import Detections, frame_fields, with_detections_json
from .mqtt_routing import EmptyFrames, check_topic, events_topic, status_topic
from .sinks import Sink
from .sources import Frame
from .sources.base import shown_source, without_credentials

# MQTT 5 reason codes (paho maps MQTT 3.1.1 return codes 4 and 5 to them)
_LOGIN_REFUSED = (0x86, 0x87)  # bad user name or password, not authorised


@dataclass(frozen=True)
class BrokerUrl:
    tls: bool
    host: str
    port: int
    topic: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)  # kept out of logs and tracebacks
    ca: Optional[str] = None  # mqtts: the CA certificate (PEM) that signed the broker's

    @property
    def safe(self) -> str:
        """The URL without the password (for messages)."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.topic}"


def parse_broker_url(text: str) -> BrokerUrl:
    """mqtt[s]://[user[:password]@]HOST[:PORT]/TOPIC[?ca=FILE]; ValueError says what is wrong.
    ca=FILE (mqtts only): trust the broker's certificate when this CA (PEM) signed it, instead
    of the system's CAs (a private CA, a self-signed broker)."""
    if "#" in text:  # a wildcard, or a password's '#', which starts a URL's fragment
        raise ValueError("a '#' is not taken: events go to topics without + or # wildcards, "
                         "and a '#' in a user name or password is written %23")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # a port that is not a number or out of range
        raise ValueError(f"bad port ({exc})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError("no broker host")
    topic = unquote(parts.path.lstrip("/"))
    check_topic(topic)
    tls = parts.scheme == "mqtts"
    return BrokerUrl(tls, parts.hostname, port or (8883 if tls else 1883), topic,
                     unquote(parts.username) if parts.username else None,
                     unquote(parts.password) if parts.password else None,
                     _ca_option(parts.query, tls))


def _ca_option(query: str, tls: bool) -> Optional[str]:
    """The one query option, ?ca=FILE (mqtts only), checked to be a file."""
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"ca"})
    if unknown or (query and not options):
        raise ValueError(f"unknown option {(unknown or [query])[0]!r}; the one option is "
                         "?ca=FILE (mqtts://)")
    if "ca" not in options:
        return None
    ca = options["ca"][-1]
    if not tls:
        raise ValueError("?ca=FILE is for TLS: use mqtts://")
    if not Path(ca).is_file():
        raise ValueError(f"ca={ca}: no such file")
    return ca


def event(frame: Frame, detections: Detections, source_name: str, decimals: int = 2) -> str:
    """The JSON of one frame's detections (see the module docstring). The detections' JSON is
    the one the JSON-lines sink wrote for this frame, unless it escaped non-ASCII text."""
    detections_json = detections.records_json(decimals)
    if "\\u" in detections_json:  # the event carries text as UTF-8, not as \u escapes
        detections_json = json.dumps(detections.to_records(decimals), ensure_ascii=False,
                                     separators=(",", ":"))
    head = {"type": "detections", "stream": int(frame.stream), "time": round(time.time(), 3),
            **frame_fields(frame), "source": source_name}  # source keeps its place, 4th
    return with_detections_json(head, detections_json, ensure_ascii=False)


def status_payload(state: str) -> str:
    return json.dumps({"type": "status", "state": state}, separators=(",", ":"))


def text_event(line: dict) -> dict:
    """The MQTT event of one text-event line: the line plus `type` "text" and `time`."""
    body = dict(line, source=without_credentials(str(line.get("source", ""))))
    return {"type": "text", "time": round(time.time(), 3), **body}


ROOM_WAIT_S = 1.0  # how long an event waits for room in a full outbox while the broker is there
STATUS_ROOM = 2  # paho's outbox holds this many status messages beyond the events' max_queued
OFFLINE_WAIT_S = 0.5  # the least the end of the run waits for the broker to take "offline"


class MqttSink(Sink):
    """Publishes one event per frame to `url`'s topic (with {stream}: the frame's stream's),
    QoS 1, from paho's own thread.

    max_queued: events waiting for the broker at most (in flight included); more are dropped
                while the broker is away (while it is connected, an event waits up to
                ROOM_WAIT_S for the acknowledgements that make room)
    min_delay, max_delay: reconnect back-off in whole seconds (doubling from min to max; the
                max is also how long events may wait once the broker is back: 8 s, as
                --restream's)
    password: for a URL that names a user without one (the CLI's DBRT_MQTT_PASSWORD)
    empty: "every" frame's event, or only the "first" of a stream's frames without detections
                (pipeline.mqtt_routing.EmptyFrames; the others are counted as skipped)
    Source names lose any user:password part. The status topic says "online" / "offline"
    (retained; "offline" also as the last will), outside the event counters and the outbox.
    """

    def __init__(self, url: str, max_queued: int = 1000, min_delay: int = 1, max_delay: int = 8,
                 keepalive: int = 30, flush_s: float = 2.0, password: Optional[str] = None,
                 empty: str = "every"):
        try:
            self.broker = parse_broker_url(url)
            self._empty = EmptyFrames(empty)
        except ValueError as exc:
            raise DbrtError(f"--mqtt {without_credentials(url)!r}: {exc}") from None
        if password is not None and self.broker.username is None:  # it would go unused
            raise DbrtError(f"--mqtt {self.broker.safe}: a password needs a user name in the "
                            "URL (mqtt://USER@HOST/TOPIC)")
        if password is not None and self.broker.password is None:
            self.broker = replace(self.broker, password=password)
        mqtt = require("paho.mqtt.client")
        self.max_queued = max_queued
        self._ok = {mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN}  # NO_CONN: queued until back
        self._full = mqtt.MQTT_ERR_QUEUE_SIZE
        self._stalled = False  # a wait for room timed out: no more waits until there is room
        self.flush_s = flush_s
        # each counter has one writer (the sink thread, or paho's): no lock on the event path
        self._published = self._dropped = self._acked = self._connects = 0
        self._status_mids: set = set()  # paho's thread only: "online" messages not acknowledged
        self._counting_acks = True  # False once close() sends "offline": its ack is no event's
        self.connected = False
        self.fatal: Optional[str] = None  # a refused certificate or login: the run stops with it
        self.last_error: Optional[str] = None  # why the last connection attempt failed
        self._fatal_raised = False
        self.client = self._client(mqtt, max_queued, min_delay, max_delay)
        self.client.connect_async(self.broker.host, self.broker.port, keepalive)
        self.client.loop_start()

    def _client(self, mqtt, max_queued: int, min_delay: float, max_delay: float):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"dbrt-{os.getpid()}-{os.urandom(3).hex()}")
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            try:
                client.tls_set(ca_certs=self.broker.ca)
            except ssl.SSLError as exc:
                raise DbrtError(f"--mqtt {self.broker.safe}: ca={self.broker.ca}: not a PEM CA "
                                f"certificate ({exc.reason or exc})") from None
        client.max_queued_messages_set(max_queued + STATUS_ROOM)  # _offer keeps events to theirs
        client.will_set(status_topic(self.broker.topic), status_payload("offline"), qos=1,
                        retain=True)
        client.reconnect_delay_set(min_delay=min_delay, max_delay=max_delay)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        return client

    # -- paho's thread ------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if not reason_code.is_failure:
            self._connects += 1
            self.connected = True
            self.last_error = None
            if not self._status_mids:  # an earlier one still unacknowledged is sent again
                info = client.publish(status_topic(self.broker.topic), status_payload("online"),
                                      qos=1, retain=True)
                if info.rc in self._ok:  # a refused one would be awaited for good
                    self._status_mids.add(info.mid)
            return
        self.last_error = f"the broker refused the connection: {reason_code}"
        if reason_code.value in _LOGIN_REFUSED:  # retrying the same login does not heal
            self.fatal = (f"--mqtt {self.broker.safe}: the broker refused the login "
                          f"({reason_code}); check the user and password in the URL")
            client.disconnect()

    def _on_connect_fail(self, client, userdata) -> None:
        """A refused broker certificate does not heal by retrying: stop the client and let the
        next write end the run with one line. (paho calls this inside its `except OSError`.)"""
        exc = sys.exc_info()[1]
        if exc is not None:
            self.last_error = str(exc) or type(exc).__name__
        if not isinstance(exc, ssl.SSLCertVerificationError):
            return  # broker down or unreachable: paho retries with back-off
        hint = ("is ca= the CA that signed it?" if self.broker.ca else
                "for a private CA, add ?ca=FILE")
        self.fatal = (f"--mqtt {self.broker.safe}: the broker's TLS certificate was refused "
                      f"({exc.verify_message or exc.reason}); {hint}")
        client.disconnect()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if self.client is None:  # our own disconnect at close: `connected` goes on saying
            return  # whether the broker was there when the run ended
        self.connected = False

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        if mid in self._status_mids:
            self._status_mids.discard(mid)
        elif self._counting_acks:
            self._acked += 1

    # -- the pipeline's sink thread -------------------------------------------------------------
    def write(self, frame: Frame, detections: Detections) -> None:
        self._raise_fatal()
        stream, count = int(frame.stream), len(detections)
        if not self._empty.wanted(stream, count, max(0, self._connects - 1)):
            return  # before the event is made: a skipped frame costs next to nothing
        if self._publish(event(frame, detections, shown_source(frame.source)), stream):
            self._empty.published(stream, count)

    def publish_text_event(self, line: dict) -> None:
        """One text-event line (pipeline.reading.events) as a `"type": "text"` event, to its
        `stream`'s topic; a TextEventSink's listener. Lines that come after `close` are
        dropped and counted."""
        self._publish(json.dumps(text_event(line), ensure_ascii=False, separators=(",", ":")),
                      int(line.get("stream", 0)))

    def _publish(self, payload: str, stream: int) -> bool:
        """Whether the event was handed to the client (else it is counted as dropped)."""
        client, topic = self.client, events_topic(self.broker.topic, stream)
        rc = self._offer(client, topic, payload) if client else None
        if rc == self._full and self.connected and not self._stalled:
            # a burst (a stream's tracks ending together) fills the outbox with events in
            # flight while the broker is there: their acknowledgements free it within
            # milliseconds. A broker that acknowledges nothing for ROOM_WAIT_S stalls the run
            # once, not once per event: later events are dropped until there is room again
            deadline = time.monotonic() + ROOM_WAIT_S
            while rc == self._full and self.connected and time.monotonic() < deadline:
                time.sleep(0.002)
                rc = self._offer(client, topic, payload)
            self._stalled = rc == self._full
        elif rc in self._ok:
            self._stalled = False
        if rc in self._ok:
            self._published += 1
        else:
            self._dropped += 1
        return rc in self._ok

    def _offer(self, client, topic: str, payload: str):
        """paho's answer to one event; full while max_queued events await their
        acknowledgement (paho's own limit leaves the status messages room beyond them)."""
        if self._published - self._acked >= self.max_queued:
            return self._full
        return client.publish(topic, payload, qos=1).rc

    def counters(self) -> dict:
        """url (the broker and topic, without the password, as --restream's counters name
        theirs), published_total (handed to the client), acked_total (confirmed by the broker),
        dropped_total (outbox full), queued (waiting), skipped_empty_total (frames without
        detections not published: empty="first"), connected (after `close`: when it closed),
        reconnects_total, last_error (why the last connection attempt failed, None once
        connected). One set for all the streams, whatever their topics."""
        acked = self._acked  # before published: both only grow, so queued is never negative
        published = self._published
        return dict(url=self.broker.safe, published_total=published, acked_total=acked,
                    dropped_total=self._dropped, queued=published - acked,
                    skipped_empty_total=self._empty.skipped, connected=self.connected,
                    reconnects_total=max(0, self._connects - 1), last_error=self.last_error)

    def _say_offline(self, client, deadline: float) -> None:
        """The retained "offline", to a broker that is there (a clean disconnect drops the last
        will, which would have said it): acknowledged within the flush time, or half a
        second. Acknowledgements from now on are no longer counted as events'."""
        self._counting_acks = False
        if not self.connected:
            return  # the broker sends the last will once it notices the lost connection
        info = client.publish(status_topic(self.broker.topic), status_payload("offline"), qos=1,
                              retain=True)
        deadline = max(deadline, time.monotonic() + OFFLINE_WAIT_S)
        while not info.is_published() and self.connected and time.monotonic() < deadline:
            time.sleep(0.01)

    def _may_still_send(self) -> bool:
        """Connected, or still making the first connection (no refused certificate or login)."""
        return self.connected or (self._connects == 0 and self.fatal is None)

    def _raise_fatal(self) -> None:
        if self.fatal and not self._fatal_raised:
            self._fatal_raised = True
            raise DbrtError(self.fatal)

    def close(self) -> None:
        """Wait up to `flush_s` for queued events while connected -- or while the first
        connection is still being made (a run shorter than the connection, e.g. a slow TLS
        handshake: its events are queued and would otherwise never be sent) --, then
        disconnect. A connection lost after the first one is not waited for."""
        if self.client is None:
            return
        deadline = time.monotonic() + self.flush_s
        while self.counters()["queued"] > 0 and self._may_still_send() \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        client, self.client = self.client, None
        self._say_offline(client, deadline)
        client.disconnect()
        client.loop_stop()
        self._raise_fatal()
