"""Whether a host name exists: a name that does not resolve is most often misspelt, and a
client that waited for it (a stream down at the start, a model server not up yet) would hide
that; a lookup that fails for now (no DNS server reachable yet: a box that boots before its
network) may pass by itself."""
from __future__ import annotations

import ipaddress
import socket
from typing import Optional


def unresolved(host: Optional[str]) -> Optional[str]:
    """Why `host` does not resolve (it does not exist), or None when it resolves, is an
    address, or its lookup failed for now."""
    if not host or _is_address(host.strip("[]")):
        return None
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return f"the host name {host} does not resolve (check its spelling)"
    except (OSError, UnicodeError):
        return None
    return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
