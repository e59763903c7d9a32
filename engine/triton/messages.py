"""One line of a tritonclient / gRPC error, for the one-line messages of the Triton client."""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The error's first line (tritonclient's `message()` where it has one, which leaves out
    the status code); its type's name when it says nothing."""
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else type(exc).__name__
