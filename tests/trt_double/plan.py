"""What the fake builder does: the serialized plan format, the progress phases it reports and
legacy INT8 calibration. Computation is ONNX Runtime (CPU) on the embedded ONNX."""
from __future__ import annotations

import json
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np

from . import fake_cuda

# What the fake parser imports (DBNet's operators, Q/DQ, FP16 casts and exporter glue, and the
# PP-OCR rec operators: its SVTR neck's attention, HardSwish-style activations, CTC head); all
# have importers in TensorRT's ONNX parser.
SUPPORTED_OPS = frozenset({
    "Conv", "ConvTranspose", "BatchNormalization", "Relu", "Add", "Concat", "Sigmoid", "Resize",
    "MaxPool", "Mul", "Sub", "Div", "Reciprocal", "Exp", "Cast", "Identity", "Constant", "Shape",
    "Gather", "Unsqueeze", "Squeeze", "Slice", "Reshape", "Pad", "Clip", "QuantizeLinear",
    "DequantizeLinear", "AveragePool", "Erf", "HardSigmoid", "MatMul", "Pow", "ReduceMean",
    "Softmax", "Sqrt", "Transpose"})
MAGIC = b"FAKETRT1"
CALIBRATION_MAGIC = b"TRT-FAKE-CALIBRATION\n"


@dataclass
class PlanTensor:
    name: str
    mode: str            # "INPUT" / "OUTPUT"
    dtype: str           # trt.DataType member name
    shape: tuple         # -1 for dynamic dimensions


@dataclass
class Plan:
    version: str
    compute_capability: str
    tensors: List[PlanTensor]
    profiles: List[Dict[str, list]]    # per profile: input name -> [min, opt, max]
    flags: List[str]
    strongly_typed: bool
    onnx_bytes: bytes
    hardware_level: str = "NONE"       # trt.HardwareCompatibilityLevel member name
    dla_core: int = -1                 # the DLA core it was built for (-1: GPU only)

    def to_bytes(self) -> bytes:
        header = asdict(self)
        header.pop("onnx_bytes")
        blob = json.dumps(header).encode()
        return MAGIC + struct.pack("<Q", len(blob)) + blob + self.onnx_bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> "Plan":
        if not data.startswith(MAGIC):
            raise ValueError("Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag "
                             "does not match")
        (size,) = struct.unpack("<Q", data[8:16])
        header = json.loads(data[16:16 + size])
        header["tensors"] = [PlanTensor(t["name"], t["mode"], t["dtype"], tuple(t["shape"]))
                             for t in header["tensors"]]
        return cls(onnx_bytes=data[16 + size:], **header)


def ort_session(onnx_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def python_override(obj, method: str, failed, *args):
    """`obj.method(*args)` as TensorRT's pybind11 trampolines call a Python override
    (python/src/infer/pyInt8.cpp, pyCore.cpp: PyProgressMonitor): an exception never leaves
    the callback; it is printed to stderr and the call answers `failed` (get_batch: no more
    batches; step_complete: cancel; read_calibration_cache: no cache)."""
    try:
        return getattr(obj, method)(*args)
    except Exception as exc:  # noqa: BLE001 - the C++ side catches std::exception and ...
        sys.stderr.write(f"[ERROR] Exception caught in {method}(): {exc}\n")
        return failed


class _Monitor:
    """The progress monitor seen from the C++ side (exceptions end in `python_override`)."""

    def __init__(self, monitor):
        self.monitor = monitor

    def phase_start(self, *args):
        python_override(self.monitor, "phase_start", None, *args)

    def step_complete(self, *args) -> bool:
        return bool(python_override(self.monitor, "step_complete", False, *args))

    def phase_finish(self, *args):
        python_override(self.monitor, "phase_finish", None, *args)


def run_build_phases(config, steps: int) -> bool:
    """Report phases to the progress monitor (if any); False when the monitor cancels."""
    if config._monitor is None:
        return True
    monitor = _Monitor(config._monitor)
    top, tactics = "Building engine", "Tactic selection"
    monitor.phase_start(top, None, 2)
    monitor.phase_start(tactics, top, steps)
    for step in range(steps):
        if not monitor.step_complete(tactics, step):
            monitor.phase_finish(tactics)
            monitor.phase_finish(top)
            return False
    monitor.phase_finish(tactics)
    keep_going = monitor.step_complete(top, 0) and monitor.step_complete(top, 1)
    monitor.phase_finish(top)
    return bool(keep_going)


def calibrate(trt, network, config) -> Optional[str]:
    """Legacy INT8 calibration: pull batches through `get_batch`, read them from the device
    addresses returned, run the network and write a calibration table. Error text or None."""
    calibrator = config._calibrator
    if calibrator is None:
        return None                      # TensorRT warns about missing scales and falls back
    cached = python_override(calibrator, "read_calibration_cache", None)
    if cached:
        return None if bytes(cached).startswith(CALIBRATION_MAGIC) else "Calibration table is invalid"
    profile = config.calibration_profile or (config.profiles[0] if config.profiles else None)
    inputs = network._inputs
    session = ort_session(network.onnx_bytes)
    amax: Dict[str, float] = {}
    batches = 0
    while True:
        pointers = python_override(calibrator, "get_batch", None, [t.name for t in inputs])
        if not pointers:
            break
        feed = {}
        for tensor, ptr in zip(inputs, pointers):
            shape = profile.shapes[tensor.name][1] if profile else tensor.shape
            try:
                feed[tensor.name] = fake_cuda.resolve(int(ptr), shape, np.float32).copy()
            except fake_cuda.IllegalAddress as exc:
                return f"Calibration failure: {exc}"
        outputs = session.run(None, feed)
        values = list(feed.items()) + [(o.name, v) for o, v in zip(session.get_outputs(), outputs)]
        for name, value in values:
            amax[name] = max(amax.get(name, 0.0), float(np.abs(value).max()))
        batches += 1
    if batches == 0:
        return ("Calibration failure occurred with no scaling factors detected. This could be "
                "due to no int8 calibrator or insufficient custom scales for network layers.")
    table = CALIBRATION_MAGIC + "".join(f"{k}: {v:.6g}\n" for k, v in sorted(amax.items())).encode()
    python_override(calibrator, "write_calibration_cache", None, memoryview(table))
    return None
