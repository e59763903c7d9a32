"""Engine files written whole: a build or cache fill killed while writing never leaves a record
that describes another engine, a half-written file taken for a good one, or temporary files."""
import os
import pathlib

import pytest
from engine_helpers import SMALL, trt  # noqa: F401

from engine.shapes import ShapeProfile
from engine.tensorrt.build import BuildOptions, build_engine_file
from engine.tensorrt.cache import cached_engine_runner
from engine.tensorrt.record import EngineRecord

OTHER = ShapeProfile.from_hw((32, 32), (96, 96), (128, 128))


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def killed_while_writing(monkeypatch, wanted):
    """Opening a file whose name `wanted(name)` accepts for writing gives one that takes half of
    what is written, then raises KeyboardInterrupt (Ctrl-C mid-write)."""
    real_open = pathlib.Path.open

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:len(data) // 2])
            raise KeyboardInterrupt

    def open_(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return HalfWriter(handle) if "w" in mode and wanted(self.name) else handle

    monkeypatch.setattr(pathlib.Path, "open", open_)


def test_a_rebuild_stopped_before_its_record_leaves_no_stale_record(trt, tiny_onnx, tmp_path,
                                                                     monkeypatch):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp32", profile=SMALL))
    with monkeypatch.context() as patch:
        patch.setattr(EngineRecord, "save", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp32", profile=OTHER))
    record = EngineRecord.load(engine)            # none, or the new engine's: never SMALL's
    assert record is None or record.profile == OTHER


@pytest.mark.parametrize("interrupted", ["engine", "record"])
def test_a_cache_fill_killed_mid_write_is_built_again(trt, tiny_onnx, engine_cache, monkeypatch,
                                                      interrupted):
    suffix = ".engine" if interrupted == "engine" else ".engine.json"
    with monkeypatch.context() as patch:
        killed_while_writing(patch, lambda name: suffix in name and "timing" not in name)
        with pytest.raises(KeyboardInterrupt):
            cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL)
    left = sorted(p.name for p in engine_cache.iterdir() if not p.name.startswith("timing-"))
    assert not [name for name in left if name.endswith(".partial")], left   # no litter
    with cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL) as runner:
        assert runner.profiles["images"] == SMALL       # not "record is damaged"
    assert trt._double.builds == 2
    assert len(list(engine_cache.glob("*.engine.json"))) == 1 and os.listdir(engine_cache)


def test_a_calibration_cache_is_written_whole(monkeypatch, tiny_onnx, tmp_path, rng):
    """The cache is reused whenever it exists: half of one, left by a build stopped while
    writing it, was taken for the calibration of the next build."""
    import trt_double

    trt_double.install(monkeypatch, "10.x")
    cache = tmp_path / "calib.cache"
    options = BuildOptions(precision="int8", profile=SMALL, calibration_cache=cache,
                           calibration=lambda shape: (rng.random(shape, dtype="float32")
                                                      for _ in range(2)))
    with monkeypatch.context() as patch:
        killed_while_writing(patch, lambda name: "calib.cache" in name)
        with pytest.raises(KeyboardInterrupt):
            build_engine_file(tiny_onnx, tmp_path / "int8.engine", options)
    assert not cache.exists() and os.listdir(tmp_path) == []


def test_an_engine_cache_that_cannot_be_written_is_said_before_the_build(trt, tiny_onnx, tmp_path,
                                                                        monkeypatch):
    """It failed after the build (minutes on a GPU) with only '...: Not a directory'."""
    from engine.errors import ModelError

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "afile" / "engines"))
    with pytest.raises(ModelError, match=r"engine cache folder .*afile/engines cannot be written "
                                         r"\(Not a directory\); set \$DBRT_ENGINE_CACHE"):
        cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL)
    assert trt._double.builds == 0
