"""Helpers of the --serve / --mqtt tests: free loopback ports, a `dbrt run` subprocess, HTTP
gets with retries while the server starts, and an MJPEG part reader."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
