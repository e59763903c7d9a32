"""Shared fixtures: the shared real data (skipped when absent) and tiny ONNX models."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from triton_fixtures import (shipped_triton_repository, triton_repository,  # noqa: F401
                             triton_server, triton_server_factory, triton_venv)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DBRT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real videos, realdev); skips with a message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only CI and dev machines have it)")
    return SHARED_DATA


def tiny_torch_model(width: float = 0.25, seed: int = 0):
    """The randomly initialised, compact PyTorch DBNet behind `tiny_onnx` (eval mode)."""
    torch = pytest.importorskip("torch")
    from export.model import DBNet

    torch.manual_seed(seed)
    return DBNet("resnet18", width=width).eval()


def export_tiny_onnx(path: Path, width: float = 0.25, seed: int = 0) -> Path:
    """A randomly initialised, compact DBNet exported to ONNX with dbrt metadata.

    Kept independent of export.onnx_export so runtime tests do not depend on the exporter.
    """
    import onnx

    from dbnet.spec import ModelSpec

    torch = pytest.importorskip("torch")  # a skip, not an error, where torch is not installed
    model = tiny_torch_model(width, seed)
    x = torch.randn(1, 3, 64, 96)
    torch.onnx.export(model, x, str(path), input_names=["images"], output_names=["prob"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                    "prob": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "dbrt", ModelSpec(arch=model.arch_name).replace(limit_side=256).to_json()
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """Path of a tiny random DBNet ONNX (dynamic batch / H / W, dbrt metadata)."""
    return export_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def compiled_steps_built() -> bool:
    from pipeline.postprocess import compiled

    return compiled._module("_steps") is not None and compiled._module("_fill") is not None


def use_numpy_postprocess(monkeypatch) -> None:
    """Run the CPU post-processing without its compiled steps (as an install without a C
    compiler does)."""
    from pipeline.postprocess import compiled

    monkeypatch.setattr(compiled, "_LOADED", {"_steps": None, "_fill": None})


@pytest.fixture(params=["compiled", "numpy"])
def postprocess_path(request, monkeypatch) -> str:
    """Each test runs on both CPU post-processing paths: with the compiled steps (skipped where
    they were not built) and with NumPy / OpenCV only."""
    if request.param == "numpy":
        use_numpy_postprocess(monkeypatch)
    elif not compiled_steps_built():
        pytest.skip("the compiled post-processing steps are not built here (no C compiler at install)")
    return request.param
