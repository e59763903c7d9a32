"""How much do FP16 / INT8 change what the detector finds? Low precision vs FP32, per image.

    from pipeline.accuracy import compare_models
    result = compare_models("m.onnx", "m_int8.onnx", images)    # BGR uint8 arrays
    result.max_abs, result.mean_abs      # probability-map difference
    result.hmean                         # box agreement: INT8 boxes scored against FP32 boxes

Box agreement uses the ICDAR 2015 protocol of `pipeline.evaluate` (IoU > 0.5, one-to-one) with
the FP32 detections as ground truth, after the same `DBPostprocessor` on both maps. Images come
from `export.synth.synthetic_images` (deterministic), a folder / video
(`pipeline.sampling.read_images`), or any BGR arrays; use images the INT8 model was not
calibrated on. ONNX Runtime on the CPU runs both models (it
upcasts FP16 internally, so the FP16 figures check the graph, not GPU FP16 arithmetic). On x86
CPUs without VNNI, whose ONNX Runtime integer kernels saturate (`engine.onnxruntime.int8_cpu`),
INT8 candidates run as float ops on their dequantized values, which is the model's INT8
arithmetic, and each result says so (`int8_as_float`).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional, Sequence

import numpy as np

from dbnet.spec import resolve_spec
from engine.errors import SourceError
from engine.onnxruntime.int8_cpu import (FLOAT_OPS_CONFIG, SATURATION_NOTE, exact_int8_config,
                                         int8_kernels_saturate)
from engine.onnxruntime.runner import OnnxRuntimeRunner

from .evaluate import evaluate_image
from .postprocess import DBPostprocessor
from .preprocess import preprocess


@dataclass
class PrecisionComparison:
    candidate: str
    precision: str
    images: int
    max_abs: float
    mean_abs: float
    reference_boxes: int
    candidate_boxes: int
    matched: int
    per_image: List[dict] = field(default_factory=list)
    int8_as_float: bool = False  # ran as float ops on dequantized values, not integer kernels

    @property
    def precision_score(self) -> float:
        return 1.0 if self.candidate_boxes == 0 and self.reference_boxes == 0 else (
            self.matched / self.candidate_boxes if self.candidate_boxes else 0.0)

    @property
    def recall(self) -> float:
        return 1.0 if self.reference_boxes == 0 else self.matched / self.reference_boxes

    @property
    def hmean(self) -> float:
        p, r = self.precision_score, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def to_dict(self, per_image: bool = False) -> dict:
        out = asdict(self)
        if not per_image:
            out.pop("per_image")
        out.update(box_precision=self.precision_score, box_recall=self.recall, box_hmean=self.hmean)
        return out

    def __str__(self) -> str:
        return (f"{self.precision} vs fp32 on {self.images} images: prob max abs {self.max_abs:.4f}, "
                f"mean abs {self.mean_abs:.5f}; boxes {self.candidate_boxes} vs {self.reference_boxes}, "
                f"P {self.precision_score:.4f} R {self.recall:.4f} hmean {self.hmean:.4f}"
                + (self._as_float_note() if self.int8_as_float else ""))

    @staticmethod
    def _as_float_note() -> str:
        why = ": this CPU's ONNX Runtime integer kernels saturate" if int8_kernels_saturate() else ""
        return f" (INT8 run as float ops on dequantized values{why})"


def _run(runner, chw: np.ndarray) -> np.ndarray:
    name = runner.inputs[0].name
    return next(iter(runner.infer({name: chw[None]}).values())).astype(np.float32)


def compare_models(reference, candidate, images: Iterable[np.ndarray], spec=None,
                   limit_side: Optional[int] = None, threads: int = 1) -> PrecisionComparison:
    """Run both ONNX models on every image and compare maps and boxes (see module docstring)."""
    return compare_many(reference, [candidate], images, spec, limit_side, threads)[0]


def compare_many(reference, candidates: Sequence, images: Iterable[np.ndarray], spec=None,
                 limit_side: Optional[int] = None, threads: int = 1,
                 candidate_config: Optional[dict] = None) -> List[PrecisionComparison]:
    """`compare_models` for several candidates at once: the reference runs once per image.

    `candidate_config`: ONNX Runtime session config entries for the candidates only, on top of
    `exact_int8_config()` (float ops for Q/DQ models where this CPU's integer kernels saturate);
    e.g. FLOAT_OPS_CONFIG runs a Q/DQ model as float ops on dequantized values anywhere."""
    config = {**exact_int8_config(), **(candidate_config or {})}
    as_float = config.get("session.disable_quant_qdq") == "1"
    tallies = [_Tally() for _ in candidates]
    with ExitStack() as stack:
        ref = stack.enter_context(OnnxRuntimeRunner(reference, "cpu", threads=threads))
        runners = [stack.enter_context(OnnxRuntimeRunner(c, "cpu", threads=threads, config=config))
                   for c in candidates]
        precisions = [resolve_spec(r.metadata).precision for r in runners]
        spec = spec or resolve_spec(ref.metadata)
        if limit_side:
            spec = spec.replace(limit_side=limit_side)
        post = DBPostprocessor(spec.post, device="cpu")
        for image in images:
            chw, box = preprocess(image, spec)
            ref_map = _run(ref, chw)
            ref_dets = post(ref_map, [box])[0]  # FP32 boxes play the ground truth
            for runner, tally in zip(runners, tallies):
                cand_map = _run(runner, chw)
                tally.add(ref_map, cand_map, ref_dets, post(cand_map, [box])[0])
    if not tallies or not tallies[0].rows:
        raise SourceError("no images to compare on")
    return [t.result(str(c), p, as_float) for c, t, p in zip(candidates, tallies, precisions)]


def int8_noise_floor(model, images: Iterable[np.ndarray], spec=None,
                     limit_side: Optional[int] = None) -> Optional[PrecisionComparison]:
    """Box agreement of an INT8 Q/DQ model with itself run another valid way: ONNX Runtime's fused
    integer kernels against the same graph as float ops on dequantized values. Both compute the
    model's INT8 arithmetic; they differ only in accumulation order and rounding ties, as any two
    INT8 engines (ORT, TensorRT, another GPU) do. INT8-vs-FP32 agreement cannot be expected above
    this on the same images. None where this CPU's integer kernels saturate: there they do not
    compute that arithmetic, so the floor is not measurable here."""
    if int8_kernels_saturate():
        return None
    return compare_many(model, [model], images, spec, limit_side, candidate_config=FLOAT_OPS_CONFIG)[0]


INTEGER_KERNELS = "ONNX Runtime's integer kernels"  # what reports made before the check ran


def int8_execution() -> str:
    """How `compare_many` runs INT8 candidates on this machine, for reports."""
    if int8_kernels_saturate():
        return (f"float ops on the dequantized values ({SATURATION_NOTE}; the INT8 noise floor is "
                "not measurable on such a CPU)")
    return INTEGER_KERNELS


class _Tally:
    """Per-candidate running sums over the images."""

    def __init__(self):
        self.rows, self.abs_sum, self.pixels = [], 0.0, 0

    def add(self, ref_map, cand_map, ref_dets, cand_dets) -> None:
        diff = np.abs(ref_map - cand_map)
        self.abs_sum, self.pixels = self.abs_sum + float(diff.sum()), self.pixels + diff.size
        result = evaluate_image(ref_dets.polygons, [False] * len(ref_dets), cand_dets.polygons)
        self.rows.append(dict(image=len(self.rows), max_abs=float(diff.max()), fp32_boxes=result.gt_care,
                              boxes=result.det_care, matched=result.matched))

    def result(self, name: str, precision: str, as_float: bool) -> PrecisionComparison:
        total = {k: sum(r[k] for r in self.rows) for k in ("fp32_boxes", "boxes", "matched")}
        return PrecisionComparison(name, precision, len(self.rows), max(r["max_abs"] for r in self.rows),
                                   self.abs_sum / self.pixels, total["fp32_boxes"], total["boxes"],
                                   total["matched"], self.rows, as_float and precision == "int8")
