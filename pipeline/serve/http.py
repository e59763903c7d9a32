"""The HTTP side of `--serve`: a WSGI application (routing only; the stdlib's wsgiref parses
HTTP and prometheus_client writes /metrics) on a threading server with a bounded number of
connections.

Safe by default: binds loopback unless told otherwise, GET / HEAD only, no request path ever
reaches the file system, an optional access token (`Authorization: Bearer TOKEN`, `?token=TOKEN`,
or the session cookie a valid `?token=` sets, so that the page survives a reload), at most
`max_connections` open connections (then the oldest that sent no request makes room, else a
new one is closed at once), and a socket timeout that frees
the thread of a viewer that stopped reading.
"""
from __future__ import annotations

import contextlib
import hmac
import http.client
import ipaddress
import json
import re
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Optional
from urllib.parse import quote, unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from engine.errors import DbrtError

from .page import page
from .status import RunStatus
from .view import LiveFrames

BOUNDARY = "dbrtframe"
_STREAM = re.compile(r"/stream/(\d{1,4})\.(mjpg|jpg)")


class ServeApp:
    """Routes: / (the page), /stream/<id>.mjpg (MJPEG), /stream/<id>.jpg (the newest
    picture), /metrics, /healthz, /api/status."""

    def __init__(self, status: RunStatus, registry, token: Optional[str] = None,
                 keepalive_s: float = 5.0, max_streams: int = 28, local_only: bool = False):
        from prometheus_client import make_wsgi_app

        self.status = status
        self.view: LiveFrames = status.view
        self.token = token or None
        # served on loopback without a token: only requests addressed to this machine by name
        # or address, so that a web page whose own name was rebound to 127.0.0.1 (DNS
        # rebinding) cannot read the pictures from the browser of someone on this machine
        self.local_only = local_only and self.token is None
        self.keepalive_s = keepalive_s
        # viewers hold their connection for as long as they watch: capped below the server's
        # connection limit so that /healthz and /metrics always find a free one
        self._stream_slots = threading.BoundedSemaphore(max_streams)
        self._metrics_app = make_wsgi_app(registry)
        self._page = page(round(1000 * self.view.min_interval))

    def __call__(self, environ, start_response):
        body = self._answer(environ, _with_safety_headers(start_response))
        if environ.get("REQUEST_METHOD") == "HEAD":  # the headers only (wsgiref sends any body)
            getattr(body, "close", lambda: None)()
            return []
        return body

    def _answer(self, environ, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if method not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "read-only: GET only\n",
                         [("Allow", "GET, HEAD")])
        if self.local_only and not _local_host(environ.get("HTTP_HOST", "")):
            return _text(start_response, "403 Forbidden", "this server answers requests for "
                         "localhost or its address only\n")
        way = self._authorised(environ)
        if way is None:
            return _text(start_response, "401 Unauthorized", "missing or wrong token\n",
                         [("WWW-Authenticate", 'Bearer realm="dbrt"')])
        if way == "query":
            start_response = _with_headers(start_response, [self._set_cookie(environ)])
        if path == "/":
            return _send(start_response, "200 OK", "text/html; charset=utf-8", self._page)
        if path == "/metrics":  # prometheus_client answers GET only
            return self._metrics_app(dict(environ, REQUEST_METHOD="GET"), start_response)
        if path == "/healthz":
            ok, reason = self.status.health()
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", reason + "\n")
        if path == "/api/status":
            body = json.dumps(self.status.snapshot(), separators=(",", ":")).encode()
            return _send(start_response, "200 OK", "application/json", body)
        match = _STREAM.fullmatch(path)
        if match and int(match.group(1)) in {s.stream for s in self.status.pipeline.sources}:
            if match.group(2) == "jpg":
                return self._picture(start_response, int(match.group(1)), environ)
            if method == "HEAD":
                start_response("200 OK", _STREAM_HEADERS)
                return []
            if not self._stream_slots.acquire(blocking=False):
                return _text(start_response, "503 Service Unavailable", "too many viewers\n",
                             [("Retry-After", "10")])
            start_response("200 OK", _STREAM_HEADERS)
            return _Viewer(self._mjpeg(int(match.group(1))), self._stream_slots.release)
        return _text(start_response, "404 Not Found", "not found\n")

    def _picture(self, start_response, stream: int, environ):
        """The newest picture (X-Frame-Seq: its number); with ?after=N, 204 and no bytes
        while N is the newest (the page asks so: a stalled stream costs nothing). An N past
        the newest is another run's number (a page left open while dbrt restarted on its
        port), so it gets the picture: waiting for this run to count up to N froze the tile."""
        after = _query(environ, "after")
        encoded = self.view.jpeg(stream)
        if not encoded.jpeg:
            return _text(start_response, "503 Service Unavailable", "no picture yet\n",
                         [("Retry-After", "1")])
        seq = [("X-Frame-Seq", str(encoded.seq))]
        if after is not None and after.lstrip("-").isdigit() and encoded.seq == int(after):
            start_response("204 No Content", [("Cache-Control", "no-store"), *seq])
            return []
        return _send(start_response, "200 OK", "image/jpeg", encoded.jpeg, seq)

    def _authorised(self, environ) -> Optional[str]:
        """How the request got in ("open" without a token, "header", "query", "cookie"); None
        when it gave no token or a wrong one."""
        if self.token is None:
            return "open"
        given, way = self._credential(environ)
        return way if hmac.compare_digest(given.encode(), self.token.encode()) else None

    @staticmethod
    def _credential(environ) -> tuple:
        """(the token given, how): the Bearer header, else ?token=, else this server's cookie;
        ("", None) when none is."""
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""  # schemes ignore case
        if given:
            return given, "header"
        given = _query(environ, "token")
        if given is not None:
            return given, "query"
        given = _cookie(environ, _cookie_name(environ))
        return (given, "cookie") if given is not None else ("", None)

    def _set_cookie(self, environ) -> tuple:
        """The token as a cookie for the browser's session (no Expires), sent to this server
        only and never to scripts or with other sites' requests; percent-encoded, as a cookie
        value may hold no ";", "," or space."""
        return ("Set-Cookie", f"{_cookie_name(environ)}={quote(self.token, safe='')}; HttpOnly; "
                              "SameSite=Strict; Path=/")

    def _mjpeg(self, stream: int):
        """One JPEG part per new picture, at most the view's rate; a part is re-sent every
        `keepalive_s` while the stream stalls so that the viewer sees the connection is alive."""
        sent = 0
        while not self.view.closed:
            newer = self.view.wait_newer(stream, sent, self.keepalive_s)
            if self.view.closed:
                return
            encoded = self.view.jpeg(stream)
            if not encoded.jpeg:
                continue
            if newer and encoded.seq <= sent:  # rate cap: the newest frame is not encoded yet
                time.sleep(self.view.min_interval)
                continue
            sent = encoded.seq
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                   f"Content-Length: {len(encoded.jpeg)}\r\n\r\n").encode() + encoded.jpeg + b"\r\n"


