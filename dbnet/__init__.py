"""The DBNet contract shared by the runtime (pipeline/) and export (export/): what a detector needs
around the network (`ModelSpec`: normalisation, resize rule, output, post-processing settings),
its presets for foreign DB-family models, and the checks of a model's inputs and outputs.

It depends on engine/ for its error types, shape profiles and lazy imports; engine/ itself
knows nothing of DBNet.
"""
from .postprocess_config import PostprocessConfig, PostprocessError
from .spec import PRESETS, ModelSpec, preset, resolve_spec

__all__ = ["ModelSpec", "PRESETS", "preset", "resolve_spec", "PostprocessConfig", "PostprocessError"]
