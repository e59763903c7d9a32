"""The --serve HTTP server against clients that misbehave: a request trickled a byte at a time,
idle connections, more viewers than connections, HEAD on /metrics, the Bearer scheme's case."""
from __future__ import annotations

import socket
import time

import pytest

from pipeline.runner import Pipeline

from media import FakeDetector, SimulatedCamera, until
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


def test_a_trickled_request_is_dropped_at_its_deadline(served, capfd, monkeypatch):
    from pipeline.serve import http

    # a read timeout far beyond the test's own limit: only the 1 s request deadline can drop it
    monkeypatch.setattr(http._Handler, "timeout", 3600.0)
    deadline_drops = []
    drop = http._Handler._drop

    def recorded_drop(self):
        deadline_drops.append(1)
        drop(self)

    monkeypatch.setattr(http._Handler, "_drop", recorded_drop)
    sink, port = served
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nX-a: ")
        slow.settimeout(0.1)
        limit, dropped = time.monotonic() + 30, False  # a safety net, not a measurement
        while not dropped and time.monotonic() < limit:  # a byte every 0.1 s, headers never end
            try:
                slow.sendall(b"a")
                dropped = slow.recv(1) == b""
            except socket.timeout:
                continue
            except OSError:
                dropped = True
        assert dropped and deadline_drops == [1]
    assert "Traceback" not in capfd.readouterr().err


def test_viewers_beyond_their_share_get_503_and_probes_still_get_in(served):
    sink, port = served
    viewers = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nAuthorization: Bearer tok\r\n\r\n")
        viewers.append(s)
    slots = sink.server.server.get_app()._stream_slots  # no public count of the viewers
    until(lambda: slots._value == 0, "both viewers to hold the two stream slots")
    try:
        assert get(port, "/stream/0.mjpg", AUTH)[0] == 503
        assert get(port, "/healthz", AUTH)[0] in (200, 503)  # answered, whatever the health
        assert get(port, "/metrics", AUTH)[0] == 200
    finally:
        for s in viewers:
            s.close()
    time.sleep(0.3)


def test_idle_connections_holding_every_slot_make_room_for_a_probe(served, monkeypatch):
    """Connections that sent nothing held every slot until their request deadline: /healthz
    and /metrics were refused meanwhile (a client could renew them for ever). The oldest of
    them now makes room for a new connection."""
    from pipeline.serve import http

    monkeypatch.setattr(http._Handler, "request_deadline", 3600.0)  # only eviction can help
    sink, port = served
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        slots = sink.server.server._slots  # no public count of the connections
        until(lambda: slots._value == 0, "the 6 idle connections to hold every slot")
        assert get(port, "/healthz", AUTH)[0] in (200, 503)  # answered, whatever the health
        assert get(port, "/metrics", AUTH)[0] == 200
        for s in idle:
            s.setblocking(False)
        until(lambda: any(_closed(s) for s in idle), "the oldest idle connection to be let go")
    finally:
        for s in idle:
            s.close()


def _closed(sock) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


def test_head_on_metrics_and_a_lower_case_bearer(served):
    sink, port = served
    status, body, _ = get(port, "/metrics", {"Authorization": "bearer tok"})
    assert status == 200 and b"dbrt_" in body
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("HEAD", "/metrics", headers=AUTH)
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()
    import socket

    for path in ("/", "/healthz", "/api/status", "/metrics", "/nowhere"):
        # on the wire: http.client reads no body after a HEAD whatever the server sent
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(f"HEAD {path} HTTP/1.0\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n".encode())
            answer = b"".join(iter(lambda: raw.recv(65536), b""))
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 ") and rest == b"", (path, answer[:200])


def test_a_token_with_a_plus_works_as_typed_in_the_address():
    """`?token=` was form-decoded: a "+" became a space, so 4 in 10 base64 tokens
    (`openssl rand -base64 24`) were refused when the page was opened as the README says."""
    from pipeline.serve import ServeSink

    pipe = Pipeline([SimulatedCamera(total=10)], FakeDetector())
    with ServeSink(pipe, port=0, token="q7+Zk/2Rw1=") as sink:
        port = sink.server.port
        assert get(port, "/healthz?token=q7+Zk/2Rw1=")[0] != 401
        assert get(port, "/api/status?n=1&token=q7%2BZk%2F2Rw1%3D")[0] == 200
        assert get(port, "/api/status?token=q7%20Zk/2Rw1=")[0] == 401
        assert get(port, "/api/status?token=q7Zk/2Rw1=")[0] == 401
    pipe.close()


