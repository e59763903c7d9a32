"""Engine builds through the TensorRT double: build -> serialize -> load -> infer == ONNX Runtime,
precision per TensorRT flavour, calibration, profiles, parser errors, progress, timing cache."""
import io

import numpy as np
import pytest
from engine_helpers import (SMALL, fp16_copy, ort_prob, qdq_copy, trt,  # noqa: F401
                            with_static_input, with_unsupported_node)

from dbnet.spec import ModelSpec, profile_for
from engine.errors import DbrtError, ModelError, ShapeError
from engine.tensorrt.progress import BuildProgress
from engine.tensorrt.record import EngineRecord
from engine.shapes import ShapeProfile
from engine.tensorrt.build import BuildOptions, build_engine, build_engine_file, plan_precision
from engine.tensorrt.runner import TensorRTRunner
from trt_double import fake_cuda


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_build_serialize_load_infer_matches_onnxruntime(trt, tiny_onnx, tmp_path, rng, precision):
    engine = tmp_path / "tiny.engine"
    record = build_engine_file(tiny_onnx, engine, BuildOptions(precision=precision, profile=SMALL))
    # 8.6 / 10.x build an FP32 ONNX in FP16 by default; 11.x computes what the ONNX says
    auto = {"8.6.1": "fp16", "10.3.0": "fp16", "11.4.0": "fp32"}[trt.__version__]
    assert record.precision == (auto if precision == "auto" else "fp32")
    assert record.strongly_typed == ASKED[(trt.__version__, "fp32", precision)][1]
    assert record.tensorrt_version == trt.__version__ and record.profile == SMALL
    assert record.compute_capability == fake_cuda.DEVICE.compute_capability
    with TensorRTRunner(engine) as runner:
        assert runner.output_device == "cuda" and runner.input_names == ("images",)
        # the ONNX metadata travelled along
        assert ModelSpec.from_metadata(runner.metadata).resize.limit_side == 256
        for shape in [(1, 3, 64, 64), (2, 3, 96, 128)]:
            batch = rng.random(shape, dtype=np.float32)
            out = runner.infer(batch)["prob"]
            assert isinstance(out, fake_cuda.DeviceArray) and out.shape == (shape[0], 1) + shape[2:]
            np.testing.assert_allclose(out, ort_prob(tiny_onnx, batch), atol=1e-5)


def test_fp16_storage_is_fp32_compute(trt, tiny_onnx, tmp_path, monkeypatch):
    """dbrt's shipped model stores its weights as fp16 + Cast(to=FLOAT): it computes in FP32, so
    `auto` on 8.6 / 10.x builds it with the FP16 flag (weak typing) like any FP32 ONNX, and on
    11.x as an FP32 network; an FP16 ONNX (fp16 compute) is still read as fp16. TensorRT is
    given the weights expanded to FP32 initializers, as in any FP32 ONNX."""
    import onnx

    from engine.onnx_info import summarize_onnx
    from export import quantize
    from export.train.ship import store_initializers_fp16

    proto = onnx.load(str(tiny_onnx))
    assert store_initializers_fp16(proto) > 0
    stored = tmp_path / "stored_fp16.onnx"
    onnx.save(proto, str(stored))
    assert summarize_onnx(stored).precision == "fp32"
    assert summarize_onnx(quantize.to_fp16(tiny_onnx, tmp_path / "fp16.onnx")).precision == "fp16"
    assert summarize_onnx(stored).fp16_storage and not summarize_onnx(tiny_onnx).fp16_storage
    parsed = []
    monkeypatch.setattr(trt.OnnxParser, "parse", lambda self, model, path=None: parsed.append(
        (onnx.load_from_string(bytes(model)), path)) or self._import(parsed[-1][0]))
    record = build_engine_file(stored, tmp_path / "stored.engine", BuildOptions(profile=SMALL))
    # handed to TensorRT expanded: FP32 weights as initializers, no storage casts
    (network, path), = parsed
    assert path == str(stored) and not any(n.op_type == "Cast" for n in network.graph.node)
    assert {t.name for t in network.graph.initializer} >= {
        n.input[1] for n in network.graph.node if n.op_type == "Conv"}
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in network.graph.initializer)
    weak = trt.__version__ != "11.4.0"
    assert record.precision == ("fp16" if weak else "fp32")
    assert record.builder["flags"] == (["FP16"] if weak else []) and record.strongly_typed is not weak


def test_engine_bytes_runner(trt, tiny_onnx, rng):
    data, record = build_engine(tiny_onnx, BuildOptions(precision="fp32", profile=SMALL))
    batch = rng.random((1, 3, 32, 64), dtype=np.float32)
    with TensorRTRunner(data, record=record) as runner:
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=1e-5)


