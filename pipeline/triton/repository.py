"""A Triton model repository for a DBNet (`dbrt triton export`):

    REPO/NAME/                the network: ONNX Runtime in a Python-backend model (backend "onnx")
                              or a TensorRT plan (backend "tensorrt"); config parameter `dbrt` is
                              the model's ModelSpec JSON, so a client rebuilds the Detector's
                              pre- and post-processing from the server
    REPO/NAME_postprocess/    (--with-postprocess) DB post-processing in a Python-backend model,
                              with a copy of dbrt's sources in 1/dbrt
    REPO/NAME_detect/         (--with-postprocess) the ensemble: images + frame_size -> detections

The ensemble takes what the network takes (preprocessed images, see ModelSpec) plus each frame's
(height, width), and returns one JSON list of {"polygon", "score"} per frame, in frame pixels.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from dbnet.spec import METADATA_KEY, ModelSpec, default_profile
from engine.errors import ModelError
from engine.onnx_info import OnnxSummary
from engine.shapes import ShapeProfile
from engine.triton.models import (onnx_tensors, profile_tensor, write_onnxruntime_model,
                                  write_tensorrt_model)
from engine.triton.repository import (Scheduling, Tensor, check_name, ensemble_config, model_config,
                                      read_config, replaceable_model_folder, write_model)

BACKENDS = ("onnx", "tensorrt")
POSTPROCESS_MODEL = Path(__file__).resolve().parent / "postprocess_model.py"
DBRT_ROOT = Path(__file__).resolve().parents[2]
DBRT_PACKAGES = ("engine", "dbnet", "pipeline")   # what the post-processing model imports


@dataclass(frozen=True)
class TritonExport:
    """What to write: the model's name, backend and scheduling, ONNX Runtime threads per
    instance, and whether to add post-processing + the ensemble. For TensorRT, `input_hw` fixes
    the engine's H and W (CUDA graphs); otherwise the ModelSpec's default profile is used."""

    name: str = "dbnet"
    backend: str = "onnx"
    scheduling: Scheduling = field(default_factory=Scheduling)
    threads: int = 0
    with_postprocess: bool = False
    input_hw: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        check_name(self.name)
        if self.backend not in BACKENDS:
            raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


def engine_profile(spec: ModelSpec, scheduling: Scheduling,
                   input_hw: Optional[Tuple[int, int]] = None) -> ShapeProfile:
    """Batches 1..max_batch_size, tuned for the largest preferred batch; H and W fixed at
    `input_hw`, else the spec's default video profile."""
    batch = (1, max(scheduling.preferred or (scheduling.max_batch_size,)), scheduling.max_batch_size)
    if input_hw:
        return ShapeProfile.from_hw(input_hw, input_hw, input_hw, batch=batch).validate(spec.resize.stride)
    base = default_profile(spec.resize.limit_side, spec.resize.limit_type, spec.resize.stride)
    return ShapeProfile.from_hw(base.min[2:], base.opt[2:], base.max[2:], batch=batch)


def _static_outputs(summary: OnnxSummary, outputs, profile: ShapeProfile) -> Tuple[Tensor, ...]:
    """Output dims fixed where they share a symbolic dim with the input and the profile fixes it."""
    fixed = {d: lo for d, lo, hi in zip(summary.inputs[0].shape[1:], profile.min[1:], profile.max[1:])
             if isinstance(d, str) and lo == hi}
    result = []
    for tensor, info in zip(outputs, summary.outputs):
        dims = tuple(fixed.get(d, size) if isinstance(d, str) else size
                     for d, size in zip(info.shape[1:], tensor.dims))
        result.append(Tensor(tensor.name, tensor.dtype, dims))
    return tuple(result)


