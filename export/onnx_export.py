"""PyTorch DBNet -> one self-contained ONNX file with dbrt metadata and a parity report.

    from export.onnx_export import export_onnx
    report = export_onnx(model, "dbnet.onnx", opset=17)      # raises ModelError if parity fails
    print(report)                                             # sizes, folded BNs, max/mean diffs

- opset 17 for TensorRT 8.x, 18-20 otherwise; DeformConv (DCN models) needs 19 (TensorRT >= 10.1).
- dynamic batch / height / width; input "images", output "prob" (N, 1, H, W).
- the TorchScript exporter (dynamo=False) writes everything into one file: no `.onnx.data`.
- BatchNormalization folded (the exporter folds Conv + BN, `onnx_graph.fold_batchnorm` the rest).
- `metadata_props["dbrt"]` = the model's ModelSpec JSON, so later stages need no flags.
- parity: ONNX Runtime CPU vs PyTorch on realistic inputs at two shapes (the second one checks the
  dynamic axes); above `atol` (1e-4 by default) max abs difference it raises.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np

from engine.errors import ModelError
from dbnet.spec import METADATA_KEY, ModelSpec

if TYPE_CHECKING:
    import torch

INPUT_NAME, OUTPUT_NAME = "images", "prob"
EXPORTER_OPSETS = range(13, 21)  # what torch's TorchScript exporter can write
DEFAULT_PARITY_SHAPES = ((1, 3, 128, 160), (2, 3, 96, 224))


@dataclass(frozen=True)
class ParityResult:
    shape: Tuple[int, ...]
    max_abs: float
    mean_abs: float


@dataclass
class ExportReport:
    path: Path
    opset: int
    spec: ModelSpec
    folded_batchnorms: int
    remaining_batchnorms: int
    size_bytes: int
    parity: List[ParityResult] = field(default_factory=list)
    atol: float = 1e-4

    @property
    def max_abs(self) -> float:
        return max((p.max_abs for p in self.parity), default=float("nan"))

    @property
    def passed(self) -> bool:
        return bool(self.parity) and self.max_abs <= self.atol

    def __str__(self) -> str:
        lines = [f"wrote {self.path} ({self.size_bytes / 1e6:.2f} MB, opset {self.opset}, "
                 f"{self.spec.arch}, {self.spec.precision})",
                 f"BatchNorm folded: {self.folded_batchnorms}, left: {self.remaining_batchnorms}"]
        for p in self.parity:
            lines.append(f"parity vs PyTorch {'x'.join(map(str, p.shape))}: "
                         f"max abs {p.max_abs:.2e}, mean abs {p.mean_abs:.2e}")
        if self.parity:
            lines.append(f"parity {'PASSED' if self.passed else 'FAILED'} (max abs <= {self.atol:g})")
        return "\n".join(lines)


def has_deform_conv(model) -> bool:
    from .dcn import ModulatedDeformConv2d

    return any(isinstance(m, ModulatedDeformConv2d) for m in model.modules())


def check_opset(model, opset: int) -> None:
    if opset not in EXPORTER_OPSETS:
        raise ModelError(f"opset {opset} is not supported here; choose {EXPORTER_OPSETS.start}-"
                         f"{EXPORTER_OPSETS.stop - 1} (17 for TensorRT 8.x)")
    from .dcn import DEFORM_CONV_MIN_OPSET

    if has_deform_conv(model) and opset < DEFORM_CONV_MIN_OPSET:
        raise ModelError(f"this model has deformable convolution (DCN); ONNX DeformConv needs opset "
                         f">= {DEFORM_CONV_MIN_OPSET} and TensorRT >= 10.1 - use --opset 19, or a "
                         f"model without DCN for TensorRT 8.x")


def default_spec(model, **changes) -> ModelSpec:
    """DB normalisation and thresholds, named after the model's architecture."""
    return ModelSpec(arch=getattr(model, "arch_name", "dbnet")).replace(**changes)


