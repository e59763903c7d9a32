"""dbrt engine: runners (ONNX Runtime, TensorRT, a Triton server's client) behind one interface,
engine build and cache.

Importing this package imports neither tensorrt nor cupy; backends load them on first use.
"""
from .base import Runner, TensorInfo
from .errors import DbrtError, ModelError, ShapeError, SourceError

__all__ = ["Runner", "TensorInfo", "DbrtError", "ModelError", "ShapeError", "SourceError"]
