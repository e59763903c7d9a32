"""Stream passwords kept off the command line (DBRT_SOURCE_PASSWORD, `{DBRT_NAME}` placeholders),
against real MPEG-TS servers on 127.0.0.1 that want HTTP Basic authentication: the password
reaches the camera and nothing else (console, report.json, detections.jsonl, /api/status,
errors, tracebacks)."""
from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import traceback
from urllib.request import urlopen

import pytest

from engine.errors import DbrtError, SourceError
from engine.triton.ports import free_port
from pipeline.runner import Pipeline
from pipeline.sources import NetworkSource, open_source, parse_source

from media import FakeDetector, TsServer, mpegts_bytes
from serve_helpers import dbrt, wait_until

PASSWORD = "p@ss:w/rd %#?&1"  # every character a URL gives a meaning to


class CameraServer(TsServer):
    """A TsServer that streams only to `admin` with `password` (HTTP Basic, as IP cameras do);
    `refused` counts the requests it turned away."""

    def __init__(self, password: str):
        super().__init__(mpegts_bytes(frames=60))
        self.expected = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        self.refused = 0

    def _handler(self):
        owner, streaming = self, super()._handler()

        class Handler(streaming):
            def do_GET(self):
                if self.headers.get("Authorization") == owner.expected:
                    return super().do_GET()
                owner.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def address(self, userinfo: str = "admin") -> str:
        return f"http://{userinfo}@127.0.0.1:{self.port}/live.ts"


@pytest.fixture
def camera():
    server = CameraServer(PASSWORD).start()
    yield server
    server.stop()


def test_the_environments_password_reaches_the_camera_and_nothing_else(camera, tmp_path,
                                                                        tiny_onnx):
    """`rtsp://admin@cam/...` left FFmpeg without a password: the camera refused the run.
    With DBRT_SOURCE_PASSWORD the run streams; dbrt's command line, its console, /api/status,
    report.json and detections.jsonl never hold the password."""
    out, port = tmp_path / "out", free_port()
    proc = dbrt("run", camera.address(), "--model", str(tiny_onnx), "--threads", "1",
                "--serve", str(port), "--no-video", "--quiet", "-o", str(out),
                env={"DBRT_SOURCE_PASSWORD": PASSWORD})
    try:
        def status():
            with urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as answer:
                body = answer.read().decode()
            return json.loads(body)["frames"] >= 3 and body

        shown = wait_until(status, proc, "three frames through the run")
        with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
            shown += cmdline.read().decode(errors="replace")
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    written = (out / "report.json").read_text() + (out / "detections.jsonl").read_text()
    for text in (shown, stdout, stderr, written):
        assert "p@ss" not in text and "p%40ss" not in text
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] >= 3
    assert report["sources"][0]["name"] == f"http://127.0.0.1:{camera.port}/live.ts"


def test_each_camera_takes_its_own_password_from_a_placeholder(monkeypatch):
    """`{DBRT_NAME}` stands for that environment variable: two cameras with passwords of their
    own; the sources keep the URLs as written, placeholders and all."""
    second = CameraServer("other-Pa55").start()
    first = CameraServer(PASSWORD).start()
    try:
        monkeypatch.setenv("DBRT_CAM1_PASSWORD", PASSWORD)
        monkeypatch.setenv("DBRT_CAM2_PASSWORD", "other-Pa55")
        urls = [first.address("admin:{DBRT_CAM1_PASSWORD}"),
                second.address("admin:{DBRT_CAM2_PASSWORD}")]
        report = Pipeline(urls, FakeDetector(), max_frames=5).run()
    finally:
        first.stop()
        second.stop()
    assert [s["delivered"] for s in report["sources"]] == [5, 5]
    assert "p@ss" not in json.dumps(report) and "Pa55" not in json.dumps(report)


