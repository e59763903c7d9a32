"""TensorRT backend: engine build (`build`), INT8 calibration, build records, the engine cache and
the runner. Importing this package does not import tensorrt; building or running does."""
from __future__ import annotations

from types import ModuleType

OLDEST = (8, 6)  # the builder optimisation level, version compatibility, lean runtimes: 8.6+


def supported(version: str) -> bool:
    """True for TensorRT 8.6 and newer (JetPack 5's 8.5 lacks names the build and runner use)."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return True  # an unusual version string: let feature detection decide
    return (major, minor) >= OLDEST


def require_tensorrt() -> ModuleType:
    """The `tensorrt` module, or one clear error when it is missing or older than 8.6."""
    from engine.lazy import MissingDependency, require

    trt = require("tensorrt")
    if not supported(trt.__version__):
        raise MissingDependency(f"TensorRT {trt.__version__} is installed; dbrt needs TensorRT 8.6, "
                                "10.x or 11.x (use --backend onnxruntime, or dbrt check --target "
                                f"{trt.__version__} to see whether its ONNX parser takes a model)")
    return trt