def test_the_newest_picture_is_one_jpeg(served):
    """What the page fetches, one picture per request (an MJPEG tile held a connection for
    good: a browser's 6 per server ran out at the 7th stream)."""
    import cv2
    import numpy as np

    from pipeline.detections import Detections
    from pipeline.sources import Frame

    sink, port = served
    assert get(port, "/stream/0.jpg", AUTH)[:2] == (503, b"no picture yet\n")
    sink.write(Frame(np.full((48, 64, 3), 200, np.uint8), 0, 0.0, "cam", 0),
               Detections.from_quads(np.zeros((0, 4, 2), np.float32), []))
    status, body, headers = get(port, "/stream/0.jpg", AUTH)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    # the page asks for a newer one only: a stalled stream sent the same bytes 10 times a second
    seq = int(headers["X-Frame-Seq"])
    assert get(port, f"/stream/0.jpg?after={seq}", AUTH)[:2] == (204, b"")
    assert get(port, f"/stream/0.jpg?after={seq - 1}", AUTH)[1] == body
    # a page left open while dbrt restarted asks after the earlier run's number: not a 204
    # until this run has shown as many pictures
    assert get(port, f"/stream/0.jpg?after={seq + 5000}", AUTH)[:2] == (200, body)
    assert get(port, "/stream/3.jpg", AUTH)[0] == 404 and get(port, "/stream/0.jpg")[0] == 401


def test_every_answer_carries_the_safety_headers(served):
    """Camera pictures and the status were cacheable when prometheus_client answered, and no
    answer forbade framing, content sniffing or a Referer holding the page's ?token=."""
    sink, port = served
    for path, headers in (("/", AUTH), ("/metrics", AUTH), ("/api/status", AUTH),
                          ("/healthz", AUTH), ("/stream/0.jpg", AUTH), ("/nowhere", AUTH),
                          ("/api/status", {})):
        status, _, answer = get(port, path, headers)
        assert answer.get("X-Content-Type-Options") == "nosniff", (path, answer)
        assert answer.get("X-Frame-Options") == "DENY", (path, answer)
        assert answer.get("Content-Security-Policy") == "frame-ancestors 'none'", (path, answer)
        assert answer.get("Referrer-Policy") == "no-referrer", (path, answer)
        assert answer.get("Cache-Control") == "no-store", (path, answer)


def test_a_loopback_server_without_token_answers_only_local_host_names():
    """DNS rebinding: a web page at evil.example whose name now resolves to 127.0.0.1 sent
    `Host: evil.example:8080` and read the pictures and status of a tokenless loopback view."""
    from pipeline.serve import ServeSink

    pipe = Pipeline([SimulatedCamera(total=10)], FakeDetector())
    with ServeSink(pipe, port=0) as sink:
        port = sink.server.port
        for host in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example"):
            status, body, _ = get(port, "/api/status", {"Host": host})
            assert status == 403 and b"localhost" in body, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST."):
            assert get(port, "/api/status", {"Host": host})[0] == 200, host
    # with a token, or on another address, the name the viewers use is theirs to choose
    with ServeSink(pipe, port=0, token="tok") as sink:
        assert get(sink.server.port, "/api/status", dict(AUTH, Host="edge.lan"))[0] == 200
    pipe.close()


def test_a_request_over_32_kib_of_headers_gets_431(served):
    """The stdlib's limits (100 header lines of 64 KiB each) let 32 clients hold about 200 MB
    of headers for the 10 s request deadline."""
    sink, port = served
    big = {"X-Padding": "a" * 40_000, **AUTH}
    assert get(port, "/healthz", big)[0] == 431
    assert get(port, "/api/status", {"X-Padding": "a" * 20_000, **AUTH})[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(b"GET /healthz HTTP/1.0\r\n" + b"X-a: " + b"a" * 1000 + b"\r\n" * 1)
        raw.sendall((b"X-b: " + b"b" * 1000 + b"\r\n") * 40 + b"\r\n")
        assert b"".join(iter(lambda: raw.recv(65536), b"")).startswith(b"HTTP/1.0 431")


def test_the_server_header_names_no_python_version(served):
    """It said `WSGIServer/0.2 CPython/3.11.7`, also to requests without the token."""
    sink, port = served
    for headers in ({}, AUTH):
        assert get(port, "/api/status", headers)[2]["Server"] == "dbrt"


def test_the_status_counts_detections_under_detection_count(served):
    """/api/status called a count `detections`, the name of the list of detections in
    detections.jsonl, the events, MQTT and report.json."""
    import json

    import numpy as np

    from pipeline.detections import Detections
    from pipeline.sources import Frame

    sink, port = served
    quads = np.array([[[1, 1], [20, 1], [20, 9], [1, 9]], [[30, 1], [50, 1], [50, 9], [30, 9]]])
    assert json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]["detection_count"] == 0
    sink.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0, "cam", 0),
               Detections.from_quads(quads, [0.9, 0.8]))
    entry = json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]
    assert entry["detection_count"] == 2 and "detections" not in entry
    assert "s.detection_count" in get(port, "/", AUTH)[1].decode()  # what the page shows


