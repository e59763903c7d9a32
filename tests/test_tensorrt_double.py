"""The TensorRT test double itself: each flavour has exactly the API of its TensorRT version
(names the real package lacks fail with AttributeError) and behaves like TensorRT where dbrt
depends on it. Driven through the raw API, as a TensorRT user would."""
import numpy as np
import pytest
from engine_helpers import SMALL, ort_prob

import trt_double
from trt_double import fake_cuda


@pytest.mark.parametrize("flavour, name, present", [
    ("10.x", "BuilderFlag.FP16", True), ("11.x", "BuilderFlag.FP16", False),
    ("10.x", "BuilderFlag.INT8", True), ("11.x", "BuilderFlag.INT8", False),
    ("11.x", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", False),
    ("10.x", "IInt8EntropyCalibrator2", True), ("11.x", "IInt8EntropyCalibrator2", False),
    ("10.x", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", True),
    ("11.x", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", False),
    ("10.x", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", True),
    ("11.x", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", True),    # kept, always on
    ("8.6", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", False),
    ("8.6", "IProgressMonitor", False), ("10.x", "IProgressMonitor", True),
    ("11.x", "IProgressMonitor", True), ("11.x", "BuilderFlag.VERSION_COMPATIBLE", True),
    ("8.6", "DataType.FP8", True), ("8.6", "DataType.BF16", False), ("8.6", "DataType.INT64", False),
    ("10.x", "DataType.BF16", True), ("10.x", "DataType.INT64", True), ("11.x", "DataType.FP4", True),
    ("8.6", "HardwareCompatibilityLevel.AMPERE_PLUS", True),
    ("10.x", "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY", False),
    ("11.x", "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY", True),
])
def test_module_names_per_flavour(flavour, name, present):
    obj = trt_double.make_tensorrt(flavour)
    if present:
        for part in name.split("."):
            obj = getattr(obj, part)
    else:
        with pytest.raises(AttributeError):
            for part in name.split("."):
                obj = getattr(obj, part)


def _config(flavour):
    trt = trt_double.make_tensorrt(flavour)
    return trt, trt.Builder(trt.Logger()).create_builder_config()


@pytest.mark.parametrize("flavour, attribute, present", [
    ("10.x", "int8_calibrator", True), ("11.x", "int8_calibrator", False),
    ("8.6", "progress_monitor", False), ("10.x", "progress_monitor", True),
    ("11.x", "progress_monitor", True), ("11.x", "no_such_setting", False),
])
def test_config_attributes_per_flavour(flavour, attribute, present):
    _, config = _config(flavour)
    if present:
        setattr(config, attribute, None)
    else:
        with pytest.raises(AttributeError):
            setattr(config, attribute, None)


def test_removed_engine_and_parser_names():
    assert hasattr(trt_double.make_tensorrt("10.x").Builder, "create_network")
    old = trt_double.make_tensorrt("8.6")
    new = trt_double.make_tensorrt("11.x")
    assert hasattr(old._double.engine_class, "device_memory_size")
    assert not hasattr(new._double.engine_class, "device_memory_size")
    assert hasattr(new._double.engine_class, "device_memory_size_v2")


def _raw_build(trt, onnx_path, profile=SMALL, flags=0):
    """build_serialized_network the way the TensorRT samples do it."""
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        return logger, None, parser
    config = builder.create_builder_config()
    if profile is not None:
        p = builder.create_optimization_profile()
        p.set_shape("images", profile.min, profile.opt, profile.max)
        config.add_optimization_profile(p)
    return logger, builder.build_serialized_network(network, config), parser


def test_8x_parser_needs_explicit_batch(tiny_onnx):
    trt = trt_double.make_tensorrt("8.6")
    logger, plan, parser = _raw_build(trt, tiny_onnx)
    assert plan is None and parser.num_errors == 1
    assert "explicit batch" in parser.get_error(0).desc()
    assert not hasattr(parser.get_error(0), "node_name")    # 8.x errors carry the index only
    explicit = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert _raw_build(trt, tiny_onnx, flags=explicit)[1] is not None


def test_dynamic_network_needs_a_profile(tiny_onnx):
    trt = trt_double.make_tensorrt("11.x")
    logger, plan, _ = _raw_build(trt, tiny_onnx, profile=None)
    assert plan is None
    assert any("no optimization profile" in msg for _, msg in logger.messages)


def test_runtime_semantics(tiny_onnx, rng):
    trt = trt_double.make_tensorrt("10.x")
    logger, plan, _ = _raw_build(trt, tiny_onnx)
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(plan))
    assert engine.num_io_tensors == 2 and engine.get_tensor_name(0) == "images"
    assert engine.get_tensor_mode("prob") == trt.TensorIOMode.OUTPUT
    assert trt.nptype(engine.get_tensor_dtype("images")) is np.float32
    with pytest.raises(TypeError, match="equivalent numpy datatype"):
        trt.nptype(trt.DataType.BF16)
    assert engine.get_tensor_shape("images") == (-1, 3, -1, -1)
    context = engine.create_execution_context()
    assert context.get_tensor_shape("prob") == (-1, 1, -1, -1)       # unknown before the input
    assert not context.set_input_shape("images", (1, 3, 256, 64))    # outside the profile
    assert "satisfyProfile" in logger.messages[-1][1]
    assert context.set_input_shape("images", (1, 3, 64, 96))
    assert context.get_tensor_shape("prob") == (1, 1, 64, 96)
    batch = rng.random((1, 3, 64, 96), dtype=np.float32)
    x, y = fake_cuda.to_device(batch), fake_cuda.device_empty((1, 1, 64, 96), np.float32)
    assert not context.execute_async_v3(0)                           # no addresses yet
    context.set_tensor_address("images", x.ctypes.data)
    context.set_tensor_address("prob", 256 * 12345)                  # not device memory
    assert not context.execute_async_v3(0)
    assert "illegal memory access" in logger.messages[-1][1]
    context.set_tensor_address("prob", y.ctypes.data)
    assert context.execute_async_v3(0)
    np.testing.assert_allclose(y, ort_prob(tiny_onnx, batch), atol=1e-5)


def test_plans_do_not_cross_versions(tiny_onnx):
    ten = trt_double.make_tensorrt("10.x")
    _, plan, _ = _raw_build(ten, tiny_onnx)
    eleven = trt_double.make_tensorrt("11.x")
    logger = eleven.Logger()
    assert eleven.Runtime(logger).deserialize_cuda_engine(bytes(plan)) is None
    assert "expecting library version 11.4.0 got 10.3.0" in logger.messages[-1][1]
    assert eleven.Runtime(logger).deserialize_cuda_engine(b"garbage") is None


def test_strongly_typed_network_rejects_precision_flags(tiny_onnx):
    trt = trt_double.make_tensorrt("10.x")
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(tiny_onnx))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    p = builder.create_optimization_profile()
    p.set_shape("images", SMALL.min, SMALL.opt, SMALL.max)
    config.add_optimization_profile(p)
    assert builder.build_serialized_network(network, config) is None
    assert "strongly typed" in logger.messages[-1][1]


def test_graph_capture_records_and_replays():
    backend = fake_cuda.HostBackend()
    stream = backend.stream()
    buffer = backend.empty((3,), np.float32)
    buffer[...] = 0
    backend.begin_capture(stream)
    fake_cuda.enqueue(stream.ptr, lambda: buffer.__iadd__(1))
    assert buffer.tolist() == [0, 0, 0]                              # captured, not run
    with pytest.raises(RuntimeError):
        backend.synchronize(stream)                                  # illegal while capturing
    graph = backend.end_capture(stream)
    backend.launch(graph, stream)
    backend.launch(graph, stream)
    assert buffer.tolist() == [0, 0, 0]                              # queued on the stream
    backend.synchronize(stream)
    assert buffer.tolist() == [2, 2, 2]
