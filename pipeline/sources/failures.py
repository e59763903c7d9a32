"""Which failures to connect a live source may pass by themselves (a camera still booting, a
server restarting, a stream not yet published), so that a source down when the run starts is
waited for under its reconnect policy, and which are the user's to fix (a wrong password, an
address that serves no video, a host name that does not exist), which fail the run at once.

`SourceError.passing` carries the verdict from where the failure is understood to
`LiveSource.open`; an error without it is the user's.
"""
from __future__ import annotations

import errno
from typing import Optional
from urllib.parse import urlparse

from engine.errors import SourceError
from engine.hostnames import unresolved
from engine.lazy import require

# the network being down or the server not (yet) there: what a later outage also meets
_PASSING_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                   errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
                   errno.EPIPE, errno.EAGAIN}


def passing(error: SourceError, can_pass: bool) -> SourceError:
    """`error`, marked as one that may pass by itself (or not)."""
    error.passing = can_pass
    return error


def can_pass(error: BaseException) -> bool:
    return bool(getattr(error, "passing", False))


def ffmpeg_failure_passes(exc: BaseException, url: str) -> bool:
    """Whether FFmpeg's failure to open `url` may pass: refused, reset or unreachable, timed
    out, a server that hung up (EOF), an HTTP / RTSP 404 (a stream not yet published) or 5xx,
    an RTMP server refusing to play a stream (how one says it is not published), a host name
    whose lookup failed for now. Not: 401 / 403 and other 4xx, data that is not video, a
    protocol or option FFmpeg does not know (nor a host name that does not exist:
    `unresolved_host`)."""
    av = require("av")
    if isinstance(exc, (av.HTTPNotFoundError, av.HTTPServerError, av.ExitError, av.EOFError,
                        ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, (av.HTTPClientError, av.InvalidDataError)):
        return False
    if rtmp_play_refused(exc, url):
        return True
    code = getattr(exc, "errno", None)
    # EIO: FFmpeg's word for a failed name lookup among others (`unresolved_host` tells them
    # apart, and its message replaces FFmpeg's "Input/output error")
    return code in _PASSING_ERRNOS or code == errno.EIO


def rtmp_play_refused(exc: BaseException, url: str) -> Optional[str]:
    """What FFmpeg's "Operation not permitted" means for an rtmp:// source: the server
    answered the play with an error status (NetStream.Play.StreamNotFound: nginx-rtmp's
    answer for a stream nobody publishes, with idle_streams off), or None for another error."""
    if getattr(exc, "errno", None) == errno.EPERM and urlparse(url).scheme.startswith("rtmp"):
        return ("the RTMP server refused to play it: most often nothing is published under "
                "this name yet")
    return None


def unresolved_host(url: str) -> Optional[str]:
    """Why `url`'s host name does not resolve (it does not exist), or None when it resolves,
    or its lookup failed for now (engine.hostnames). A camera known by name to a DNS server
    that learns it later (DHCP) is better addressed by its IP address."""
    return unresolved(urlparse(url).hostname)


# a pipeline gst-launch cannot build: the user's to fix, whatever the reconnect policy
_GST_MISTAKES = ("no element", "could not link", "syntax error", "no property",
                 "erroneous pipeline", "could not set property", "link failed", "not-linked")


def gst_failure_passes(why: str) -> bool:
    """Whether a pipeline's failure to start may pass (its camera or server not there yet),
    unlike one gst-launch could not build (an unknown element, a link or property error)."""
    text = why.lower()
    return not any(mistake in text for mistake in _GST_MISTAKES)