def _local_host(host: str) -> bool:
    """A Host header naming localhost or an IP address (any port), or none (HTTP/1.0)."""
    name = host.rpartition("]")[0].lstrip("[") if host.startswith("[") else host.partition(":")[0]
    name = name.lower().rstrip(".")
    if not name or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _cookie_name(environ) -> str:
    """Per port: a browser sends a host's cookies to all its ports, and two views on one
    machine, each with its own token, would overwrite each other's."""
    return f"dbrt_token_{environ.get('SERVER_PORT', '')}"


def _cookie(environ, name: str) -> Optional[str]:
    """The value of the cookie `name` in the request's Cookie header, percent-decoded."""
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return unquote(value.strip())
    return None


def _query(environ, name: str) -> Optional[str]:
    """A query parameter, percent-decoded only: a "+" in a token is a plus, not a space."""
    return next((unquote(part[len(name) + 1:]) for part in environ.get("QUERY_STRING", "").split("&")
                 if part.startswith(name + "=")), None)


class _Viewer:
    """A viewer's MJPEG parts; wsgiref closes the response however it ends (the viewer left,
    the run ended, a write failed), which frees the viewer's slot once."""

    def __init__(self, parts, release):
        self._parts, self._release = parts, release

    def __iter__(self):
        return self._parts

    def close(self) -> None:
        release, self._release = self._release, None
        try:
            self._parts.close()
        finally:
            if release is not None:
                release()


