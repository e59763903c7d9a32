"""Passwords `dbrt run` takes from the environment, out of the process list every local user
can read (`ps`): DBRT_MQTT_PASSWORD for the --mqtt broker, DBRT_SOURCE_PASSWORD for the stream
URLs that name their user without one. A password written in a URL wins (as --serve-token does
over DBRT_SERVE_TOKEN)."""
from __future__ import annotations

import os
from typing import Optional

from engine.errors import DbrtError


def _variable(name: str) -> Optional[str]:
    """The variable's value; None when unset, an error when set but empty."""
    value = os.environ.get(name)
    if value is not None and not value:
        raise DbrtError(f"{name} is set but empty (an unset variable in a service file?); give "
                        "it the password, or unset it")
    return value


def mqtt_password(url) -> Optional[str]:
    """DBRT_MQTT_PASSWORD, for the user that --mqtt names (None without --mqtt)."""
    if not url:
        return None
    password = _variable("DBRT_MQTT_PASSWORD")
    if password is None:
        return None
    from pipeline.mqtt import parse_broker_url

    if not parse_broker_url(url).username:
        raise DbrtError("DBRT_MQTT_PASSWORD is set but --mqtt names no user: "
                        "give it as mqtt[s]://USER@HOST[:PORT]/TOPIC")
    return password


def source_password(specs) -> Optional[str]:
    """DBRT_SOURCE_PASSWORD, for the stream URLs among `specs` that name a user without a
    password (None when no source is a stream URL)."""
    from pipeline.sources.network import is_url
    from pipeline.sources.passwords import PASSWORD_VARIABLE, names_user_only

    urls = [spec for spec in map(str, specs) if is_url(spec)]
    if not urls:
        return None
    password = _variable(PASSWORD_VARIABLE)
    if password is not None and not any(names_user_only(url) for url in urls):
        # USER@HOST without its scheme: errors hide a URL's user:password@ part, hints included
        raise DbrtError(f"{PASSWORD_VARIABLE} is set but no stream URL names a user without a "
                        "password: name the user only, USER@HOST, in an rtsp:// URL (gst: "
                        "pipelines cannot take it)")
    return password
