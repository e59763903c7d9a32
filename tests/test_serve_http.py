"""The --serve HTTP server against clients that misbehave: a request trickled a byte at a time,
idle connections, more viewers than connections, HEAD on /metrics, the Bearer scheme's case."""
from __future__ import annotations

import socket
import time

import pytest

from pipeline.runner import Pipeline

from media import FakeDetector, SimulatedCamera
from serve_helpers import get

pytest.importorskip("prometheus_client")


@pytest.fixture
def served(monkeypatch):
    """A ServeSink of a pipeline that is not running (the server answers all the same), with a
    1 s request deadline and room for 6 connections (2 viewers)."""
    from pipeline.serve import ServeSink
    from pipeline.serve import http

    monkeypatch.setattr(http._Handler, "request_deadline", 1.0)
    pipe = Pipeline([SimulatedCamera(total=10)], FakeDetector())
    sink = ServeSink(pipe, port=0, token="tok", max_connections=6)
    yield sink, sink.server.port
    sink.close()
    pipe.close()


AUTH = {"Authorization": "Bearer tok"}


def test_a_trickled_request_is_dropped_at_its_deadline(served, capfd):
    sink, port = served
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nX-a: ")
        slow.settimeout(0.1)
        started, dropped = time.monotonic(), False
        for _ in range(30):  # a byte every 0.1 s: no read ever times out, the deadline does
            try:
                slow.sendall(b"a")
                dropped = slow.recv(1) == b""
            except socket.timeout:
                continue
            except OSError:
                dropped = True
            if dropped:
                break
        assert dropped and time.monotonic() - started < 2.5
    assert "Traceback" not in capfd.readouterr().err


def test_viewers_beyond_their_share_get_503_and_probes_still_get_in(served):
    sink, port = served
    viewers = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nAuthorization: Bearer tok\r\n\r\n")
        viewers.append(s)
    time.sleep(0.3)
    try:
        assert get(port, "/stream/0.mjpg", AUTH)[0] == 503
        assert get(port, "/healthz", AUTH)[0] in (200, 503)  # answered, whatever the health
        assert get(port, "/metrics", AUTH)[0] == 200
    finally:
        for s in viewers:
            s.close()
    time.sleep(0.3)


def test_head_on_metrics_and_a_lower_case_bearer(served):
    sink, port = served
    status, body, _ = get(port, "/metrics", {"Authorization": "bearer tok"})
    assert status == 200 and b"dbrt_" in body
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("HEAD", "/metrics", headers=AUTH)
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()