# on every answer, /metrics and 401s included: the pictures and status of cameras are not for
# caches, other sites' frames or content sniffing, and the address of a page opened with
# ?token= must not leave in a Referer header
SAFETY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                  ("Content-Security-Policy", "frame-ancestors 'none'"),
                  ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"),
                  ("Server", "dbrt"))  # wsgiref's own names the Python version


def _with_safety_headers(start_response):
    def start(status, headers, exc_info=None):
        present = {name.lower() for name, _ in headers}
        extra = [(n, v) for n, v in SAFETY_HEADERS if n.lower() not in present]
        return start_response(status, [*headers, *extra], exc_info)
    return start


def _with_headers(start_response, extra):
    def start(status, headers, exc_info=None):
        return start_response(status, [*headers, *extra], exc_info)
    return start


_STREAM_HEADERS = [("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}"),
                   ("Cache-Control", "no-store")]


def _send(start_response, status: str, content_type: str, body: bytes, headers=()):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), *headers])
    return [body]


def _text(start_response, status: str, text: str, headers=()):
    return _send(start_response, status, "text/plain; charset=utf-8", text.encode(), headers)


class _Discard:
    """Where wsgiref's error output goes (a viewer that vanished is not worth a traceback)."""

    def write(self, text) -> None:
        pass

    def flush(self) -> None:
        pass


class _CappedReader:
    """The connection's reader, giving at most `limit` bytes in lines; a longer request is the
    stdlib's LineTooLong, which the handler answers with 431."""

    def __init__(self, raw, limit: int):
        self._raw, self._left = raw, limit

    def readline(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise http.client.LineTooLong("request headers")
        line = self._raw.readline(self._left + 1 if size < 0 else min(size, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("request headers")
        return line

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _Handler(WSGIRequestHandler):
    timeout = 10.0  # seconds a blocked read or write may take before the connection is dropped
    request_deadline = 10.0  # seconds for the whole request line and headers (a client that
    # sends a byte now and then would otherwise hold its connection, and a slot, for ever)

    max_request_bytes = 32 * 1024  # request line and headers (nginx's default is 32 KiB too)

    def setup(self) -> None:
        super().setup()
        # the stdlib allows 100 header lines of 64 KiB: 32 clients held 200 MB for 10 s each
        self.rfile = _CappedReader(self.rfile, self.max_request_bytes)
        self._deadline = threading.Timer(self.request_deadline, self._drop)
        self._deadline.daemon = True
        self._deadline.start()
        self.server.waiting.append(self)  # no request yet: the first to go when all are taken

    def parse_request(self) -> bool:  # reads the headers; the deadline ends with them
        try:
            return super().parse_request()
        finally:
            self._deadline.cancel()
            self.server.stop_waiting(self)

    def finish(self) -> None:
        self._deadline.cancel()
        self.server.stop_waiting(self)
        super().finish()

    def _drop(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, *args) -> None:  # no access log on stderr
        pass

    def get_stderr(self):
        return _Discard()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    max_connections = 32

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out or vanished: nothing for the operator's log

    def server_bind(self):
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.waiting = []  # handlers of connections that have sent no whole request yet, oldest first
        super().server_bind()

    def stop_waiting(self, handler) -> None:
        with contextlib.suppress(ValueError):  # list.remove is atomic; it may be gone already
            self.waiting.remove(handler)

    def process_request(self, request, client_address):
        # all taken: the oldest connection that sent no request makes room (idle connections
        # held every slot for their 10 s, /healthz and /metrics refused), else this one goes
        if not self._slots.acquire(blocking=False) and not (
                self._drop_oldest_waiting() and self._slots.acquire(timeout=1.0)):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _drop_oldest_waiting(self) -> bool:
        with contextlib.suppress(IndexError):
            self.waiting.pop(0)._drop()
            return True
        return False

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HttpServer:
    """The server thread; binds at construction so that a busy port fails at once."""

    def __init__(self, app: ServeApp, host: str = "127.0.0.1", port: int = 8080,
                 max_connections: int = 32):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (_Server,), {"max_connections": max_connections,
                                                   "address_family": family})
        try:
            self.server = make_server(host, port, app, server_class=server_class,
                                      handler_class=_Handler)
        except OSError as exc:
            raise DbrtError(f"--serve {host}:{port}: cannot listen there "
                            f"({exc.strerror or exc})") from None
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="serve",
                                        kwargs=dict(poll_interval=0.2), daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
