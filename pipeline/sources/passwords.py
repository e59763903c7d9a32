"""Stream passwords kept off the command line, where every local user sees them (`ps`).

A URL that names its user without a password (`rtsp://admin@cam/stream`) is given one by the
caller (the CLI: the DBRT_SOURCE_PASSWORD environment variable), and `{DBRT_NAME}` in a URL
stands for the environment variable DBRT_NAME (`rtsp://admin:{DBRT_CAM1_PASSWORD}@cam1/stream`,
a password per camera). The URL as written names the source everywhere; only the address FFmpeg
opens holds the passwords. Values are percent-encoded, which FFmpeg decodes.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Optional
from urllib.parse import quote, urlsplit

from engine.errors import SourceError

PASSWORD_VARIABLE = "DBRT_SOURCE_PASSWORD"
# braces without a "$": neither a shell, systemd's ExecStart nor Docker Compose expands them
PLACEHOLDER = re.compile(r"\{(DBRT_[A-Z0-9_]+)\}")


def names_user_only(url: str) -> bool:
    """Whether the URL names a user and no password (`rtsp://admin@cam/1`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.username is not None and parts.password is None


def with_password(url: str, password: str) -> str:
    """`rtsp://admin@cam/1` -> `rtsp://admin:PASSWORD@cam/1`, the rest of the URL as it was."""
    start = url.index("//") + 2
    netloc = urlsplit(url).netloc
    user, _, host = netloc.rpartition("@")
    return f"{url[:start]}{user}:{quote(password, safe='')}@{host}{url[start + len(netloc):]}"


def placeholders(text: str) -> list:
    """The environment variables that `{DBRT_NAME}` placeholders in `text` name."""
    return PLACEHOLDER.findall(text)


def address(url: str, password: Optional[str] = None,
            environ: Optional[Mapping[str, str]] = None) -> str:
    """The URL to open: its placeholders filled from `environ` (default: os.environ) and,
    where it names a user without a password, `password` put in; SourceError naming the
    variable when one is unset or empty."""
    environ = os.environ if environ is None else environ
    host = _host_and_port(url)
    if placeholders(host):  # percent-encoded values would not make a host name or port
        raise SourceError(f"{url}: a {{DBRT_NAME}} placeholder stands for a password, a user or a "
                          f"query value, not the host or port ({host})")
    for name in placeholders(url):
        if not environ.get(name):
            state = "empty" if name in environ else "not set"
            raise SourceError(f"{url}: the environment variable {name} is {state} (it holds "
                              f"what {{{name}}} stands for)")
    filled = PLACEHOLDER.sub(lambda m: quote(environ[m.group(1)], safe=""), url)
    return with_password(filled, password) if password and names_user_only(filled) else filled


def _host_and_port(url: str) -> str:
    """The URL's host[:port], after any user:password@ (what a placeholder must not be in)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return netloc.rpartition("@")[2]
