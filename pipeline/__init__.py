"""dbrt pipeline: sources, pre/post-processing, threaded stages, sinks, metrics and the CLI.

Importing this package imports neither cupy, av, tensorrt nor torch.
"""
from .detections import Detections

__all__ = ["Detections"]
