"""Helpers of the --serve / --mqtt tests: free loopback ports, a `dbrt run` subprocess, HTTP
gets with retries while the server starts, and an MJPEG part reader."""
from __future__ import annotations

import getpass
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

from media import free_port  # noqa: F401 - the tests import it from here

REPO = Path(__file__).resolve().parents[1]


def dbrt(*args, env=None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def get(port: int, path: str, headers=None, timeout: float = 10.0) -> Tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def wait_until(check, proc: subprocess.Popen, what: str, limit_s: float = 120.0):
    """Poll `check()` until it returns a truthy value (connection errors count as not yet);
    fails when the run ended first or after `limit_s` (a safety net, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read()}")
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def mjpeg_parts(port: int, stream: int, count: int, query: str = "") -> Iterator[bytes]:
    """The first `count` JPEG parts of /stream/<stream>.mjpg (framing read from the headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/stream/{stream}.mjpg{query}")
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type").startswith("multipart/x-mixed-replace")
        for _ in range(count):
            headers = {}
            line = response.fp.readline()
            while line.strip() == b"":
                line = response.fp.readline()
            assert line.startswith(b"--"), line
            while True:
                line = response.fp.readline().strip()
                if not line:
                    break
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            yield response.fp.read(int(headers["content-length"]))
    finally:
        conn.close()


class Mosquitto:
    """A real Mosquitto broker on a free loopback port, with persistence so that a durable
    subscriber keeps its subscription and its queued messages across `restart()`."""

    def __init__(self, binary: str, folder: Path):
        self.binary = binary
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        # as root, mosquitto would switch to its own user, which cannot write the test's folder
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               f"persistence true\npersistence_location {folder}/\n"
                               f"user {getpass.getuser()}\n")
        self.proc = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"mosquitto did not start: {self.proc.stderr.read()}")
                time.sleep(0.05)
        raise AssertionError("mosquitto did not accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # saves the persistence file
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Subscriber:
    """A durable (clean_session=False) QoS 1 subscriber that collects JSON payloads."""

    def __init__(self, port: int, topic: str):
        import json
        import threading

        import paho.mqtt.client as mqtt

        self.events, self._lock = [], threading.Lock()
        self._json = json
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dbrt-test-sub",
                                  clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.events.append(self._json.loads(message.payload))

    def received(self) -> list:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