@pytest.mark.parametrize("weak, requested, onnx_precision, strong_flag, expected", [
    (True, "auto", "fp32", True, ("fp16", False, ("FP16",), False)),
    (True, "fp32", "fp32", True, ("fp32", False, (), False)),
    (True, "int8", "fp32", True, ("int8", False, ("INT8", "FP16"), True)),
    (True, "int8", "int8", False, ("int8", False, ("INT8", "FP16"), False)),   # 8.6 Q/DQ
    (True, "auto", "fp16", True, ("fp16", True, (), False)),                  # 10.x FP16 ONNX
    (False, "auto", "fp32", False, ("fp32", True, (), False)),
    (False, "fp16", "fp16", False, ("fp16", True, (), False)),
    (False, "int8", "int8", False, ("int8", True, (), False)),
])
def test_precision_plan(weak, requested, onnx_precision, strong_flag, expected):
    plan = plan_precision(weak, requested, onnx_precision, None, strong_flag, "x")
    assert (plan.precision, plan.strongly_typed, plan.flags, plan.calibrate) == expected


@pytest.mark.parametrize("requested, onnx_precision", [("fp16", "int8"), ("fp32", "int8"),
                                                       ("fp32", "fp16")])
def test_a_weakly_typed_build_keeps_the_onnxs_precision(requested, onnx_precision):
    """8.6 built a Q/DQ ONNX asked for fp16 with the FP16 flag alone (8.x needs INT8 for any
    Q/DQ) and recorded it as fp16; an FP16 ONNX asked for fp32 was recorded as fp32."""
    with pytest.raises(ModelError, match=f"the ONNX is {onnx_precision}, so it cannot be built as "
                                         f"{requested}; build it at --precision {onnx_precision}"):
        plan_precision(True, requested, onnx_precision, None, True, "8.6.1")


def test_calibration_given_to_a_build_that_does_not_calibrate_is_refused(trt, tiny_onnx):
    """`dbrt build m.onnx --calib DIR` without --precision int8 built FP16 and ignored --calib."""
    with pytest.raises(ModelError, match="a fp32 build of this fp32 ONNX does not calibrate"):
        build_engine(tiny_onnx, BuildOptions(precision="fp32", profile=SMALL,
                                             calibration=iter([np.zeros((1, 3, 32, 32))])))


@pytest.mark.parametrize("requested", ["fp16", "int8"])
def test_strongly_typed_tensorrt_needs_a_low_precision_onnx(monkeypatch, tiny_onnx, requested):
    import trt_double

    trt_double.install(monkeypatch, "11.x")
    with pytest.raises(ModelError, match=r"strongly typed.*dbrt export --precision " + requested):
        build_engine(tiny_onnx, BuildOptions(precision=requested, profile=SMALL))


def test_fp16_onnx_builds_strongly_typed(trt, tiny_onnx, tmp_path, rng):
    half = fp16_copy(tiny_onnx, tmp_path / "half.onnx")
    record = build_engine_file(half, tmp_path / "half.engine", BuildOptions(profile=SMALL))
    assert record.precision == "fp16"
    # strongly typed where TensorRT can (10.x opt-in, 11.x always); 8.6 builds it weakly typed
    assert record.strongly_typed == {"8.6.1": False, "10.3.0": True, "11.4.0": True}[trt.__version__]
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    with TensorRTRunner(tmp_path / "half.engine") as runner:
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=2e-2)


def test_qdq_onnx_builds_int8_without_calibration(trt, tiny_onnx, tmp_path, rng):
    qdq = qdq_copy(tiny_onnx, tmp_path / "qdq.onnx")
    record = build_engine_file(qdq, tmp_path / "qdq.engine", BuildOptions(profile=SMALL))
    assert record.precision == "int8" and record.builder["calibration_batches"] is None
    flags, strongly_typed = ASKED[(trt.__version__, "qdq", "auto")]
    assert record.strongly_typed == strongly_typed and sorted(record.builder["flags"]) == flags
    batch = rng.random((1, 3, 64, 64), dtype=np.float32)
    with TensorRTRunner(tmp_path / "qdq.engine") as runner:
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(qdq, batch), atol=1e-5)


