"""The local ports of a Triton server: free ones picked by the kernel, given ones checked."""
from __future__ import annotations

import re
import socket
from contextlib import ExitStack
from typing import Optional


def why_port_is_taken(host: str, port: int) -> Optional[str]:
    """Why the server could not bind `port` (someone listens there), else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as tritonserver binds: a port left in TIME_WAIT by a server that just died is usable
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return str(exc.strerror or exc)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel's pick)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list:
    """`count` distinct TCP ports nobody listens on now. The sockets stay bound until all are
    picked: picked one by one, the kernel may hand out the same port twice."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


# The server's words when one of its ports is taken (by another program between our pick and its
# start) or when two of them are the same.
PORT_CLASH = re.compile(r"already in use|cannot listen to \w+ requests and \w+ requests")


# an HTTP/1 server answers it with a status line; a gRPC server with its HTTP/2 settings (and
# HTTP/1 servers such as Triton's close the connection on HTTP/2's preface, saying nothing)
_HTTP1_REQUEST = b"GET / HTTP/1.1\r\nHost: dbrt\r\nConnection: close\r\n\r\n"


def answers_http1(url, timeout: float = 2.0) -> Optional[str]:
    """Why `url` (a TritonUrl) cannot be a gRPC endpoint: an HTTP/1 server answers there (most
    often Triton's HTTP port 8000 or metrics port 8002 given for its gRPC port 8001), else None
    (nobody listens, no answer, or it may be gRPC)."""
    try:
        with socket.create_connection((url.host.strip("[]"), url.port), timeout=timeout) as sock:
            sock.sendall(_HTTP1_REQUEST)
            head = sock.recv(16)
    except OSError:
        return None
    if not head.startswith(b"HTTP/1"):
        return None
    return (f"{url.address} answers HTTP/1, not gRPC: give the server's gRPC port (Triton's "
            "default 8001; 8000 is its HTTP port, 8002 its metrics)")