def write_network(repository: Path, summary: OnnxSummary, spec: ModelSpec, export: TritonExport,
                  build: Optional[Callable] = None) -> Path:
    """REPO/NAME: the network with the ModelSpec in its parameters. `build(onnx, profile)` ->
    (plan bytes, EngineRecord) makes the TensorRT engine (engine.tensorrt.build by default)."""
    parameters = {METADATA_KEY: spec.to_json()}
    if export.backend == "onnx":
        return write_onnxruntime_model(repository, export.name, summary, export.scheduling,
                                       {**parameters, "precision": spec.precision}, export.threads)
    scheduling = export.scheduling
    if scheduling.kind == "KIND_CPU":
        scheduling = Scheduling(scheduling.max_batch_size, scheduling.preferred,
                                scheduling.queue_delay_us, scheduling.instances, "KIND_GPU")
    plan, record = (build or _build_engine)(summary.path, engine_profile(spec, scheduling, export.input_hw))
    inputs, outputs = onnx_tensors(summary)
    dtype = inputs[0].dtype
    network_input = profile_tensor(record.input_name, dtype, record.profile)
    outputs = _static_outputs(summary, outputs, record.profile)
    parameters.update(tensorrt_version=record.tensorrt_version, gpu=record.gpu_name,
                      compute_capability=record.compute_capability, precision=record.precision)
    return write_tensorrt_model(repository, export.name, plan, record.profile, (network_input,),
                                outputs, scheduling, parameters)


def _build_engine(onnx_path: Path, profile: ShapeProfile):
    from engine.tensorrt.build import BuildOptions, build_engine

    return build_engine(onnx_path, BuildOptions(profile=profile))


def _copy_sources(target: Path) -> None:
    """dbrt's Python sources (no assets, no caches) for the post-processing model."""
    for package in DBRT_PACKAGES:
        shutil.copytree(DBRT_ROOT / package, target / package,
                        ignore=lambda folder, names: [n for n in names if n == "__pycache__" or (
                            "." in n and not n.endswith(".py"))])


def write_postprocess(repository: Path, network: Path, spec: ModelSpec, export: TritonExport) -> List[Path]:
    """REPO/NAME_postprocess and the ensemble REPO/NAME_detect chaining it after the network."""
    net = read_config(network / "config.pbtxt")
    batch = export.scheduling.max_batch_size
    net_in, net_out = net.input[0], net.output[0]
    if spec.output:
        matches = [o for o in net.output if o.name == spec.output]
        net_out = matches[0] if matches else net_out
    prob = Tensor.from_config(net_out)
    size = Tensor("frame_size", "int32", (2,))
    detections = Tensor("detections", "bytes", (1,))
    post_name = f"{export.name}_postprocess"
    post = model_config(post_name, (prob, size), (detections,),
                        Scheduling(batch, export.scheduling.preferred, export.scheduling.queue_delay_us,
                                   export.scheduling.instances, "KIND_CPU"),
                        backend="python", parameters={"dbrt_path": "dbrt", METADATA_KEY: spec.to_json()})
    post_folder = write_model(repository, post, {"model.py": POSTPROCESS_MODEL},
                              fill=lambda version: _copy_sources(version / "dbrt"))
    images = Tensor.from_config(net_in)
    ensemble = ensemble_config(
        f"{export.name}_detect", (images, size), (detections,),
        [(export.name, {net_in.name: images.name}, {net_out.name: "prob_map"}),
         (post_name, {net_out.name: "prob_map", "frame_size": "frame_size"},
          {"detections": "detections"})],
        batch, parameters={METADATA_KEY: spec.to_json()})
    return [post_folder, write_model(repository, ensemble)]


def export_repository(repository, summary: OnnxSummary, spec: ModelSpec, export: TritonExport,
                      build: Optional[Callable] = None) -> List[Path]:
    """Write the repository's models; returns their folders."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    network = write_network(repository, summary, spec, export, build)
    folders = [network]
    if export.with_postprocess:
        folders += write_postprocess(repository, network, spec, export)
    else:  # an earlier export's ensemble would serve stale settings, or stop the server
        for stale in (f"{export.name}_postprocess", f"{export.name}_detect"):
            if replaceable_model_folder(repository / stale):
                shutil.rmtree(repository / stale)
    return folders