def test_int8_calibration_on_weak_typing(monkeypatch, tiny_onnx, tmp_path, rng):
    import trt_double

    trt_double.install(monkeypatch, "10.x")
    shapes = []

    def batches(shape):
        shapes.append(shape)
        return (rng.random(shape, dtype=np.float32) for _ in range(3))

    cache = tmp_path / "calib.cache"
    options = BuildOptions(precision="int8", profile=SMALL, calibration=batches, calibration_cache=cache)
    record = build_engine_file(tiny_onnx, tmp_path / "int8.engine", options)
    assert record.precision == "int8" and record.builder["flags"] == ["INT8", "FP16"]
    assert record.builder["calibration_batches"] == 3 and shapes == [SMALL.opt]
    assert cache.read_bytes().startswith(b"TRT-FAKE-CALIBRATION")
    again = build_engine_file(tiny_onnx, tmp_path / "int8b.engine", options)
    assert again.builder["calibration_batches"] == 0          # the cache skipped calibration
    # the cache alone (no images on the board): it was refused as 'needs calibration images'
    alone = build_engine_file(tiny_onnx, tmp_path / "int8c.engine",
                              BuildOptions(precision="int8", profile=SMALL, calibration_cache=cache))
    assert alone.precision == "int8" and alone.builder["calibration_batches"] == 0
    with pytest.raises(ModelError, match="an existing calibration cache"):
        build_engine(tiny_onnx, BuildOptions(precision="int8", profile=SMALL,
                                             calibration_cache=tmp_path / "none.cache"))
    (tmp_path / "empty.cache").write_bytes(b"")  # TensorRT takes no ranges from it, asks for data
    with pytest.raises(ModelError, match="did not take the calibration cache .*give --calib DIR"):
        build_engine(tiny_onnx, BuildOptions(precision="int8", profile=SMALL,
                                             calibration_cache=tmp_path / "empty.cache"))
    with pytest.raises(ModelError, match="calibration images"):
        build_engine(tiny_onnx, BuildOptions(precision="int8", profile=SMALL))


def test_a_refused_calibration_profile_is_an_error(monkeypatch, tiny_onnx):
    """set_calibration_profile returns False when TensorRT does not take the profile."""
    import trt_double
    from trt_double.builder import WeakTypingConfig

    trt_double.install(monkeypatch, "8.6")
    monkeypatch.setattr(WeakTypingConfig, "set_calibration_profile", lambda self, profile: False)
    with pytest.raises(ModelError, match="refused the calibration profile"):
        build_engine(tiny_onnx, BuildOptions(precision="int8", profile=SMALL,
                                             calibration=lambda shape: iter(())))


def test_tensorrt_older_than_8_6_is_refused_in_one_line(monkeypatch, tiny_onnx, tmp_path):
    """JetPack 5's TensorRT 8.5 lacks names the build and the runner use (the optimisation
    level, version compatibility, lean runtimes): refused up front, and `auto` picks ONNX Runtime."""
    import trt_double
    from engine.lazy import MissingDependency
    from engine.loader import tensorrt_usable

    trt = trt_double.install(monkeypatch, "8.6")
    engine = tmp_path / "tiny.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL))
    assert tensorrt_usable()
    monkeypatch.setattr(trt, "__version__", "8.5.2")
    assert not tensorrt_usable()
    with pytest.raises(MissingDependency, match="TensorRT 8.5.2 is installed; dbrt needs TensorRT 8.6"):
        build_engine(tiny_onnx, BuildOptions(profile=SMALL))
    with pytest.raises(MissingDependency, match="8.5.2"):
        TensorRTRunner(engine).activate()


def test_int8_calibrator_is_absent_on_strongly_typed(monkeypatch, tiny_onnx):
    import trt_double

    trt = trt_double.install(monkeypatch, "11.x")
    assert not hasattr(trt, "IInt8EntropyCalibrator2")
    with pytest.raises(ModelError, match="strongly typed"):
        build_engine(tiny_onnx, BuildOptions(precision="int8", profile=SMALL,
                                             calibration=lambda shape: iter(())))


def test_parser_errors_name_the_node(trt, tiny_onnx, tmp_path):
    bad = with_unsupported_node(tiny_onnx, tmp_path / "bad.onnx", name="weird_op_17")
    with pytest.raises(ModelError, match=r"cannot parse bad\.onnx: node weird_op_17 \(Einsum\): "
                                         r"No importer registered for op: Einsum"):
        build_engine(bad, BuildOptions(profile=SMALL))


@pytest.mark.parametrize("profile, message", [
    (ShapeProfile.from_hw((32, 32), (64, 60), (128, 128)), "multiples of 32"),
    (ShapeProfile.from_hw((64, 64), (32, 32), (128, 128)), "min <= opt <= max"),
    (ShapeProfile((1, 4, 32, 32), (1, 4, 64, 64), (1, 4, 64, 64)), "disagrees with the model"),
])
def test_bad_profiles(trt, tiny_onnx, profile, message):
    with pytest.raises(ShapeError, match=message):
        build_engine(tiny_onnx, BuildOptions(profile=profile))


