"""Lazy imports of heavy or optional packages (tensorrt, cupy, torch, av, onnxruntime).

Importing `engine` or `pipeline` never imports them; the first use does, and a missing package
raises one clear error naming what to install.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

_INSTALL_HINT = {
    "tensorrt": "pip install tensorrt (needs an NVIDIA GPU)",
    "cupy": "pip install cupy-cuda12x (or cupy-cuda13x; needs an NVIDIA GPU)",
    "torch": "pip install 'dbrt[export]'",
    "av": "pip install av",
    "onnxruntime": "pip install onnxruntime",
    "onnx": "pip install onnx",
    "pyclipper": "pip install pyclipper",
    "cv2": "pip install opencv-python-headless",
    "modelopt": "pip install nvidia-modelopt",
    "PIL": "pip install pillow",
    "supervision": "pip install 'dbrt[track]'",
    "matplotlib": "pip install matplotlib",
    "prometheus_client": "pip install 'dbrt[serve]'",
    "paho": "pip install 'dbrt[serve]'",
    "tritonclient": "pip install 'dbrt[triton]'",
}


class MissingDependency(ImportError):
    """An optional package needed for the requested feature is not installed."""


def require(name: str) -> ModuleType:
    """Import `name` or raise MissingDependency with an install hint."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        hint = _INSTALL_HINT.get(top, f"pip install {top}")
        raise MissingDependency(f"{name} is needed for this feature but could not be imported "
                                f"({exc}); install it with: {hint}") from exc


def optional(name: str) -> Optional[ModuleType]:
    """Import `name` if it is installed and importable, else None."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken CUDA install raises more than ImportError
        return None


def cupy_or_none() -> Optional[ModuleType]:
    """CuPy when it is installed *and* a CUDA device is usable, else None."""
    cp = optional("cupy")
    if cp is None:
        return None
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # noqa: BLE001 - no driver, no device
        return None
    return cp


def array_module(array):
    """numpy or cupy, whichever owns `array` (without importing cupy when it is not loaded)."""
    import sys

    cp = sys.modules.get("cupy")
    if cp is not None and isinstance(array, cp.ndarray):
        return cp
    import numpy

    return numpy
