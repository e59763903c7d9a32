"""The models of a Triton repository that dbrt writes, for any ONNX model with a batch dimension:

* `write_onnxruntime_model`: the ONNX file served by a Python-backend model running ONNX Runtime
  (onnxruntime_model.py), for CPUs and the pip wheel's server;
* `write_tensorrt_model`: a serialized TensorRT engine (`platform: "tensorrt_plan"`) for GPUs, with
  dims and max batch from the engine's optimisation profile, CUDA graphs where H and W are fixed,
  and a warm-up request at the profile's opt shape.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence, Tuple, Union

from ..errors import ModelError
from ..onnx_info import OnnxSummary
from ..shapes import ShapeProfile
from .repository import Scheduling, Tensor, model_config, write_model

ONNXRUNTIME_MODEL = Path(__file__).resolve().parent / "onnxruntime_model.py"
# stdlib only, so the model above can load it inside tritonserver without dbrt installed
INT8_CPU_CHECK = Path(__file__).resolve().parents[1] / "onnxruntime" / "int8_cpu.py"


def _dims(shape) -> Tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


def onnx_tensors(summary: OnnxSummary) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]:
    """Inputs and outputs of an ONNX model without their first (batch) dimension."""
    def tensors(infos):
        return tuple(Tensor(t.name, t.dtype, _dims(t.shape[1:])) for t in infos)

    for info in summary.inputs + summary.outputs:
        if len(info.shape) < 1 or isinstance(info.shape[0], int) and info.shape[0] > 0:
            raise ModelError(f"{summary.path}: {info.name!r} has no dynamic batch dimension "
                             f"(shape {info.shape}); Triton's batcher needs one")
    return tensors(summary.inputs), tensors(summary.outputs)


def write_onnxruntime_model(repository, name: str, summary: OnnxSummary, scheduling: Scheduling,
                            parameters: Mapping[str, str] = (), threads: int = 0) -> Path:
    """REPO/NAME: the ONNX file and the Python-backend model that runs it with ONNX Runtime."""
    inputs, outputs = onnx_tensors(summary)
    params = {"onnx_file": "model.onnx", "threads": str(threads), **dict(parameters)}
    config = model_config(name, inputs, outputs, scheduling, backend="python", parameters=params)
    return write_model(repository, config, {"model.onnx": summary.path, "model.py": ONNXRUNTIME_MODEL,
                                            "int8_cpu.py": INT8_CPU_CHECK})


def profile_tensor(name: str, dtype: str, profile: ShapeProfile) -> Tensor:
    """The input's dims (without batch) as the profile allows them: fixed where min == max."""
    return Tensor(name, dtype, tuple(lo if lo == hi else -1
                                     for lo, hi in zip(profile.min[1:], profile.max[1:])))


def write_tensorrt_model(repository, name: str, plan: Union[bytes, Path], profile: ShapeProfile,
                         inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                         scheduling: Scheduling, parameters: Mapping[str, str] = ()) -> Path:
    """REPO/NAME/1/model.plan and its config. The profile's max batch is the model's
    max_batch_size (Triton must never send more than the engine takes); CUDA graphs only when
    the engine's spatial dims are fixed (a graph is captured per shape)."""
    if profile.min[0] > 1:
        raise ModelError(f"the engine's profile ({profile.describe()}) must accept batch 1")
    if scheduling.max_batch_size != profile.max[0]:
        raise ModelError(f"max batch size {scheduling.max_batch_size} differs from the engine "
                         f"profile's max batch {profile.max[0]}")
    static = profile.min[1:] == profile.max[1:]
    config = model_config(name, inputs, outputs, scheduling, platform="tensorrt_plan",
                          default_model_filename="model.plan", parameters=parameters,
                          cuda_graphs=static, warmup={inputs[0].name: profile.opt[1:]})
    return write_model(repository, config, {"model.plan": plan})