def test_static_input_needs_no_profile(trt, tiny_onnx, tmp_path, rng):
    static = with_static_input(tiny_onnx, tmp_path / "static.onnx", (1, 3, 64, 96))
    record = build_engine_file(static, tmp_path / "static.engine", BuildOptions(precision="fp32"))
    assert record.profile.min == record.profile.max == (1, 3, 64, 96)
    batch = rng.random((1, 3, 64, 96), dtype=np.float32)
    with TensorRTRunner(tmp_path / "static.engine") as runner:
        np.testing.assert_allclose(runner.infer(batch)["prob"], ort_prob(tiny_onnx, batch), atol=1e-5)
        with pytest.raises(ShapeError):
            runner.infer(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ShapeError, match="static input"):
        build_engine(static, BuildOptions(profile=SMALL))


def test_default_profile_follows_the_model_spec(trt, tiny_onnx):
    _, record = build_engine(tiny_onnx, BuildOptions(precision="fp32", profile=profile_for))
    assert record.profile.opt == (1, 3, 256, 480)             # limit_side 256, 16:9
    assert record.profile.min == (1, 3, 32, 32) and record.profile.max == (4, 3, 768, 768)
    with pytest.raises(ShapeError, match="dynamic input .* give an optimisation profile"):
        build_engine(tiny_onnx, BuildOptions(precision="fp32"))  # the engine knows no DBNet


def test_progress_bar_and_cancel(trt, tiny_onnx):
    out = io.StringIO()
    build_engine(tiny_onnx, BuildOptions(profile=SMALL), progress=BuildProgress(out))
    text = out.getvalue()
    assert "done in" in text
    has_monitor = hasattr(trt, "IProgressMonitor")
    assert ("Building engine (2 steps)" in text) == has_monitor
    if has_monitor:
        cancelled = BuildProgress(io.StringIO())
        cancelled.cancelled = True
        with pytest.raises(DbrtError, match="cancelled"):
            build_engine(tiny_onnx, BuildOptions(profile=SMALL), progress=cancelled)


