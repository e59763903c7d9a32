"""Helpers of the --serve / --mqtt tests: free loopback ports, a `dbrt run` subprocess, HTTP
gets with retries while the server starts, an MJPEG part reader, a real Mosquitto broker (plain
and TLS listeners), a durable subscriber and throwaway TLS certificates (openssl)."""
from __future__ import annotations

import getpass
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Tuple

from engine.triton.ports import free_port

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

    def __init__(self, binary: str, folder: Path, tls: Optional[Tuple[Path, Path, Path]] = None,
                 password_file: Optional[Path] = None):
        """tls: (CA, server certificate, server key) PEM files: a second listener, on
        `tls_port`, speaks TLS with them (`port` stays plain). password_file (mosquitto_passwd
        format): only its users may connect."""
        self.binary = binary
        self.folder, self.tls, self.password_file = folder, tls, password_file
        self.config = folder / "mosquitto.conf"
        self.proc = None
        self._write_config()

    def _write_config(self) -> None:
        """On free ports: a port another process takes between free_port() and the broker's
        bind is met by `start` writing it again on other ports."""
        self.port = free_port()
        # as root, mosquitto would switch to its own user, which cannot write the test's folder
        login = f"allow_anonymous false\npassword_file {self.password_file}\n" \
            if self.password_file else "allow_anonymous true\n"
        text = (f"{login}persistence true\npersistence_location {self.folder}/\n"
                f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n")
        self.tls_port = None
        if self.tls is not None:
            self.tls_port = free_port()
            ca, cert, key = self.tls
            text += (f"listener {self.tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\n"
                     f"keyfile {key}\n")
        self.config.write_text(text)

    def start(self) -> "Mosquitto":
        for attempt in range(3):
            error = self._started()
            if error is None:
                return self
            if "in use" not in error or attempt == 2:
                raise AssertionError(f"mosquitto did not start: {error}")
            self._write_config()  # a port taken meanwhile (other tests' servers): others
        return self

    def _started(self) -> Optional[str]:
        """None once the broker accepts connections, else its error output."""
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(0.2)  # the port answered: the broker's, unless it exits on a bind
            except OSError:
                time.sleep(0.05)
            else:
                if self.proc.poll() is None:
                    return None
            if self.proc.poll() is not None:
                return self.proc.stderr.read().decode(errors="replace")
        raise AssertionError("mosquitto did not accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # saves the persistence file
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        """On the same ports (a client reconnects to them)."""
        self.stop()
        error = self._started()
        if error is not None:
            raise AssertionError(f"mosquitto did not start again: {error}")


class Subscriber:
    """A durable (clean_session=False) QoS 1 subscriber that collects JSON payloads (and, for
    a wildcard topic, the topic of each: `received_on`)."""

    def __init__(self, port: int, topic: str):
        import json
        import threading

        import paho.mqtt.client as mqtt

        self.events, self.topics, self._lock = [], [], threading.Lock()
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
            self.topics.append(message.topic)

    def received(self) -> list:
        with self._lock:
            return list(self.events)

    def received_on(self, topic: str) -> list:
        with self._lock:
            return [e for e, t in zip(self.events, self.topics) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def find_mosquitto() -> Optional[str]:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None)


def mosquitto_or_skip() -> str:
    """The mosquitto binary; skips the test with the install hint where it is absent."""
    binary = find_mosquitto()
    if binary is None:
        import pytest

        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    return binary


def throwaway_ca(folder: Path, name: str) -> Tuple[Path, Path]:
    """A fresh self-signed CA (certificate, key) made with the openssl command."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def server_certificate(folder: Path, ca: Tuple[Path, Path]) -> Tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost signed by `ca`: (certificate, key)."""
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
                          "keyUsage=critical,digitalSignature\n"
                          "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extensions)
    key.chmod(0o600)
    return cert, key


def _openssl(*args) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
