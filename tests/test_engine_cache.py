"""Engine cache (its key, builds once), the engine record's checks (another TensorRT or GPU,
version- and hardware-compatible engines, trusting an engine's own code) and the loader's choice
of backend, on the TensorRT double."""
import json

import numpy as np
import pytest
from engine_helpers import SMALL, ort_prob, trt  # noqa: F401

import trt_double
from engine.tensorrt.cache import cache_dir, cached_engine_runner
from engine.errors import ModelError, ShapeError
from engine.loader import RunnerOptions, load_runner
from engine.onnxruntime.runner import OnnxRuntimeRunner
from engine.tensorrt.record import EngineRecord, sidecar_path
from engine.tensorrt.build import BuildOptions, build_engine_file
from engine.tensorrt.runner import TensorRTRunner
from trt_double import fake_cuda


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_builds_once_and_keys_on_precision_and_profile(trt, tiny_onnx, engine_cache, rng):
    assert cache_dir() == engine_cache
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    with cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL) as runner:
        first = runner.infer(batch)["prob"]
    assert trt._double.builds == 1
    with cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL) as runner:
        np.testing.assert_array_equal(runner.infer(batch)["prob"], first)
    assert trt._double.builds == 1                       # second start: cache hit, no build
    engines = sorted(engine_cache.glob("*.engine"))
    assert len(engines) == 1 and sidecar_path(engines[0]).is_file()
    assert list(engine_cache.glob("timing-*.cache"))     # shared timing cache for rebuilds
    cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL.__class__.from_hw(
        (32, 32), (96, 96), (128, 128)))
    assert trt._double.builds == 2                       # another profile, another engine
    np.testing.assert_allclose(first, ort_prob(tiny_onnx, batch), atol=1e-5)


def test_cache_key_follows_the_onnx_content(trt, tiny_onnx, tmp_path):
    import onnx

    cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL)
    changed = onnx.load(str(tiny_onnx))
    changed.doc_string = "retrained"
    onnx.save(changed, str(tmp_path / "tiny.onnx"))
    cached_engine_runner(tmp_path / "tiny.onnx", precision="fp32", profile=SMALL)
    assert trt._double.builds == 2


def test_cache_key_follows_external_weights(trt, tiny_onnx, tmp_path):
    import onnx

    model = tmp_path / "ext.onnx"     # the graph in ext.onnx, the weights in ext.onnx.data
    onnx.save(onnx.load(str(tiny_onnx)), str(model), save_as_external_data=True,
              location="ext.onnx.data", size_threshold=0)
    cached_engine_runner(model, precision="fp32", profile=SMALL)
    weights = bytearray((tmp_path / "ext.onnx.data").read_bytes())
    weights[64] ^= 0xFF                                  # retrained: same graph file, new weights
    (tmp_path / "ext.onnx.data").write_bytes(bytes(weights))
    cached_engine_runner(model, precision="fp32", profile=SMALL)
    assert trt._double.builds == 2                       # not the old weights' engine


def test_engine_from_another_tensorrt_is_refused_with_a_clear_message(monkeypatch, tiny_onnx, tmp_path):
    trt_double.install(monkeypatch, "10.x")
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp16", profile=SMALL))
    trt_double.install(monkeypatch, "11.x")            # the user upgraded TensorRT
    with pytest.raises(ModelError, match=r"m\.engine cannot run here: it was built with TensorRT "
                                         r"10\.3\.0, this machine has TensorRT 11\.4\.0\. Rebuild "
                                         r"it from tiny\.onnx"):
        TensorRTRunner(engine).activate()
    sidecar_path(engine).unlink()                       # no record: TensorRT's own refusal
    with pytest.raises(ModelError, match="expecting library version 11.4.0 got 10.3.0"):
        TensorRTRunner(engine).activate()


def test_engine_for_another_gpu_is_refused(trt, tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    data = json.loads(sidecar_path(engine).read_text())
    data.update(gpu_name="NVIDIA Jetson AGX Orin", compute_capability="8.7")
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"built for NVIDIA Jetson AGX Orin \(sm_87\), this GPU is "
                                         r"Fake GPU .* \(sm_89\)"):
        TensorRTRunner(engine).activate()
    sidecar_path(engine).write_text("{broken")
    with pytest.raises(ModelError, match="record is damaged"):
        TensorRTRunner(engine)


def test_loader_picks_tensorrt_when_usable(trt, tiny_onnx, tmp_path, monkeypatch):
    auto = load_runner(tiny_onnx, options=RunnerOptions(precision="fp32", profile=SMALL))
    assert isinstance(auto, TensorRTRunner) and trt._double.builds == 1
    assert isinstance(load_runner(tiny_onnx, device="cpu"), OnnxRuntimeRunner)
    assert isinstance(load_runner(tiny_onnx, backend="onnxruntime"), OnnxRuntimeRunner)
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    assert isinstance(load_runner(engine), TensorRTRunner)
    with pytest.raises(ModelError, match="onnxruntime cannot run it"):
        load_runner(engine, backend="onnxruntime")


