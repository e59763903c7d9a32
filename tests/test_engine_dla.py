"""Jetson DLA engines through the TensorRT double: built with GPU fallback on the core asked
for, one input shape, FP16 / INT8 only, recorded, loaded on the recorded or another core, cached
apart from GPU engines, and the flags of `dbrt build` / `dbrt run` / `dbrt info`."""
import json

import numpy as np
import onnx
import pytest
from engine_helpers import fp16_copy, ort_prob, trt  # noqa: F401

from engine.errors import ModelError, ShapeError
from engine.loader import RunnerOptions
from engine.shapes import ShapeProfile
from engine.tensorrt.build import BuildOptions, build_engine_file
from engine.tensorrt.cache import _build_settings, cached_engine_path, cached_engine_runner
from engine.tensorrt.runner import TensorRTRunner
from pipeline.cli import main

ONE_SHAPE = ShapeProfile.static((1, 3, 64, 64))


@pytest.fixture
def jetson(trt):
    """A device with two DLA cores, as a Jetson AGX Orin has."""
    trt._double.dla_cores = 2
    return trt


def _fp16_source(trt, tiny_onnx, tmp_path):
    """What an FP16 DLA build starts from: on 11.x (strongly typed) an FP16 ONNX."""
    if trt.__version__.startswith("11"):
        return fp16_copy(tiny_onnx, tmp_path / "fp16.onnx"), "auto"
    return tiny_onnx, "fp16"


def _dla_ops(path) -> tuple:
    nodes = onnx.load(str(path)).graph.node
    off = [n for n in nodes if n.op_type not in {"Conv", "ConvTranspose", "BatchNormalization",
                                                 "Relu", "Sigmoid", "Add", "Mul", "Concat",
                                                 "MaxPool", "AveragePool"}]
    return len(nodes), len(off)


def test_a_dla_engine_runs_its_layers_on_the_core_asked_for(jetson, tiny_onnx, tmp_path, rng):
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    engine = tmp_path / "dla.engine"
    record = build_engine_file(model, engine, BuildOptions(precision=precision, profile=ONE_SHAPE,
                                                           dla_core=1))
    layers, on_gpu = _dla_ops(model)
    dla = record.builder["dla"]
    assert (dla["core"], dla["layers"], dla["gpu_fallback_layers"]) == (1, layers, on_gpu)
    assert on_gpu > 0 and len(dla["gpu_fallback_examples"]) == min(on_gpu, 5)
    assert record.precision == "fp16" and record.profile == ONE_SHAPE
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    with TensorRTRunner(engine) as runner:  # the core its record names
        assert runner.dla_core == 1 and runner._engine.dla_core == 1 and runner.max_batch == 1
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(model, batch), atol=2e-2)
    with TensorRTRunner(engine, dla_core=0) as runner:  # moved to the other core
        assert runner._engine.dla_core == 0


def test_gpu_engines_stay_gpu_engines(jetson, tiny_onnx, tmp_path):
    record = build_engine_file(tiny_onnx, tmp_path / "gpu.engine",
                               BuildOptions(precision="fp32", profile=ONE_SHAPE))
    assert record.builder["dla"] is None
    with TensorRTRunner(tmp_path / "gpu.engine") as runner:
        assert runner.dla_core is None and runner._engine.dla_core == -1
    # asking for a core would only set the runtime's, and the runner would claim to run there
    with pytest.raises(ModelError, match=r"engine gpu\.engine runs on the GPU \(its record names "
                                         r"no DLA core\): --dla-core moves a DLA engine"):
        TensorRTRunner(tmp_path / "gpu.engine", dla_core=1).activate()


@pytest.mark.parametrize("change, error, message", [
    (dict(precision="fp32"), ModelError, "DLA computes in FP16 or INT8, not fp32"),
    (dict(profile=ShapeProfile.from_hw((32, 32), (64, 64), (128, 128))), ShapeError,
     "DLA runs one input shape, not the range min 1x3x32x32"),
    (dict(dla_core=2), ModelError, r"DLA core 2 asked for; this device has 2 \(cores 0\.\.1\)"),
])
def test_what_the_dla_cannot_run_is_refused_before_the_build(jetson, tiny_onnx, tmp_path, change,
                                                             error, message):
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    if change.get("precision") == "fp32" and jetson.__version__.startswith("11"):
        model = tiny_onnx  # 11.x: an FP32 ONNX is an FP32 build
    options = {**dict(precision=precision, profile=ONE_SHAPE, dla_core=0), **change}
    with pytest.raises(error, match=message):
        build_engine_file(model, tmp_path / "x.engine", BuildOptions(**options))
    assert jetson._double.builds == 0 and not (tmp_path / "x.engine").exists()


