"""Engine cache, engine record checks, loader selection and the TensorRT runner's runtime
behaviour (zero copy, CUDA graphs, per-thread contexts, profile errors) on the double."""
import json
import threading

import numpy as np
import pytest
from engine_helpers import SMALL, ort_prob, trt  # noqa: F401

import trt_double
from engine.tensorrt.cache import cache_dir, cached_engine_runner
from engine.errors import DbrtError, ModelError, ShapeError
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


def test_shapes_outside_the_profile(trt, tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    with TensorRTRunner(engine) as runner:
        assert runner.profiles["images"] == SMALL
        for shape in [(1, 3, 256, 64), (3, 3, 64, 64), (1, 3, 16, 64)]:
            with pytest.raises(ShapeError, match=r"outside the engine's profile \(min 1x3x32x32, "
                                                 r"opt 1x3x64x64, max 2x3x128x128\)"):
                runner.infer(np.zeros(shape, np.float32))


def test_runner_takes_bytes_an_engine_or_a_loader(trt, tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    x = np.zeros((1, 3, 64, 64), np.float32)
    with TensorRTRunner(engine) as by_path:
        expected = by_path.infer(x)["prob"]
        made = by_path._engine  # an engine deserialized elsewhere
    for source in (engine.read_bytes(), lambda: engine.read_bytes(), made, lambda: made):
        with TensorRTRunner(source) as runner:
            np.testing.assert_array_equal(np.asarray(runner.infer(x)["prob"]), np.asarray(expected))


class CountingBackend(fake_cuda.HostBackend):
    def __init__(self):
        super().__init__()
        self.copies = 0
        self.launches = 0

    def copy_into(self, dst, src, stream):
        self.copies += 1
        super().copy_into(dst, src, stream)

    def launch(self, graph, stream):
        self.launches += 1
        super().launch(graph, stream)


def test_device_inputs_are_used_in_place(trt, tiny_onnx, tmp_path, rng):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    backend = CountingBackend()
    batch = rng.random((1, 3, 64, 96), dtype=np.float32)
    with TensorRTRunner(engine, backend=backend) as runner:
        runner.infer(fake_cuda.to_device(batch))
        assert backend.copies == 0                         # zero copy from the GPU
        runner.infer(batch)
        assert backend.copies == 1                         # NumPy is uploaded once
        runner.infer(fake_cuda.to_device(batch.astype(np.float64)))
        assert backend.copies == 2                         # wrong dtype: converted on the device
    assert backend.waits == 3                              # ordered after the caller's stream


def test_cuda_graph_replay_per_shape(trt, tiny_onnx, tmp_path, rng):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    backend = CountingBackend()
    with TensorRTRunner(engine, cuda_graph=True, backend=backend) as runner:
        for shape in [(1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 32, 96), (1, 3, 64, 64)]:
            batch = rng.random(shape, dtype=np.float32)
            out = runner.infer(batch)["prob"]
            np.testing.assert_allclose(out, ort_prob(tiny_onnx, batch), atol=1e-5)
        previous = out
        runner.infer(rng.random((1, 3, 64, 64), dtype=np.float32))
        assert not np.array_equal(previous, runner.infer(np.zeros((1, 3, 64, 64), np.float32))["prob"])
    assert backend.launches == 6                           # every call replays a graph


def test_cuda_graphs_keep_a_bounded_number_of_shapes_and_no_spare_context(trt, tiny_onnx, tmp_path,
                                                                         rng, monkeypatch):
    """Each captured shape holds a context with the profile's largest activation memory: a
    folder of photos of many sizes kept one per size for good (out of GPU memory), plus a
    per-thread context graph mode never used."""
    from engine.tensorrt import runner as runner_module

    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    monkeypatch.setattr(runner_module, "MAX_GRAPHS", 3)
    contexts = []
    with TensorRTRunner(engine, cuda_graph=True, backend=CountingBackend()) as runner:
        create = type(runner._engine).create_execution_context  # pybind: patched on the class
        monkeypatch.setattr(type(runner._engine), "create_execution_context",
                            lambda engine: contexts.append(1) or create(engine))
        shapes = [(1, 3, 32, 32), (1, 3, 32, 64), (1, 3, 64, 64), (1, 3, 96, 64), (1, 3, 128, 64),
                  (1, 3, 128, 64), (1, 3, 32, 32)]
        for shape in shapes:
            batch = rng.random(shape, dtype=np.float32)
            np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=1e-5)
        graphs = runner._states[0].graphs
        assert len(graphs) == 3 and runner._states[0].context is None
        kept = [next(iter(dict(key).values()))[2:] for key in graphs]
        assert kept == [(96, 64), (128, 64), (32, 32)]  # the least recently used ones left
    assert len(contexts) == 6  # 5 shapes, the 128x64 one reused, the 32x32 one captured again


def test_a_context_tensorrt_cannot_create_is_one_clear_error(trt, tiny_onnx, tmp_path, rng,
                                                             monkeypatch):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    with TensorRTRunner(engine) as runner:
        monkeypatch.setattr(type(runner._engine), "create_execution_context", lambda engine: None)
        with pytest.raises(DbrtError, match="could not create an execution context .*out of GPU memory"):
            runner.infer(rng.random((1, 3, 64, 64), dtype=np.float32))


def test_a_failed_capture_runs_that_shape_without_a_graph(trt, tiny_onnx, tmp_path, rng, caplog):
    """CUDA invalidates a capture that an enqueue broke, and end_capture raises: that shape then
    runs by plain enqueue on its own context, once warned, every later call too."""
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    backend = CountingBackend()
    backend.fail_capture = True
    with TensorRTRunner(engine, cuda_graph=True, backend=backend) as runner:
        for _ in range(2):
            batch = rng.random((1, 3, 64, 64), dtype=np.float32)
            np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=1e-5)
    assert backend.launches == 0
    assert sum("capture failed" in r.getMessage() for r in caplog.records) == 1


def test_threads_get_their_own_context(trt, tiny_onnx, tmp_path, rng):
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    batches = [rng.random((1, 3, 32 * (i + 1), 64), dtype=np.float32) for i in range(3)]
    results, errors = {}, []
    with TensorRTRunner(engine) as runner:
        def work(i):
            try:
                for _ in range(2):
                    results[i] = runner.infer(batches[i])["prob"]
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(runner._states) == 3                    # one context + stream per thread
    assert not errors
    for i, batch in enumerate(batches):
        np.testing.assert_allclose(results[i], ort_prob(tiny_onnx, batch), atol=1e-5)


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


def test_an_engine_says_how_many_frames_a_call_takes(trt, tiny_onnx, tmp_path):
    """The profile's largest batch caps the pipeline's batch and detect_batch's calls."""
    from engine.shapes import ShapeProfile
    from pipeline.batcher import batch_size

    engine = tmp_path / "b2.engine"
    profile = ShapeProfile((1, 3, 32, 32), (2, 3, 64, 64), (2, 3, 128, 128))
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=profile))
    with TensorRTRunner(engine) as runner:
        assert runner.max_batch == 2
        assert batch_size(0, 6, runner) == 2
        with pytest.raises(ModelError, match="--batch 3: the model takes at most 2 frames"):
            batch_size(3, 1, runner)


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


@pytest.mark.parametrize("built, here, runs", [
    ("10.3.0", "10.8.0", True), ("8.6.1", "10.3.0", True), ("10.3.0", "11.1.0", True),
    ("8.6.1", "11.1.0", False), ("10.8.0", "10.3.0", False), ("11.1.0", "10.8.0", False)])
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
