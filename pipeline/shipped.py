"""What dbrt ships with the runtime: the default model and the demo video (pipeline/assets/)."""
from __future__ import annotations

from pathlib import Path

from engine.errors import ModelError

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_VIDEO = ASSETS / "demo.mp4"


def default_model_path() -> Path:
    """The detector shipped with dbrt (pipeline/assets/dbnet_default.onnx)."""
    path = ASSETS / "dbnet_default.onnx"
    if not path.is_file():
        raise ModelError(f"the shipped default model is missing ({path}); pass --model")
    return path
