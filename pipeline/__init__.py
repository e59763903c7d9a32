"""dbrt pipeline: sources, pre/post-processing, threaded stages, sinks, metrics and the CLI.

Importing this package imports neither cupy, av, tensorrt nor torch, and nothing at all until
`Detections` is first asked for: the `dbrt` command (pipeline.__main__) handles Ctrl-C and
SIGTERM before it loads the rest.
"""

__all__ = ["Detections"]


def __getattr__(name: str):
    if name == "Detections":
        from .detections import Detections

        return Detections
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
