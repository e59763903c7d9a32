"""FP16 and INT8 ONNX from an FP32 dbrt ONNX, for TensorRT's strongly typed path (10.x / 11.x).

    from export.quantize import to_fp16, to_int8
    to_fp16("m.onnx", "m_fp16.onnx")                               # FP32 inputs / outputs kept
    data = calibration_inputs("frames/", spec, count=64)  # from pipeline.sampling; or a video
    to_int8("m.onnx", "m_int8.onnx", data)                  # 99.999th-percentile ranges (the default)
    to_int8("m.onnx", "m_int8.onnx", data, method="entropy", keep_fp32_head=True, keep_fp32_stem=True)
    to_int8("m.onnx", "m_int8.onnx", data, keep_fp32_sensitive=20)   # most sensitive layers FP32

FP16: NVIDIA ModelOpt AutoCast when `modelopt` is installed, else onnxconverter-common's
float16 converter (keep_io_types). INT8: ONNX Runtime `quantize_static`, QDQ format, symmetric
(zero point 0) activations and per-channel weights - what TensorRT's explicit quantization
needs - calibrated on inputs made by the runtime preprocessing (pipeline.sampling). The input
opset is kept, so an opset-17 model stays usable on TensorRT 8.6. Both outputs are single files
carrying the source's dbrt metadata with `precision` updated.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import List, Sequence

import numpy as np

from engine.errors import ModelError, SourceError
from engine.lazy import optional, require
from dbnet.spec import METADATA_KEY, Int8Notes, ModelSpec, resolve_spec

from .calibration import ArrayReader, write_cache

CALIB_METHODS = ("percentile", "mse", "entropy", "minmax")
DEFAULT_CALIB_METHOD = CALIB_METHODS[0]  # chosen on a validation split: int8_calibration.md
FP16_BACKENDS = ("auto", "modelopt", "onnxconverter")
# Ops whose inputs get Q/DQ (tensorrt.md): TensorRT fuses Q/DQ around these; DeformConv stays FP.
INT8_OPS = ("Conv", "ConvTranspose", "Add")
_HEAD_OPS = {"ConvTranspose", "Sigmoid", "Relu", "BatchNormalization"}


def _load(model):
    onnx = require("onnx")
    if isinstance(model, onnx.ModelProto):
        return model
    if not os.path.isfile(model):
        raise ModelError(f"model file not found: {model}")
    return onnx.load(str(model))


def _fp32_source(model):
    """The model with FP16 weight storage expanded (a copy when given a ModelProto): the FP16
    converter refuses such a file as already converted, and the INT8 quantizer would otherwise
    quantize the Casts' outputs as activations (per tensor) instead of the weights per channel."""
    onnx = require("onnx")
    from engine.onnx_info import expand_fp16_storage

    proto = _load(model)
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto.FromString(proto.SerializeToString())
    expand_fp16_storage(proto)
    return proto


def model_spec(model) -> ModelSpec:
    from .onnx_graph import get_metadata

    return resolve_spec(get_metadata(_load(model)))


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer prints progress and logs pre-processing advice on the root logger, and the
    FP16 converter warns per clamped weight: noise for our users, so we hold it back."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _finish(proto, out_path, spec: ModelSpec, precision: str) -> Path:
    """Carry the dbrt metadata over, mark the precision, save as one file."""
    onnx = require("onnx")
    from .onnx_graph import set_metadata

    set_metadata(proto, METADATA_KEY, spec.replace(precision=precision).to_json())
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out_path), save_as_external_data=False)
    return out_path


# ----------------------------------------------------------------------------------- FP16

def fp16_backend(requested: str = "auto") -> str:
    if requested not in FP16_BACKENDS:
        raise ModelError(f"unknown FP16 converter {requested!r}; choose {', '.join(FP16_BACKENDS)}")
    if requested == "auto":
        return "modelopt" if optional("modelopt.onnx.autocast") is not None else "onnxconverter"
    return requested


FP16_MODULES = {"modelopt": "modelopt.onnx.autocast", "onnxconverter": "onnxconverter_common.float16"}


def check_fp16_backend(requested: str = "auto") -> str:
    """The converter `to_fp16` will use, its package imported now (MissingDependency with an
    install hint otherwise): a missing one is said before an export's work, not after it."""
    backend = fp16_backend(requested)
    require(FP16_MODULES[backend])
    return backend


