"""ONNX Runtime backend: one session (`OnnxRuntimeRunner`) or several sharing a batch
(`ParallelRunner`). onnxruntime is imported when a runner activates, not with this package."""
from .parallel import ParallelRunner
from .runner import OnnxRuntimeRunner

__all__ = ["OnnxRuntimeRunner", "ParallelRunner"]