def test_a_wrong_password_is_one_line_naming_the_url_without_it(camera):
    """The camera's refusal is the error; neither its line nor its traceback (an application
    logging it) holds the password that was sent."""
    source = NetworkSource(camera.address(), password="Wr0ng-secret", reconnect=None)
    with pytest.raises(SourceError) as caught:
        source.open()
    printed = "".join(traceback.format_exception(caught.type, caught.value, caught.tb))
    assert "401" in str(caught.value) and camera.refused >= 1
    assert f"cannot open http://127.0.0.1:{camera.port}/live.ts: " in str(caught.value)
    assert "Wr0ng" not in printed


@pytest.mark.parametrize("environ, fragment", [
    ({}, "DBRT_CAM1_PASSWORD is not set"),
    ({"DBRT_CAM1_PASSWORD": ""}, "DBRT_CAM1_PASSWORD is empty"),
])
def test_a_placeholder_without_its_variable_is_one_line_naming_it(monkeypatch, environ, fragment):
    monkeypatch.delenv("DBRT_CAM1_PASSWORD", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SourceError, match=fragment):
        open_source("rtsp://admin:{DBRT_CAM1_PASSWORD}@127.0.0.1:1/s")


def test_a_urls_own_password_wins_and_the_rest_of_the_url_stays_as_written():
    from pipeline.sources.passwords import address

    assert address("rtsp://admin:own@cam/1", "env") == "rtsp://admin:own@cam/1"
    assert address("rtsp://admin@cam:554/a/b?x=1#f", "a@b/c") == \
        "rtsp://admin:a%40b%2Fc@cam:554/a/b?x=1#f"
    assert address("rtsp://cam/1", "env") == "rtsp://cam/1"  # no user: nobody to log in as
    assert address("http://cam/snap?pwd={DBRT_X}", environ={"DBRT_X": "a&b"}) == \
        "http://cam/snap?pwd=a%26b"
    assert parse_source("rtsp://admin@cam/1", password="s3cret").name == "rtsp://admin@cam/1"


@pytest.mark.parametrize("specs, value, fragment", [
    (["rtsp://admin@cam/1"], "", "DBRT_SOURCE_PASSWORD is set but empty"),
    (["rtsp://cam/1"], "pw", "no stream URL names a user without a password"),
    (["rtsp://admin:own@cam/1"], "pw", "no stream URL names a user without a password"),
])
def test_a_source_password_nobody_can_take_is_refused(monkeypatch, specs, value, fragment):
    from pipeline.commands._passwords import source_password as _source_password

    monkeypatch.setenv("DBRT_SOURCE_PASSWORD", value)
    with pytest.raises(DbrtError, match=fragment):
        _source_password(specs)


def test_the_hint_of_a_source_password_nobody_can_take_keeps_its_user(monkeypatch):
    """Errors hide a URL's user:password@ part: a hint written as rtsp://USER@HOST/... lost
    the USER@ it was about and told the user to give rtsp://HOST/..., which takes no password."""
    from pipeline.commands._passwords import source_password as _source_password

    monkeypatch.setenv("DBRT_SOURCE_PASSWORD", "pw")
    with pytest.raises(DbrtError) as caught:
        _source_password(["rtsp://cam/1"])
    assert "name the user only, USER@HOST, in an rtsp:// URL" in str(caught.value)


def test_a_login_refused_for_want_of_a_password_says_so(camera, monkeypatch):
    """The name in an error has no user (rtsp://cam/1), so a camera's 401 to a URL that named
    its user alone, run where DBRT_SOURCE_PASSWORD was not set (sudo, a service without its
    environment file), gave no clue that the password was missing."""
    monkeypatch.delenv("DBRT_SOURCE_PASSWORD", raising=False)
    with pytest.raises(SourceError) as caught:
        NetworkSource(camera.address("admin"), reconnect=None).open()
    assert "401" in str(caught.value)
    assert "the URL names its user without a password and none was given " \
           "(DBRT_SOURCE_PASSWORD is not set)" in str(caught.value)
    with pytest.raises(SourceError) as caught:  # a wrong password is another story
        NetworkSource(camera.address("admin"), reconnect=None, password="wrong").open()
    assert "401" in str(caught.value) and "DBRT_SOURCE_PASSWORD" not in str(caught.value)


