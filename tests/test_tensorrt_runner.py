"""The TensorRT runner at run time, on the double: shapes outside the profile, what it takes
as an engine, zero copy, CUDA graphs (bounded, a failed capture), a context per thread (and one
TensorRT cannot create), the frames a call takes."""
import threading

import numpy as np
import pytest
from engine_helpers import SMALL, ort_prob, trt  # noqa: F401

from engine.errors import DbrtError, ModelError, ShapeError
from engine.tensorrt.build import BuildOptions, build_engine_file
from engine.tensorrt.runner import TensorRTRunner
from trt_double import fake_cuda


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


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


@pytest.mark.parametrize("flavour", ["10.x", "11.x"])
def test_an_engine_with_a_tensor_numpy_has_no_type_for_is_one_clear_error(monkeypatch, tiny_onnx,
                                                                         tmp_path, flavour):
    """trt.nptype raises TypeError for BF16 (FP8, INT4, FP4): an engine with BF16 outputs
    (ModelOpt AutoCast to bf16 without keep_io_types) ended in that traceback."""
    import trt_double
    from trt_double.plan import Plan

    trt_double.install(monkeypatch, flavour)
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    plan = Plan.from_bytes(engine.read_bytes())
    plan.tensors[1].dtype = "BF16"
    with pytest.raises(ModelError, match="tensor 'prob' is BF16, which NumPy and CuPy have no type"):
        TensorRTRunner(plan.to_bytes()).activate()


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
        graphs = runner._thread_states()[0].graphs
        assert len(graphs) == 3 and runner._thread_states()[0].context is None
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


class StreamKeepingBackend(fake_cuda.HostBackend):
    def __init__(self):
        super().__init__()
        self.streams = []

    def stream(self):
        self.streams.append(super().stream())
        return self.streams[-1]


def test_a_failed_execution_leaves_nothing_in_flight(trt, tiny_onnx, tmp_path, rng, monkeypatch):
    """The upload enqueued before TensorRT refused to run still writes into a buffer the failed
    call lets go of: the runner synchronises its stream on the way out, error or not."""
    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    backend = StreamKeepingBackend()
    with TensorRTRunner(engine, backend=backend) as runner:
        batch = rng.random((1, 3, 64, 64), dtype=np.float32)
        runner.infer(batch)
        monkeypatch.setattr(type(runner._thread_state().context), "execute_async_v3",
                            lambda context, stream_handle: False)
        with pytest.raises(DbrtError, match="TensorRT execution failed"):
            runner.infer(batch)
        assert [len(stream.queue) for stream in backend.streams] == [0]


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
        assert len(runner._thread_states()) == 3                    # one context + stream per thread
    assert not errors
    for i, batch in enumerate(batches):
        np.testing.assert_allclose(results[i], ort_prob(tiny_onnx, batch), atol=1e-5)


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


def test_a_thread_that_ended_lets_go_of_its_context(trt, tiny_onnx, tmp_path, rng):
    """Each thread's context holds the profile's largest activation memory: those of threads
    that had ended were kept until the runner closed, so a Detector serving one Pipeline after
    another (a new inference thread each), or calls from a server's threads, ran out of GPU
    memory."""
    import gc
    import weakref

    engine = tmp_path / "m.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    with TensorRTRunner(engine) as runner:
        states = []  # each holds its thread's context and stream
        for _ in range(4):
            thread = threading.Thread(target=lambda: runner.infer(batch))
            thread.start()
            thread.join()
            states.append(weakref.ref(runner._thread_states()[-1]))
            del thread
        gc.collect()
        assert [ref() is None for ref in states] == [True] * 4
        runner.infer(batch)  # this thread's own stays while it lives
        assert len(runner._thread_states()) == 1