def test_an_option_the_chosen_backend_cannot_honour_is_an_error(trt, tiny_onnx, tmp_path):
    with pytest.raises(ModelError, match=r"TensorRT cannot honour the option\(s\) threads=2"):
        load_runner(tiny_onnx, options=RunnerOptions(threads=2, profile=SMALL))
    with pytest.raises(ModelError, match=r"ONNX Runtime cannot honour the option\(s\) precision='fp16'"):
        load_runner(tiny_onnx, device="cpu", options=RunnerOptions(precision="fp16"))
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    with pytest.raises(ModelError, match="prebuilt engine m.engine cannot honour .*opt_level=2"):
        load_runner(engine, options=RunnerOptions(opt_level=2))
    # a profile *function* is the default for a build, not a request: ONNX Runtime ignores it
    assert isinstance(load_runner(tiny_onnx, device="cpu", options=RunnerOptions(
        profile=lambda metadata: SMALL)), OnnxRuntimeRunner)


def test_loader_falls_back_to_onnxruntime_without_tensorrt(tiny_onnx, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)     # import tensorrt fails
    assert isinstance(load_runner(tiny_onnx), OnnxRuntimeRunner)


def test_version_compatible_engine_runs_on_a_later_tensorrt(monkeypatch, tiny_onnx, tmp_path, rng):
    trt_double.install(monkeypatch, "10.x")
    engine = tmp_path / "vc.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp32", profile=SMALL,
                                                      version_compatible=True))
    trt_double.install(monkeypatch, "11.x")
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    with TensorRTRunner(engine, host_code=True) as runner:   # trusted: host code enabled
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=1e-5)
    trt_double.install(monkeypatch, "8.6")                   # never backwards
    with pytest.raises(ModelError, match="built with TensorRT 10.3.0"):
        TensorRTRunner(engine, host_code=True).activate()


def test_a_record_beside_an_engine_file_does_not_let_its_code_run(monkeypatch, tiny_onnx, tmp_path):
    """The record says version_compatible, but whoever hands over an engine file can write its
    record too: the runtime the file carries runs only when the caller trusts the file."""
    trt_double.install(monkeypatch, "10.x")
    engine = tmp_path / "vc.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp32", profile=SMALL,
                                                      version_compatible=True))
    assert EngineRecord.load(engine).builder["version_compatible"]
    with pytest.raises(ModelError, match="--trust-engine-code"):
        TensorRTRunner(engine).activate()


def test_the_engine_cache_runs_the_version_compatible_engines_it_built(monkeypatch, tiny_onnx, tmp_path,
                                                                      rng):
    trt_double.install(monkeypatch, "10.x")
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    for _ in range(2):  # built, then found in the cache
        with cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL,
                                  version_compatible=True) as runner:
            np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch),
                                       atol=1e-5)


def test_a_version_compatible_engine_built_elsewhere_runs_only_when_trusted(trt, tiny_onnx,
                                                                             tmp_path, rng):
    """No dbrt record (trtexec --versionCompatible): its lean runtime is code from the file, so
    it runs only with engine_host_code / --trust-engine-code, and the refusal names the flag."""
    engine = tmp_path / "outside.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL, version_compatible=True))
    sidecar_path(engine).unlink()
    with pytest.raises(ModelError, match="--trust-engine-code"):
        TensorRTRunner(engine).activate()
    batch = rng.random((1, 3, 32, 32), dtype=np.float32)
    with load_runner(engine, options=RunnerOptions(engine_host_code=True)) as runner:
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=1e-5)
    with pytest.raises(ModelError, match="prebuilt .engine only"):
        load_runner(tiny_onnx, backend="tensorrt", options=RunnerOptions(engine_host_code=True))


def test_hardware_compatible_engine_runs_on_another_ampere_plus_gpu(trt, tiny_onnx, tmp_path,
                                                                     monkeypatch):
    from engine.cuda import DeviceInfo

    plain, portable = tmp_path / "plain.engine", tmp_path / "portable.engine"
    build_engine_file(tiny_onnx, plain, BuildOptions(profile=SMALL))
    build_engine_file(tiny_onnx, portable, BuildOptions(profile=SMALL, hardware_compatible=True))
    monkeypatch.setattr(fake_cuda, "DEVICE", DeviceInfo("Fake H200", "9.0"))
    with pytest.raises(ModelError, match=r"this GPU is Fake H200 \(sm_90\)"):
        TensorRTRunner(plain).activate()
    with TensorRTRunner(portable) as runner:
        assert runner.infer(np.zeros((1, 3, 32, 32), np.float32))["prob"].shape == (1, 1, 32, 32)