def to_fp16(model, out_path, backend: str = "auto") -> Path:
    """FP16 weights and compute, FP32 graph inputs and outputs."""
    backend = fp16_backend(backend)
    source = _fp32_source(model)
    spec = model_spec(source)  # the file is read once
    if backend == "modelopt":
        proto = _fp16_modelopt(source)
    else:
        proto = _fp16_onnxconverter(source)
    return _finish(proto, out_path, spec, "fp16")


def _fp16_onnxconverter(proto):
    """onnxconverter-common float16, with Resize converted too (its default keeps Resize in FP32
    between two Casts per Resize); Resize's roi / scales inputs must stay float32, so we restore them."""
    converter = require(FP16_MODULES["onnxconverter"])
    blocked = [op for op in converter.DEFAULT_OP_BLOCK_LIST if op != "Resize"]
    with _quiet():
        proto = converter.convert_float_to_float16(proto, keep_io_types=True, op_block_list=blocked)
    _resize_params_to_fp32(proto)
    return proto


def _resize_params_to_fp32(proto) -> None:
    from onnx import TensorProto, numpy_helper

    wanted = {name for n in proto.graph.node if n.op_type == "Resize" for name in n.input[1:3] if name}

    def fix(tensor):
        if tensor.data_type == TensorProto.FLOAT16:
            value = numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))

    for init in proto.graph.initializer:
        if init.name in wanted:
            fix(init)
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] in wanted:
            fix(node.attribute[0].t)


def _fp16_modelopt(model):
    autocast = require(FP16_MODULES["modelopt"])
    with tempfile.TemporaryDirectory() as tmp:
        path = model
        if not isinstance(model, (str, os.PathLike)):
            path = os.path.join(tmp, "fp32.onnx")
            require("onnx").save_model(model, path)
        return autocast.convert_to_mixed_precision(onnx_path=str(path), low_precision_type="fp16",
                                                   keep_io_types=True, providers=["cpu"])


# ----------------------------------------------------------------------------------- INT8