def test_a_source_password_is_left_alone_by_a_run_without_streams(monkeypatch):
    from pipeline.commands._passwords import source_password as _source_password

    monkeypatch.setenv("DBRT_SOURCE_PASSWORD", "pw")
    assert _source_password(["clip.mp4", "0"]) is None
    assert _source_password(["rtsp://cam/1", "rtsp://admin@cam/2"]) == "pw"


def test_a_placeholder_anywhere_in_the_url_stays_out_of_open_and_read_errors(camera, monkeypatch):
    """A value filled in outside the user:password part (a token in the path) is hidden by no
    pattern: FFmpeg's errors quote the address it opened, so they are told with the URL as
    written instead."""
    monkeypatch.setenv("DBRT_TOKEN", "T0ken-value")
    url = f"http://127.0.0.1:{camera.port}/{{DBRT_TOKEN}}/live.ts"
    source = NetworkSource(url, reconnect=None)
    with pytest.raises(SourceError) as caught:
        source.open()  # no user: the camera refuses it
    printed = "".join(traceback.format_exception(caught.type, caught.value, caught.tb))
    assert f"cannot open {url}: " in str(caught.value) and "T0ken" not in printed

    def failing_read():
        raise OSError(5, "Input/output error", source._address)
        yield

    source._frames = failing_read()
    with pytest.raises(SourceError) as caught:
        source._read()
    printed = "".join(traceback.format_exception(caught.type, caught.value, caught.tb))
    assert url in str(caught.value) and "T0ken" not in printed


class RtspDoor:
    """A loopback RTSP server that only asks for a login (401, Basic) and keeps every
    Authorization header it is sent: what an RTSP camera is given, without streaming."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.logins = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as requests:
                while True:
                    head = list(iter(lambda: requests.readline().strip(), b""))
                    if not head:
                        break
                    fields = dict(line.decode().split(":", 1) for line in head[1:])
                    fields = {key.lower(): value.strip() for key, value in fields.items()}
                    if "authorization" in fields:
                        self.logins.append(base64.b64decode(fields["authorization"].split()[1]))
                    conn.sendall(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {fields.get('cseq', 1)}\r\n"
                                 'WWW-Authenticate: Basic realm="camera"\r\n\r\n'.encode())


def test_an_rtsp_camera_is_sent_the_password_as_it_was_given():
    """FFmpeg takes the password from the URL percent-encoded: the RTSP camera gets every
    character of DBRT_SOURCE_PASSWORD as it was, and its refusal names no password."""
    door = RtspDoor()
    try:
        with pytest.raises(SourceError) as caught:
            NetworkSource(f"rtsp://admin@127.0.0.1:{door.port}/stream", password=PASSWORD,
                          reconnect=None).open()
    finally:
        door.listener.close()
    assert door.logins and door.logins[-1] == f"admin:{PASSWORD}".encode()
    assert "401" in str(caught.value) and "p@ss" not in str(caught.value)


def test_a_placeholder_in_the_host_is_one_line_saying_what_placeholders_are_for(monkeypatch):
    """Its value is percent-encoded (a password may hold any character), which makes no host
    name or port: FFmpeg's 'Input/output error' on a URL that still showed the braces."""
    from engine.errors import SourceError
    from pipeline.sources.passwords import address

    monkeypatch.setenv("DBRT_CAM_HOST", "10.0.0.5")
    for url in ("rtsp://{DBRT_CAM_HOST}/s", "rtsp://admin@cam:{DBRT_CAM_HOST}/s"):
        with pytest.raises(SourceError, match=r"placeholder stands for a password, a user or a "
                                              r"query value, not the host or port"):
            address(url)
    monkeypatch.setenv("DBRT_PW", "p@ss")
    assert address("rtsp://admin:{DBRT_PW}@cam:554/s") == "rtsp://admin:p%40ss@cam:554/s"