def test_timing_cache_is_written_and_reused(trt, tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    build_engine(tiny_onnx, BuildOptions(profile=SMALL, timing_cache=cache))
    first = cache.read_bytes()
    assert trt.__version__.encode() in first
    build_engine(tiny_onnx, BuildOptions(profile=SMALL, timing_cache=cache))
    assert cache.read_bytes() == first
    for stale in (first.replace(trt.__version__.encode(), b"7.0.0"), b"garbage"):
        cache.write_bytes(stale)               # from another TensorRT, or damaged: start anew
        build_engine(tiny_onnx, BuildOptions(profile=SMALL, timing_cache=cache))
        assert trt.__version__.encode() in cache.read_bytes()


def test_record_round_trip(trt, tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    record = build_engine_file(tiny_onnx, engine, BuildOptions(profile=SMALL, opt_level=2,
                                                               workspace=1 << 26))
    assert EngineRecord.load(engine) == record and record.created
    assert record.builder["opt_level"] == 2 and record.builder["workspace"] == 1 << 26
    assert record.onnx_name == "tiny.onnx" and len(record.onnx_sha256) == 64
    assert "dbrt" in record.metadata


# What TensorRT is asked to do, written out per version (not derived from the flags dbrt reads):
# builder flags, strongly typed network, and the optimisation profile, as the double's plan
# recorded them from the builder config and the network definition.
ASKED = {
    # (TensorRT, ONNX, requested precision): (builder flags, strongly typed network)
    ("8.6.1", "fp32", "auto"): (["FP16"], False),
    ("8.6.1", "fp32", "fp32"): ([], False),
    ("8.6.1", "fp16", "auto"): (["FP16"], False),        # 8.6 has no strongly typed networks
    ("8.6.1", "qdq", "auto"): (["FP16", "INT8"], False),
    ("10.3.0", "fp32", "auto"): (["FP16"], False),
    ("10.3.0", "fp32", "fp32"): ([], False),
    ("10.3.0", "fp16", "auto"): ([], True),               # opt-in strongly typed for typed ONNX
    ("10.3.0", "qdq", "auto"): ([], True),
    ("11.4.0", "fp32", "auto"): ([], True),               # 11.x: strongly typed only, no flags
    ("11.4.0", "fp32", "fp32"): ([], True),
    ("11.4.0", "fp16", "auto"): ([], True),
    ("11.4.0", "qdq", "auto"): ([], True),
}
SMALL_WRITTEN_OUT = {"images": [[1, 3, 32, 32], [1, 3, 64, 64], [2, 3, 128, 128]]}


@pytest.mark.parametrize("onnx_kind, requested", [("fp32", "auto"), ("fp32", "fp32"),
                                                  ("fp16", "auto"), ("qdq", "auto")])
def test_what_tensorrt_is_asked_for(trt, tiny_onnx, tmp_path, onnx_kind, requested):
    from trt_double.plan import Plan

    model = {"fp32": lambda: tiny_onnx, "fp16": lambda: fp16_copy(tiny_onnx, tmp_path / "h.onnx"),
             "qdq": lambda: qdq_copy(tiny_onnx, tmp_path / "q.onnx")}[onnx_kind]()
    data, _ = build_engine(model, BuildOptions(precision=requested, profile=SMALL))
    plan = Plan.from_bytes(bytes(data))
    flags, strongly_typed = ASKED[(trt.__version__, onnx_kind, requested)]
    assert sorted(plan.flags) == flags and plan.strongly_typed == strongly_typed
    assert plan.profiles == [SMALL_WRITTEN_OUT]


def test_the_double_computes_what_pytorch_computes(trt, tiny_onnx, tmp_path, rng):
    """The double runs the ONNX with ONNX Runtime; an independent computation (the PyTorch
    module the ONNX was exported from) must agree, so the double is not its own oracle."""
    torch = pytest.importorskip("torch")
    from conftest import tiny_torch_model

    engine = tmp_path / "tiny.engine"
    build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp32", profile=SMALL))
    batch = rng.random((2, 3, 96, 128), dtype=np.float32)
    with torch.no_grad():
        expected = tiny_torch_model()(torch.from_numpy(batch)).numpy()
    with TensorRTRunner(engine) as runner:
        got = np.asarray(runner.infer(batch)["prob"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_deformable_model_builds_once_the_plugin_library_is_initialised(monkeypatch, tmp_path):
    """TensorRT's ONNX parser imports DeformConv as the ModulatedDeformConv2d plugin, which is
    in the plugin registry only after init_libnvinfer_plugins: the build must call it first."""
    pytest.importorskip("torch")
    import trt_double
    from export.model import DBNet
    from export.onnx_export import export_onnx

    onnx_path = tmp_path / "dcn.onnx"
    export_onnx(DBNet("resnet18", width=0.25, dcn=True).eval(), onnx_path, opset=19,
                example_shape=(1, 3, 64, 64), parity_shapes=None)
    trt10 = trt_double.install(monkeypatch, "10.x")
    logger = trt10.Logger()
    network = trt10.Builder(logger).create_network(0)
    parser = trt10.OnnxParser(network, logger)
    assert not parser.parse(onnx_path.read_bytes())
    assert "plugin was not found" in parser.get_error(0).desc()
    profile = ShapeProfile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 96, 96))
    data, _ = build_engine(onnx_path, BuildOptions(profile=profile))
    assert data


def test_the_plugin_library_is_initialised_once_with_a_logger_that_outlives_builds(
        monkeypatch, tiny_onnx, tmp_path):
    """The plugin library keeps a process-wide pointer to the logger it was first given (the
    binding does not keep it alive): one call per process, with a logger never freed, not a
    builder's or runtime's own that goes when they do."""
    import gc

    import trt_double

    trt10 = trt_double.install(monkeypatch, "10.x")
    engine = tmp_path / "tiny.engine"
    for _ in range(2):
        build_engine_file(tiny_onnx, engine, BuildOptions(precision="fp32", profile=SMALL))
    with TensorRTRunner(engine):
        pass
    gc.collect()
    registry = trt10._plugin_registry
    assert registry["calls"] == 1 and registry["logger"]() is not None


def test_a_fixed_profile_on_a_dynamic_model_and_a_loader_on_a_static_one(trt, tiny_onnx, tmp_path):
    """min == max still needs an optimisation profile when the ONNX input is dynamic; a
    profile loader (what Detector passes) is ignored for a static input, not called on it."""
    import onnx

    fixed = ShapeProfile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    assert build_engine(tiny_onnx, BuildOptions(profile=fixed))
    model = onnx.load(str(tiny_onnx))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 64, 64)):
        dim.dim_value = value  # clears dim_param
    static = tmp_path / "static.onnx"
    onnx.save(model, str(static))
    assert build_engine(static, BuildOptions(profile=lambda metadata: fixed))
