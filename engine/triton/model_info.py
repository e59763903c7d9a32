"""What the server says about a model: ready or not (and why), inputs and outputs, max batch
size, and the config's `parameters`; every call with a timeout, every failure one line."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from ..base import TensorInfo
from ..errors import ModelError
from ..hostnames import unresolved
from .messages import first_line
from .ports import answers_http1
from .options import TritonUrl

# Triton datatype -> numpy dtype name
DATATYPES = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64",
             "INT32": "int32", "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


@dataclass(frozen=True)
class ModelInfo:
    inputs: Tuple[TensorInfo, ...]       # shapes include the batch dim (None) when max_batch > 0
    outputs: Tuple[TensorInfo, ...]
    max_batch: int
    parameters: Dict[str, str]
    datatypes: Dict[str, str]            # tensor name -> Triton datatype ("FP32")


# gRPC's words for a server not listening (yet) or not answering
_PASSING = re.compile(r"refused|deadline|timed? ?out|unreachable|no route", re.IGNORECASE)


class NotReadyYet(ModelError):
    """The server or the model is not there yet, in a way that may pass by itself (a server
    still starting or loading its models, restarting, a network not up yet): a client waits
    for it. `why`: the short reason the wait's warning gives."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def read_model_info(client, url: TritonUrl, timeout: float) -> ModelInfo:
    """Check that the server is up and the model ready, then describe the model. What may pass
    by itself raises NotReadyYet; what the user is to fix (no such model on a server that has
    loaded its repository, a port that is not gRPC, a host name that does not exist) ModelError."""
    try:
        live = client.is_server_live(client_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - tritonclient wraps gRPC errors in its own type
        raise _unreachable(url, exc) from None
    if not live:  # shutting down (a restart), or not started yet
        raise NotReadyYet(f"the Triton server at {url.address} is not live", "server not live")
    if not client.is_model_ready(url.model, url.version, client_timeout=timeout):
        raise _not_ready(client, url, timeout)
    metadata = client.get_model_metadata(url.model, url.version, as_json=True, client_timeout=timeout)
    config = client.get_model_config(url.model, url.version, as_json=True,
                                     client_timeout=timeout).get("config", {})
    max_batch = int(config.get("max_batch_size", 0) or 0)
    inputs = tuple(_tensor(t, url) for t in metadata.get("inputs", ()))
    outputs = tuple(_tensor(t, url) for t in metadata.get("outputs", ()))
    if not inputs or not outputs:
        raise ModelError(f"{url}: the server reports no inputs or no outputs for the model")
    parameters = {key: value.get("string_value", "")
                  for key, value in (config.get("parameters") or {}).items()}
    datatypes = {t["name"]: t["datatype"] for t in
                 list(metadata.get("inputs", ())) + list(metadata.get("outputs", ()))}
    return ModelInfo(inputs, outputs, max_batch, parameters, datatypes)


def _tensor(meta: dict, url: TritonUrl) -> TensorInfo:
    datatype = meta.get("datatype", "")
    if datatype == "BYTES":  # e.g. an ensemble that post-processes on the server
        raise ModelError(f"{url}: tensor {meta.get('name')!r} is BYTES (a post-processing "
                         f"ensemble?); dbrt post-processes itself: point --model at the model "
                         f"that outputs the probability map")
    if datatype not in DATATYPES:
        raise ModelError(f"{url}: tensor {meta.get('name')!r} has datatype {datatype}, which "
                         f"dbrt does not handle ({', '.join(DATATYPES)})")
    shape = tuple(None if int(d) < 0 else int(d) for d in meta.get("shape", ()))
    return TensorInfo(meta["name"], shape, np.dtype(DATATYPES[datatype]).name)


def _unreachable(url: TritonUrl, exc: BaseException) -> ModelError:
    """No answer to gRPC: a server not (yet) listening or away may come; a host name that does
    not exist, or a port where an HTTP/1 server answers (Triton's HTTP or metrics port) will not."""
    text = first_line(exc)
    message = (f"cannot reach the Triton server at {url.address} for {url} ({text}): is "
               "tritonserver running with this gRPC port?")
    if "resolv" in text.lower() or "dns" in text.lower():
        mistake = unresolved(url.host)
    else:  # connected, then closed: who answered? (not asked of a refusal or a timeout)
        mistake = None if _PASSING.search(text) else answers_http1(url)
    if mistake:
        return ModelError(f"{url}: {mistake}")
    return NotReadyYet(message, _short(text))


def _short(text: str) -> str:
    """gRPC's reason, its last part ("Connection refused", "Deadline Exceeded", "Socket closed")."""
    return text.rsplit(": ", 1)[-1].strip(" []") or text


def _not_ready(client, url: TritonUrl, timeout: float) -> ModelError:
    """Why the model is not ready: unknown to the server (a mistake), loading or unloaded (may
    pass: a server loading its models, or a controller that loads them once it is up), or
    failed to load (the server's reason; a mistake to fix in the repository)."""
    try:
        index = client.get_repository_index(as_json=True, client_timeout=timeout) \
            if hasattr(client, "get_repository_index") else \
            client.get_model_repository_index(as_json=True, client_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - e.g. the repository protocol is restricted
        return NotReadyYet(f"{url}: the model is not ready ({first_line(exc)})", "model not ready")
    models = index.get("models", [])
    mine = [m for m in models if m.get("name") == url.model
            and (not url.version or m.get("version") == url.version)]
    if not mine:
        names = sorted({m.get("name", "?") for m in models})
        return ModelError(f"{url}: the server at {url.address} has no model {url.model!r}"
                          + (f" (version {url.version})" if url.version else "")
                          + f"; it has: {', '.join(names) or 'none'}")
    state = mine[0].get("state") or "not loaded"
    reason = mine[0].get("reason") or ""
    message = f"{url}: the model is not ready ({state}{': ' + reason if reason else ''})"
    if state == "UNAVAILABLE" and reason and reason != "unloaded":
        return ModelError(message)  # its load failed: the server says why
    return NotReadyYet(message, f"model {state}")