def test_a_valid_query_token_becomes_a_session_cookie_that_lets_a_reload_in(capfd):
    """The page takes ?token= out of the address bar, so a reload came without it and got 401;
    now a valid ?token= sets an HttpOnly session cookie that later requests may carry instead."""
    from pipeline.serve import ServeSink

    token = "s3+cr/t=;, x%"  # characters a cookie value may not hold as they are
    pipe = Pipeline([SimulatedCamera(total=10)], FakeDetector())
    with ServeSink(pipe, port=0, token=token) as sink:
        port = sink.server.port
        status, _, headers = get(port, "/?token=s3%2Bcr/t=%3B,%20x%25")
        assert status == 200
        name, _, rest = headers["Set-Cookie"].partition("=")
        value, _, attributes = rest.partition("; ")
        assert name == f"dbrt_token_{port}" and attributes == "HttpOnly; SameSite=Strict; Path=/"
        assert token not in headers["Set-Cookie"]  # encoded: no ";", "," or space in a value
        cookie = {"Cookie": f"other=1; {name}={value}"}
        for path in ("/", "/api/status", "/metrics", "/healthz"):
            status, body, answer = get(port, path, cookie)
            assert status in (200, 503) and "Set-Cookie" not in answer, path
            assert token.encode() not in body and value.encode() not in body, path
        assert get(port, "/stream/0.jpg", cookie)[:2] == (503, b"no picture yet\n")
        # only a valid ?token= sets it; a wrong cookie, or another port's, is refused
        assert "Set-Cookie" not in get(port, "/", {"Authorization": f"Bearer {token}"})[2]
        for refused in ({"Cookie": f"{name}=s3"}, {"Cookie": f"dbrt_token_1={value}"},
                        {"Cookie": f"{name}x={value}"}):
            status, body, answer = get(port, "/api/status", refused)
            assert (status, body) == (401, b"missing or wrong token\n") and "Set-Cookie" not in answer
        status, _, answer = get(port, "/api/status?token=s3", cookie)  # a wrong query is not
        assert status == 401 and "Set-Cookie" not in answer  # rescued by the cookie
        assert get(port, "/api/status", dict(cookie, Authorization="Bearer s3"))[0] == 401
    pipe.close()
    out, err = capfd.readouterr()
    assert value not in out + err and "s3+cr" not in out + err


def test_the_status_texts_are_the_detections_texts(served):
    """A detection read as nothing is "" in the status texts, as in detections.jsonl and MQTT
    (null is a track's `track_text` before anything legible was read: another fact); the page
    lists only what was read."""
    import json

    import numpy as np

    from pipeline.detections import Detections
    from pipeline.sources import Frame

    sink, port = served
    quads = np.array([[[1, 1], [20, 1], [20, 9], [1, 9]], [[30, 1], [50, 1], [50, 9], [30, 9]]])
    sink.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0, "cam", 0),
               Detections.from_quads(quads, [0.9, 0.8], {"text": np.array(["EXIT", ""])}))
    assert json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]["texts"] == ["EXIT", ""]
    assert 't !== ""' in get(port, "/", AUTH)[1].decode()  # the page lists what was read


def test_frames_left_out_by_the_sample_rate_are_in_the_status_the_metrics_and_the_page(served):
    import json

    sink, port = served
    source = sink.status.pipeline.sources[0]
    source.stats.add(read=12, delivered=3, sampled_out=9)
    stream = json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]
    assert stream["sampled_out"] == 9
    metrics = get(port, "/metrics", AUTH)[1].decode()
    assert 'dbrt_source_sampled_out_frames_total{source="sim",stream="0"} 9.0' in metrics
    assert '" | sampled out " + s.sampled_out' in get(port, "/", AUTH)[1].decode()


def test_inputs_skipped_are_in_the_status_the_metrics_and_the_page(served):
    """Packets the decoder rejected (a camera's damaged ones) and unreadable images were
    counted in report.json only."""
    import json

    sink, port = served
    sink.status.pipeline.sources[0].stats.add(skipped=4)
    assert json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]["skipped"] == 4
    metrics = get(port, "/metrics", AUTH)[1].decode()
    assert 'dbrt_source_skipped_inputs_total{source="sim",stream="0"} 4.0' in metrics
    assert '" | skipped " + s.skipped' in get(port, "/", AUTH)[1].decode()


def test_the_status_names_each_streams_decoder_as_the_report_does(served, tmp_path):
    """`--hwaccel cuda`'s fallback to software (a codec NVDEC lacks) was said only in the
    summary and report.json at the end of a run; a server running for days shows it live."""
    import json

    from pipeline.sources.hwdecode import Decoding

    sink, port = served
    stream = json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]
    assert (stream["hwaccel"], stream["decoder"]) == (None, None)  # a camera: no video stream
    source = sink.status.pipeline.sources[0]
    source.decoding = Decoding("cuda")
    source.decoding.decoder = "software"
    stream = json.loads(get(port, "/api/status", AUTH)[1])["streams"][0]
    assert (stream["hwaccel"], stream["decoder"]) == ("cuda", "software")