def test_hardware_compatible_engines_are_for_discrete_gpus(trt, tiny_onnx, tmp_path, monkeypatch):
    """TensorRT has no hardware compatibility on JetPack: a Jetson Orin (sm_87, Ampere) took
    an engine built so on a server GPU, and let one be built on the board."""
    from engine.cuda import DeviceInfo

    portable = tmp_path / "portable.engine"
    build_engine_file(tiny_onnx, portable, BuildOptions(profile=SMALL, hardware_compatible=True))
    monkeypatch.setattr(fake_cuda, "DEVICE", DeviceInfo("Orin", "8.7", integrated=True))
    with pytest.raises(ModelError, match=r"this GPU is Orin \(sm_87\)"):
        TensorRTRunner(portable).activate()
    with pytest.raises(ModelError, match="no hardware compatibility on JetPack"):
        build_engine_file(tiny_onnx, tmp_path / "board.engine",
                          BuildOptions(profile=SMALL, hardware_compatible=True))


@pytest.mark.parametrize("built, here, runs", [
    ("10.3.0", "10.8.0", True), ("8.6.1", "10.3.0", True), ("10.3.0", "11.1.0", True),
    ("8.6.1", "11.1.0", False), ("10.8.0", "10.3.0", False), ("11.1.0", "10.8.0", False),
    ("8.6.1", "9.3.0", True), ("9.3.0", "10.3.0", True), ("9.3.0", "8.6.1", False)])
def test_version_compatible_engines_follow_the_support_matrix(built, here, runs):
    from engine.tensorrt.record import version_compatible_runs

    assert version_compatible_runs(built, here) is runs


def test_the_cache_key_tells_build_settings_apart():
    from engine.tensorrt.cache import cache_key

    device = fake_cuda.DEVICE
    plain = cache_key("abc", "fp16", SMALL, "10.3.0", device)
    assert plain == cache_key("abc", "fp16", SMALL, "10.3.0", device, build={})
    assert plain != cache_key("abc", "fp16", SMALL, "10.3.0", device,
                              build={"hardware_compatible": True})


def test_an_int8_engine_is_cached_per_calibration_data(monkeypatch, tiny_onnx):
    """Another calibration set must not reuse the INT8 engine calibrated on the first."""
    trt = trt_double.install(monkeypatch, "10.x")

    def source(value, reads):
        def batches(shape):
            reads.append(shape)
            return (np.full(shape, value, dtype=np.float32) for _ in range(2))
        return batches

    reads = []
    options = RunnerOptions(precision="int8", profile=SMALL, calibration=source(0.25, reads))
    load_runner(tiny_onnx, backend="tensorrt", options=options)
    load_runner(tiny_onnx, backend="tensorrt", options=options)
    assert trt._double.builds == 1                       # the same images: the cached engine
    other = RunnerOptions(precision="int8", profile=SMALL, calibration=source(0.75, []))
    load_runner(tiny_onnx, backend="tensorrt", options=other)
    assert trt._double.builds == 2                       # other images: another engine
    named = source(0.5, reads)
    named.digest = "street-scenes-v1"                    # a source naming its content is not read
    reads.clear()
    load_runner(tiny_onnx, backend="tensorrt",
                options=RunnerOptions(precision="int8", profile=SMALL, calibration=named))
    load_runner(tiny_onnx, backend="tensorrt",
                options=RunnerOptions(precision="int8", profile=SMALL, calibration=named))
    assert trt._double.builds == 3 and reads == [SMALL.opt]   # read by the one build only


def test_calibration_without_a_profile_for_a_dynamic_input_is_the_builds_shape_error(
        monkeypatch, tiny_onnx):
    """The cache key reads calibration data at the profile's opt shape; with no profile the
    build's own error says what is missing, not the calibration source failing on None dims."""
    trt_double.install(monkeypatch, "10.x")
    called = []
    options = RunnerOptions(precision="int8", calibration=lambda shape: called.append(shape) or iter(()))
    with pytest.raises(ShapeError, match="dynamic input"):
        load_runner(tiny_onnx, backend="tensorrt", options=options)
    assert called == []


def test_runs_started_together_build_an_engine_once(trt, tiny_onnx, engine_cache, monkeypatch):
    """Two services started at once (a Jetson's boot) each built the same engine, minutes
    each, one writing over the other: the second now waits for the first and takes its engine."""
    import threading
    import time

    from trt_double import builder

    started, both_in = threading.Event(), threading.Barrier(2, timeout=30)
    slow_build = builder.Builder.build_serialized_network

    def build(self, network, config):
        started.set()
        time.sleep(0.3)  # the other run asks for the engine meanwhile
        return slow_build(self, network, config)

    monkeypatch.setattr(builder.Builder, "build_serialized_network", build)
    errors, profiles = [], []

    def run():
        try:
            both_in.wait()
            with cached_engine_runner(tiny_onnx, precision="fp32", profile=SMALL) as runner:
                profiles.append(runner.profiles["images"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert started.is_set() and profiles == [SMALL, SMALL]
    assert trt._double.builds == 1