def test_a_gpu_without_dla_says_so(trt, tiny_onnx, tmp_path):
    model, precision = _fp16_source(trt, tiny_onnx, tmp_path)
    with pytest.raises(ModelError, match="DLA core 0 asked for, and this device has no DLA for TensorRT"):
        build_engine_file(model, tmp_path / "x.engine",
                          BuildOptions(precision=precision, profile=ONE_SHAPE, dla_core=0))


def test_a_dla_engine_taken_to_a_device_without_dla_is_one_clear_error(jetson, tiny_onnx, tmp_path):
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    engine = tmp_path / "dla.engine"
    build_engine_file(model, engine, BuildOptions(precision=precision, profile=ONE_SHAPE, dla_core=0))
    jetson._double.dla_cores = 0
    with pytest.raises(ModelError, match="built for DLA core 0, and this device has no DLA: "
                                         "rebuild it here without --dla-core"):
        TensorRTRunner(engine).activate()


def test_the_engine_cache_keeps_dla_engines_apart(jetson, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    paths = {core: cached_engine_path(model, BuildOptions(precision=precision, profile=ONE_SHAPE,
                                                          dla_core=core)) for core in (None, 0, 1)}
    # the GPU engine apart; one DLA engine for both cores, the runtime placing it
    assert paths[0] == paths[1] != paths[None]
    # a GPU engine's key is what it was before the DLA was known: caches are not rebuilt
    assert "dla" not in _build_settings(BuildOptions())
    with cached_engine_runner(model, precision, ONE_SHAPE, dla_core=1) as runner:
        assert runner.dla_core == 1 and runner._engine.dla_core == 1
    builds = jetson._double.builds
    with cached_engine_runner(model, precision, ONE_SHAPE, dla_core=0) as runner:
        assert runner.dla_core == 0 and runner._engine.dla_core == 0
    assert jetson._double.builds == builds  # the engine built on core 1 runs on core 0


def test_the_detector_builds_a_dla_engine_for_its_input_size(jetson, tiny_onnx, tmp_path, monkeypatch):
    from pipeline.detector import Detector

    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    options = RunnerOptions(precision=precision, dla_core=0)
    with Detector(model, backend="tensorrt", input_size=(64, 96), options=options) as det:
        assert det.runner.profiles["images"] == ShapeProfile.static((1, 3, 64, 96))
        assert det.runner.dla_core == 0
        assert len(det.detect(np.zeros((120, 200, 3), np.uint8))) == 0
    with pytest.raises(ModelError, match=r"runs one input shape: give input_size \(--input-size HxW\)"):
        Detector(model, backend="tensorrt", options=options)


def test_dbrt_build_dla_core_builds_one_shape_and_says_what_runs_where(jetson, tiny_onnx, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    engine = tmp_path / "dla.engine"
    assert main(["build", str(model), "-o", str(engine), "--precision", precision,
                 "--opt", "64x96", "--dla-core", "1", "--quiet"]) == 0
    layers, on_gpu = _dla_ops(model)
    out = capsys.readouterr().out
    assert "profile min 1x3x64x96, opt 1x3x64x96, max 1x3x64x96" in out
    assert f"DLA core 1: {layers - on_gpu} of {layers} layers the DLA can run (TensorRT's per-layer check); on the GPU: " in out
    assert main(["info", str(engine)]) == 0
    assert f"DLA core 1: {layers - on_gpu} of {layers} layers the DLA can run" in capsys.readouterr().out
    assert main(["info", str(engine), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["record"]["builder"]["dla"]["core"] == 1


@pytest.mark.parametrize("argv, message", [
    (["build", "{model}", "--dla-core", "0"], "--dla-core: the DLA runs one input shape; give it as --opt HxW"),
    (["build", "{model}", "--dla-core", "0", "--opt", "64x64", "--max", "128x128"],
     "DLA runs one input shape, not the range"),
    (["build", "{model}", "--dla-core", "-1", "--opt", "64x64"], "--dla-core"),
    (["run", "{video}", "--dla-core", "0", "--device", "cpu"],
     "--dla-core runs a TensorRT engine; drop it, or --device cpu\n"),
    (["run", "{video}", "--dla-core", "0", "--backend", "onnxruntime"],
     "--dla-core runs a TensorRT engine; drop it, or --backend onnxruntime\n"),
    (["run", "{video}", "--dla-core", "0"], "--dla-core builds an engine for one input shape: give --input-size HxW"),
    (["run", "{video}", "--dla-core", "0", "--input-size", "64x64", "--batch", "2"],
     "--dla-core builds an engine for one input shape, one frame a call: drop --batch 2"),
    (["run", "{video}", "--dla-core", "0", "--model", "triton://localhost/dbnet"],
     "--dla-core applies to a model run here"),
])
def test_dla_flag_mistakes_are_one_line(jetson, tiny_onnx, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    model = _fp16_source(jetson, tiny_onnx, tmp_path)[0]  # auto: an FP16 build everywhere
    argv = [a.format(model=model, video=video) for a in argv] + ["-o", str(tmp_path / "out")]
    if argv[0] == "build":
        argv[-1] = str(tmp_path / "x.engine")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert jetson._double.builds == 0


def test_dla_core_where_tensorrt_is_not_usable_names_the_flag(tiny_onnx, tmp_path, capsys,
                                                             monkeypatch):
    """backend auto falls back to ONNX Runtime there, whose refusal named an option
    (dla_core=0), not the flag, and came after the sources had opened."""
    monkeypatch.setattr("engine.loader.tensorrt_usable", lambda: False)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert main(["run", str(video), "--model", str(tiny_onnx), "--dla-core", "0",
                 "--input-size", "64x64", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--dla-core runs a TensorRT engine, and TensorRT with a CUDA GPU (CuPy) is not " \
           "usable here" in err and err.count("\n") == 1, err


def test_the_model_benchmark_times_dla_engines_beside_the_gpu_ones(jetson, tiny_onnx, tmp_path,
                                                                   monkeypatch):
    """`dbrt bench model --dla-core N`: FP16 (and INT8) rows on the DLA core, one engine per
    size and batch (the DLA runs one shape), after the GPU's."""
    from benchmarks import model_bench
    from benchmarks.model_targets import onnxruntime_target, tensorrt_targets
    from dbnet.spec import ModelSpec
    from engine.tensorrt.record import EngineRecord

    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "engines"))
    model, _ = _fp16_source(jetson, tiny_onnx, tmp_path)
    variants = {"fp16": model} if jetson.__version__.startswith("11") else {}
    built = []
    targets = [onnxruntime_target(tiny_onnx, "cpu", "fp32", threads=1)]
    targets += tensorrt_targets(tiny_onnx, variants, [1, 2], log=built.append, dla_core=1)
    assert [t.name for t in targets][-2:] == ["tensorrt/cuda/fp16", "tensorrt/dla1/fp16"]
    frame = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    rows = model_bench.sweep(targets, ModelSpec(), [(64, 64)], [1, 2], warmup=1, repeats=1,
                             frame=frame, log=lambda msg: None)
    for target in targets:
        if target.close:
            target.close()
    dla_rows = [r for r in rows if r["device"] == "dla1"]
    assert [(r["batch"], "error" in r) for r in dla_rows] == [(1, False), (2, False)]
    assert sum("on DLA core 1" in m for m in built) == 2  # one engine per batch
    records = [EngineRecord.load(p) for p in (tmp_path / "engines").glob("*.engine")]
    on_dla = sorted(r.profile.opt[0] for r in records if (r.builder.get("dla") or {}).get("core") == 1)
    assert on_dla == [1, 2] and all(r.profile.min == r.profile.max for r in records
                                    if r.builder.get("dla"))
    with pytest.raises(SystemExit):
        model_bench.main(["--no-tensorrt", "--dla-core", "0"])


def test_an_engine_built_for_a_core_the_device_lacks_says_how_to_move_it(jetson, tiny_onnx, tmp_path):
    model, precision = _fp16_source(jetson, tiny_onnx, tmp_path)
    engine = tmp_path / "dla.engine"
    build_engine_file(model, engine, BuildOptions(precision=precision, profile=ONE_SHAPE, dla_core=1))
    jetson._double.dla_cores = 1  # an NX: one core
    with pytest.raises(ModelError, match=r"DLA core 1 built for; this device has 1 \(cores 0\.\.0\); "
                                         "run it on one of them with --dla-core"):
        TensorRTRunner(engine).activate()
    with TensorRTRunner(engine, dla_core=0) as runner:
        assert runner._engine.dla_core == 0