def sample_inputs(spec: ModelSpec, shapes: Sequence[Tuple[int, ...]], seed: int = 0) -> List[np.ndarray]:
    """Inputs with realistic statistics: smoothed random 8-bit images, normalised like the runtime."""
    import cv2

    rng = np.random.default_rng(seed)
    batches = []
    for n, _, h, w in shapes:
        imgs = []
        for _ in range(n):
            img = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            img = img + rng.integers(-20, 21, img.shape)  # fine texture over the blobs
            img = np.clip(img, 0, 255).astype(np.float32)
            if spec.color == "RGB":
                img = img[..., ::-1]
            norm = (img - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
            imgs.append(norm.transpose(2, 0, 1))
        batches.append(np.ascontiguousarray(np.stack(imgs), dtype=np.float32))
    return batches


def _trace_to_proto(model, opset: int, example: "torch.Tensor"):
    import onnx
    import torch

    from .dcn import register_onnx_symbolic

    if has_deform_conv(model):
        register_onnx_symbolic(19)
    buffer = io.BytesIO()  # in memory: nothing but the final file touches the disk
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer chatter
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                          dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic})
    return onnx.load_from_string(buffer.getvalue())


def parity(model, onnx_model, inputs: Sequence[np.ndarray], threads: int = 1) -> List[ParityResult]:
    """Max / mean abs difference of the ONNX Runtime CPU output vs PyTorch for each input."""
    import torch

    from engine.onnxruntime.runner import OnnxRuntimeRunner

    data = onnx_model if isinstance(onnx_model, (str, os.PathLike)) else onnx_model.SerializeToString()
    results = []
    with OnnxRuntimeRunner(data, device="cpu", threads=threads) as runner, torch.no_grad():
        for batch in inputs:
            ref = model(torch.from_numpy(batch)).numpy()
            got = next(iter(runner.infer({INPUT_NAME: batch}).values()))
            if got.shape != ref.shape:
                raise ModelError(f"ONNX output shape {got.shape} != PyTorch {ref.shape}")
            diff = np.abs(got.astype(np.float64) - ref)
            results.append(ParityResult(tuple(batch.shape), float(diff.max()), float(diff.mean())))
    return results


def export_onnx(model, path, opset: int = 17, spec: Optional[ModelSpec] = None,
                example_shape: Tuple[int, int, int, int] = (1, 3, 640, 640),
                parity_shapes: Optional[Sequence[Tuple[int, ...]]] = DEFAULT_PARITY_SHAPES,
                atol: float = 1e-4, fold_bn: bool = True) -> ExportReport:
    """Export an (eval-mode) DBNet to `path`; see the module docstring.

    `spec` defaults to the DB preprocessing named after the model (precision fp32). With
    `parity_shapes=None` the parity check is skipped (the report then has no parity lines).
    """
    import onnx
    import torch

    from .onnx_graph import bypass_constant_identities, fold_batchnorm, set_metadata

    check_opset(model, opset)
    model = model.eval()
    spec = (spec or default_spec(model)).replace(precision="fp32")
    example = torch.from_numpy(sample_inputs(spec, [example_shape], seed=1)[0])
    proto = _trace_to_proto(model, opset, example)
    bypass_constant_identities(proto)  # before folding: BN parameters may be such aliases
    folded = fold_batchnorm(proto) if fold_bn else 0
    set_metadata(proto, METADATA_KEY, spec.to_json())
    proto.doc_string = f"dbrt {spec.arch} probability map; preprocessing in metadata '{METADATA_KEY}'"
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    left = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    report = ExportReport(path, opset, spec, folded, left, path.stat().st_size, atol=atol)
    if parity_shapes:
        report.parity = parity(model, str(path), sample_inputs(spec, parity_shapes, seed=2))
        if not report.passed:
            raise ModelError(f"exported ONNX differs from PyTorch by {report.max_abs:.2e} max abs "
                             f"(limit {atol:g}); the file was written to {path} for inspection")
    return report
