"""The gRPC channel to a Triton server, with keepalive pings: a server host that vanishes
without closing the connection (a power or network cut: no TCP reset) stalled every request
for the whole --triton-timeout (60 s), and the recovery probe after it for its own timeout.

With a call in flight, the client pings the server KEEPALIVE_TIME_MS after the last ping and
drops the connection when no answer comes within PING_TIMEOUT_MS: the calls on it fail
(UNAVAILABLE, "ping timeout") 10 to 20 s after the host vanished, and the run's recovery takes
over. gRPC's own ping timeout is a minute (grpc.http2.ping_timeout_ms): it bounds the
keepalive ping and the flow-control (BDP) pings gRPC sends after data, so the keepalive
timeout alone (tritonclient's KeepAliveOptions) changed nothing. A live server answers pings at
once however busy its model is (its transport threads do).

What a default Triton server accepts (its gRPC keepalive flags, gRPC's defaults): a ping every
5 min without data (--grpc-http2-min-recv-ping-interval-without-data); each ping that comes
sooner is a strike and after 2 (--grpc-http2-max-ping-strikes) it closes the connection with
GOAWAY "too_many_pings"; pings while no call is in flight are strikes too
(--grpc-keepalive-permit-without-calls false). So: no pings without calls, and at most 2
pings until data moves again (grpc.http2.max_pings_without_data): a request the server computes
for minutes draws one strike at most."""
from __future__ import annotations

from ..errors import ModelError
from .messages import first_line

KEEPALIVE_TIME_MS = 10_000
PING_TIMEOUT_MS = 10_000
MAX_PINGS_WITHOUT_DATA = 2
_MAX_MESSAGE = 2**31 - 1  # tritonclient's own limit, which channel arguments replace

CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", MAX_PINGS_WITHOUT_DATA),
]


def open_client(grpc, url):
    """A tritonclient.grpc.InferenceServerClient for `url` (a TritonUrl), with keepalive."""
    try:
        return grpc.InferenceServerClient(url.address, channel_args=list(CHANNEL_ARGS))
    except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception type
        raise ModelError(f"{url}: cannot open a gRPC channel: {first_line(exc)}") from exc