def head_nodes(proto) -> List[str]:
    """Names of the output head: the ConvTranspose / Relu / Sigmoid chain back from the
    probability output and the convolution that feeds it (DB's 3x3 conv after the concat)."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    names = []
    node = producers.get(proto.graph.output[0].name)
    while node is not None and node.op_type in _HEAD_OPS:
        names.append(node.name)
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Conv":
        names.append(node.name)
    return names


def decoder_nodes(proto) -> List[str]:
    """The FPN neck and the head (dbrt's exported module names, `/decoder/...`): everything after
    the backbone. Kept in FP32 the INT8 gain stays where the compute is (the ResNet)."""
    names = [n.name for n in proto.graph.node
             if n.op_type in INT8_OPS and n.name.startswith("/decoder/")]
    if not names:
        raise ModelError("no '/decoder/' nodes in this ONNX: keeping the decoder in FP32 needs a "
                         "model exported by dbrt (use keep_fp32_head for other models)")
    return names + [n for n in head_nodes(proto) if n not in names]


def stem_nodes(proto) -> List[str]:
    """The first convolution (reads the image itself)."""
    source = proto.graph.input[0].name
    return [n.name for n in proto.graph.node if n.op_type == "Conv" and n.input[0] == source][:1]


def int8_options(method: str = DEFAULT_CALIB_METHOD, exclude: Sequence[str] = ()) -> dict:
    """quantize_static keyword arguments for TensorRT explicit quantization (tensorrt.md)."""
    q = require("onnxruntime.quantization")
    if method not in CALIB_METHODS:
        raise ModelError(f"unknown calibration method {method!r}; choose {', '.join(CALIB_METHODS)}")
    # 'mse' ranges always arrive as a calibration cache; ORT is told 'entropy' (it reads no data)
    calib = {"entropy": q.CalibrationMethod.Entropy, "mse": q.CalibrationMethod.Entropy,
             "minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile}[method]
    return dict(quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8, per_channel=True, reduce_range=False,
                calibrate_method=calib, op_types_to_quantize=list(INT8_OPS),
                nodes_to_exclude=list(exclude), use_external_data_format=False,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "QuantizeBias": False, "AddQDQPairToWeight": True,
                               "DedicatedQDQPair": False,
                               "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1}})


def int8_layer_ranking(model, calibration: Sequence[np.ndarray], method: str = DEFAULT_CALIB_METHOD) -> list:
    """`export.sensitivity.LayerSensitivity` of every quantizable layer, most sensitive first
    (to choose `keep_fp32_nodes` once for several variants)."""
    from .sensitivity import int8_sensitivity

    proto = _fp32_source(model)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src = os.path.join(tmp, "fp32.onnx")
        require("onnx").save_model(proto, src)
        cache = write_cache(src, proto.graph.input[0].name, calibration, method, INT8_OPS, tmp)
        return int8_sensitivity(src, calibration, cache, int8_options(method), tmp)


def to_int8(model, out_path, calibration: Sequence[np.ndarray], method: str = DEFAULT_CALIB_METHOD,
            keep_fp32_head: bool = False, keep_fp32_stem: bool = False,
            keep_fp32_decoder: bool = False, keep_fp32_sensitive: int = 0,
            keep_fp32_nodes: Sequence[str] = ()) -> Path:
    """Explicitly quantized (Q/DQ) INT8 ONNX calibrated on `calibration` inputs.

    keep_fp32_head / _stem / _decoder leave those layers unquantized (the decoder: FPN + head);
    keep_fp32_sensitive=K the K layers INT8 hurts most (`export.sensitivity`, measured on the
    calibration inputs); keep_fp32_nodes names nodes directly. What was left out and the share of
    convolution MACs still INT8 are recorded in the model's dbrt metadata (`ModelSpec.int8`)."""
    q = require("onnxruntime.quantization")
    proto = _fp32_source(model)
    spec = model_spec(proto)
    if not calibration:
        raise SourceError("INT8 quantization needs calibration inputs")
    if keep_fp32_sensitive < 0:
        raise ModelError("keep_fp32_sensitive must be >= 0")
    int8_options(method)  # an unknown method fails here, before any calibration work
    # INT8 hurts most at both ends of the network: optionally leave them in FP32 / FP16
    exclude = ((head_nodes(proto) if keep_fp32_head else [])
               + (stem_nodes(proto) if keep_fp32_stem else [])
               + (decoder_nodes(proto) if keep_fp32_decoder else []) + list(keep_fp32_nodes))
    known = {n.name for n in proto.graph.node}
    unknown = [n for n in keep_fp32_nodes if n not in known]
    if unknown:
        raise ModelError(f"no such nodes in the model: {', '.join(unknown)}")
    name = proto.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:  # ORT writes its own files; keep only ours
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        require("onnx").save_model(proto, src)
        with _quiet():
            # older ORT has no calibration caches: its own search (entropy then equals min-max)
            cached = hasattr(require("onnxruntime.quantization.calibrate"), "save_tensors_data")
            if method == "mse" and not cached:
                raise ModelError("calibration method 'mse' needs onnxruntime >= 1.19 (calibration caches)")
            if keep_fp32_sensitive and not cached:
                raise ModelError("keep_fp32_sensitive needs onnxruntime >= 1.19 (calibration caches)")
            reader, cache, source = ArrayReader(name, calibration), None, {}
            if cached:  # TensorRT-like ranges, computed once, handed over as a cache
                cache = write_cache(src, name, calibration, method, INT8_OPS, tmp)
                reader, source = None, {"calibration_cache_path": cache}
            if keep_fp32_sensitive:
                from .sensitivity import int8_sensitivity

                ranked = int8_sensitivity(src, calibration, cache, int8_options(method), tmp)
                exclude += [s.name for s in ranked if s.name not in exclude][:keep_fp32_sensitive]
            exclude = list(dict.fromkeys(exclude))
            q.quantize_static(src, dst, reader, **source, **int8_options(method, exclude))
        result = require("onnx").load(dst)
    from .sensitivity import int8_mac_share  # recorded for full INT8 too (DCN stays float)

    share = int8_mac_share(proto, calibration[0].shape, exclude)
    spec = spec.replace(int8=Int8Notes(tuple(exclude), round(share, 4)))
    return _finish(result, out_path, spec, "int8")
