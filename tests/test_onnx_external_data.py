"""ONNX files whose external weight data lies outside the model's folder (`../x`, an absolute
path, a link pointing out): refused with one line before any of it is read, by `dbrt info`
and the engine cache's content hash alike."""
import os

import pytest
from engine_helpers import SMALL, trt  # noqa: F401

from engine.errors import ModelError
from pipeline.cli import main


def with_external_data(tiny_onnx, folder, location: str):
    """tiny_onnx saved as folder/ext.onnx with its weights in folder/ext.onnx.data, then every
    initializer's location rewritten to `location`."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "ext.onnx"
    onnx.save(onnx.load(str(tiny_onnx)), str(model), save_as_external_data=True,
              location="ext.onnx.data", size_threshold=0)
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model))
    return model


@pytest.fixture
def outside(tmp_path):
    secret = tmp_path / "outside.bin"
    secret.write_bytes(b"not the model's\n" * 64)
    return secret


def reads_of(monkeypatch):
    from engine import onnx_info

    read, real = [], onnx_info.sha256_file
    monkeypatch.setattr(onnx_info, "sha256_file", lambda p, *a: read.append(str(p)) or real(p, *a))
    return read


@pytest.mark.parametrize("how", ["parent", "absolute", "link"])
def test_weights_outside_the_models_folder_are_refused_unread(how, tiny_onnx, tmp_path, outside,
                                                              monkeypatch, capsys):
    folder = tmp_path / "models"
    location = {"parent": "../outside.bin", "absolute": str(outside), "link": "w.bin"}[how]
    model = with_external_data(tiny_onnx, folder, location)
    if how == "link":
        os.symlink(outside, folder / "w.bin")
    read = reads_of(monkeypatch)
    assert main(["info", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"external data location {location!r} is outside the model's folder" in err
    assert not [p for p in read if "outside" in p or p.endswith("w.bin")]


def test_the_engine_cache_refuses_them_before_hashing(trt, tiny_onnx, tmp_path, outside,
                                                      monkeypatch):
    from engine.tensorrt.cache import cached_engine_runner

    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    model = with_external_data(tiny_onnx, tmp_path / "models", "../outside.bin")
    read = reads_of(monkeypatch)
    with pytest.raises(ModelError, match="outside the model's folder"):
        cached_engine_runner(model, precision="fp32", profile=SMALL)
    assert not [p for p in read if "outside" in p] and trt._double.builds == 0


def test_weights_in_a_subfolder_are_fine(tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "models"
    model = with_external_data(tiny_onnx, folder, "weights/ext.onnx.data")
    (folder / "weights").mkdir()
    (folder / "ext.onnx.data").rename(folder / "weights" / "ext.onnx.data")
    assert main(["info", str(model)]) == 0
    assert "opset 17" in capsys.readouterr().out
