"""Model-only benchmark: backend x device x precision x batch x input size.

The timed region is ONE network forward on an input that is already preprocessed and already on
the backend's device, with the output left where the backend produces it, synchronised (CUDA) so
asynchronous work is counted. Decoding, preprocessing, post-processing and host copies are NOT in
it: the number papers and MMDeploy / PaddleOCR tables publish ("model only"; the full pipeline's
is benchmarks/pipeline_overlap.py's).

PyTorch ("what you had before") runs beside ONNX Runtime (and CUDA / fp16 on a GPU) and, where
TensorRT is usable, TensorRT FP32 / FP16 (/ INT8) engines (benchmarks/model_targets.py);
every row carries its probability map's max abs difference from PyTorch fp32 on CPU on the same
real frame, and the speed-ups are given against PyTorch fp32 on the CPU and on the GPU.

    python -m benchmarks.model_bench [--model M.onnx --weights W.pt] [--sizes 320 640] [--batches 1 4]
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from engine.lazy import optional, require
from pipeline.commands._validate import at_least

from . import common
from .model_bench_report import COLUMNS, speedup_rows, write_results  # noqa: F401 - re-exported
from .model_targets import (Target, default_targets, onnxruntime_target,  # noqa: F401 - re-exported
                            pytorch_target)

SHIPPED_ONNX = common.REPO / "pipeline" / "assets" / "dbnet_default.onnx"
SHIPPED_WEIGHTS = common.REPO / "export" / "assets" / "dbnet_default.pt"
VIDEO = common.SHARED_DATA / "video" / "pexels_lightbox_text_960x506.mp4"


@dataclass
class ModelUnderTest:
    """The ONNX file every backend runs and, when known, the same weights as a PyTorch module."""

    onnx: Path
    label: str
    torch_model: object = None          # fp32 CPU eval-mode DBNet, or None
    trained: bool = True
    notes: List[str] = field(default_factory=list)

    def describe(self) -> dict:
        inside = self.onnx.is_relative_to(common.REPO)
        return {"onnx": str(self.onnx.relative_to(common.REPO) if inside else self.onnx.name),
                "sha256": common.file_sha256(self.onnx), "size_mb": round(self.onnx.stat().st_size / 1e6, 2),
                "label": self.label, "trained": self.trained, "notes": self.notes}


def load_model(model: Optional[Path] = None, weights: Optional[Path] = None,
               workdir: Optional[Path] = None) -> ModelUnderTest:
    """The shipped model (+ its PyTorch weights) by default; a random-init DBNet-R18 width 0.5
    (the shipped architecture, untrained: speed only) when nothing has been shipped yet."""
    torch = optional("torch")
    if model is None and SHIPPED_ONNX.is_file():
        model, weights = SHIPPED_ONNX, weights or (SHIPPED_WEIGHTS if SHIPPED_WEIGHTS.is_file() else None)
    if model is not None:
        shipped = Path(model).resolve() == SHIPPED_ONNX
        mut = ModelUnderTest(Path(model), f"shipped model, {_arch(model)}" if shipped else Path(model).stem)
        if weights is not None and torch is not None:
            from export.checkpoint import model_from_checkpoint

            mut.torch_model = model_from_checkpoint(str(weights))[0].float().eval()
        else:
            mut.notes.append("no PyTorch weights given: the PyTorch baseline is not run")
        return mut
    if torch is None:
        raise SystemExit("no shipped model and no torch to make one; pass --model")
    return _random_model(Path(workdir or tempfile.mkdtemp(prefix="dbrt-bench-")), torch)


def _arch(path) -> str:
    from dbnet.spec import ModelSpec
    from engine.onnx_info import summarize_onnx

    spec = ModelSpec.from_metadata(summarize_onnx(path).metadata) or ModelSpec()
    return spec.arch + (" (untrained)" if spec.untrained else "")


def _random_model(workdir: Path, torch) -> ModelUnderTest:
    from export.model import DBNet
    from export.onnx_export import default_spec, export_onnx

    torch.manual_seed(0)
    net = DBNet("resnet18", width=0.5).eval()
    path = workdir / "dbnet_r18_w0.5_random.onnx"
    export_onnx(net, path, spec=default_spec(net, untrained=True), parity_shapes=None)
    return ModelUnderTest(path, "DBNet-R18 width 0.5, random init (untrained: speed only)", net,
                          trained=False, notes=["shipped model not found; random weights, same architecture"])


# -- inputs ------------------------------------------------------------------------------------

def sample_frame() -> np.ndarray:
    """A real frame (frame 100 of the lightbox video) or, without shared data, a synthetic one."""
    import cv2

    if VIDEO.is_file():
        cap = cv2.VideoCapture(str(VIDEO))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
        ok, frame = cap.read()
        cap.release()
        if ok:
            return frame
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (506, 960, 3), dtype=np.uint8)
    cv2.putText(frame, "DBRT BENCH", (60, 280), cv2.FONT_HERSHEY_SIMPLEX, 4, (0, 0, 0), 12)
    return frame


def make_batch(frame: np.ndarray, spec, size: Tuple[int, int], batch: int) -> np.ndarray:
    from pipeline.preprocess import preprocess

    chw, _ = preprocess(frame, spec, size)
    return np.ascontiguousarray(np.repeat(chw[None], batch, axis=0))


def make_variants(mut: ModelUnderTest, precisions: Sequence[str], spec, workdir: Path,
                  log: Callable[[str], None] = print) -> Dict[str, Path]:
    """FP16 / INT8 ONNX files of the model (export.quantize), for the ORT precision rows. INT8 is
    calibrated on 8 frames of the video (or the synthetic sample frame) at limit side 320."""
    precisions = list(precisions)
    from export import quantize

    variants = {}
    source = mut.onnx  # the converters expand the shipped file's fp16 weight storage themselves
    for precision in precisions:
        if precision == "fp32":
            continue
        path = workdir / f"{mut.onnx.stem}_{precision}.onnx"
        try:
            if precision == "fp16":
                quantize.to_fp16(source, path)
            elif precision == "int8":
                quantize.to_int8(source, path, _calibration(spec, workdir))
            else:
                raise ValueError(f"unknown precision {precision!r}")
        except Exception as exc:  # noqa: BLE001 - a precision that cannot be made is noted, not fatal
            mut.notes.append(f"{precision} variant not made: {str(exc).splitlines()[0]}")
            log(f"  {precision} variant not made: {exc}")
            continue
        variants[precision] = path
    return variants


def _calibration(spec, workdir: Path):
    from pipeline.sampling import calibration_inputs

    source = VIDEO if VIDEO.is_file() else workdir / "calibration_frame.png"
    if not VIDEO.is_file():
        require("cv2").imwrite(str(source), sample_frame())
    return calibration_inputs(source, spec, count=8, limit_side=320)


# -- the sweep ---------------------------------------------------------------------------------

def reference_outputs(targets: Sequence[Target], frame, spec, sizes) -> Dict[Tuple[int, int], np.ndarray]:
    """Prob maps of the first target (PyTorch fp32 CPU when present) at batch 1, per size."""
    refs = {}
    for size in sizes:
        run, fetch = targets[0].prepare(make_batch(frame, spec, size, 1))
        run()
        refs[size] = fetch()[:1]
    return refs


def sweep(targets: Sequence[Target], spec, sizes: Sequence[Tuple[int, int]], batches: Sequence[int],
          warmup: int = 2, repeats: int = 5, frame: Optional[np.ndarray] = None,
          log: Callable[[str], None] = print, cpu_batches: Optional[Sequence[int]] = None) -> List[dict]:
    """One row per (target, size, batch): latency stats, throughput, max abs diff vs reference.
    The targets of one size and batch take turns call by call (`common.time_in_turns`), so that
    a change in the machine's load falls on all of them alike, not on the one timed then.
    `cpu_batches` limits CPU targets (beside a GPU, big CPU batches only cost time)."""
    frame = sample_frame() if frame is None else frame
    refs = reference_outputs(targets, frame, spec, sizes)
    rows: Dict[Tuple[int, Tuple[int, int], int], dict] = {}
    every_batch = list(dict.fromkeys([*batches, *(cpu_batches or ())]))
    for size in sizes:
        for batch in every_batch:
            members = [k for k, target in enumerate(targets) if _takes(target, size, batch,
                                                                       batches, cpu_batches)]
            rows.update(_timed_in_turns(targets, members, frame, spec, size, batch, refs[size],
                                        warmup, repeats, log))
    # rows by target, then size, then batch, as the report's tables list them
    order = sorted(rows, key=lambda key: (key[0], list(sizes).index(key[1]), every_batch.index(key[2])))
    return [rows[key] for key in order]


def _takes(target: Target, size, batch: int, batches, cpu_batches) -> bool:
    if target.sizes is not None and size not in target.sizes:
        return False
    return batch in ((cpu_batches or batches) if target.device == "cpu" else batches)


def _timed_in_turns(targets, members, frame, spec, size, batch, ref, warmup, repeats, log) -> dict:
    """{(target index, size, batch): row} of the `members` at one size and batch."""
    rows, calls, fetches = {}, {}, {}
    for k in members:
        target = targets[k]
        try:
            run, fetch = target.prepare(make_batch(frame, spec, size, batch))
            call = (lambda run=run, sync=target.sync: (run(), sync and sync()))
            for _ in range(max(warmup - 1, 0)):  # time_in_turns makes one warm-up call itself
                call()
        except Exception as exc:  # noqa: BLE001 - a failing config is a result row, not a crash
            rows[(k, size, batch)] = _failed(target, size, batch, exc, log)
            continue
        calls[k], fetches[k] = call, fetch
    try:
        samples = common.time_in_turns(calls, repeats)
    except Exception as exc:  # noqa: BLE001 - one target failing mid-way fails its turn-mates' too
        return {**rows, **{(k, size, batch): _failed(targets[k], size, batch, exc, log) for k in calls}}
    for k, seconds in samples.items():
        target, stats = targets[k], common.Stats.from_seconds(seconds)
        diff = float(np.abs(fetches[k]()[:1] - ref).max())
        rows[(k, size, batch)] = _row(target, size, batch, stats, diff)
        log(f"  {target.name} {size[0]}x{size[1]} b{batch}: {stats.median_ms:.2f} ms "
            f"({rows[(k, size, batch)]['images_per_s']:.1f} img/s, max|diff| {diff:.1e})")
    return rows


def _failed(target: Target, size, batch: int, exc: Exception, log) -> dict:
    row = _row(target, size, batch, None, None, error=str(exc).splitlines()[0])
    log(f"  {target.name} {size[0]}x{size[1]} b{batch}: FAILED {row['error']}")
    return row


def _row(target: Target, size, batch, stats, diff, error: Optional[str] = None) -> dict:
    row = {"backend": target.backend, "device": target.device, "precision": target.precision,
           "batch": batch, "input": f"{size[0]}x{size[1]}", "height": size[0], "width": size[1]}
    if stats is not None:
        row.update({"median_ms": stats.median_ms, "p10_ms": stats.p10_ms, "p90_ms": stats.p90_ms,
                    "spread_pct": round(stats.spread_pct, 1), "n": stats.n,
                    "images_per_s": round(1e3 * batch / stats.median_ms, 2),
                    "max_abs_diff": diff})
    if error:
        row["error"] = error
    return row


def run(model=None, weights=None, sizes=(320, 480, 640, 736), batches=(1, 4), warmup=2, repeats=5,
        threads=0, variants=None, out_dir=None, log=print, cpu_batches=None,
        precisions=("fp32",), tensorrt_sizes=None, dla_core=None) -> Dict[str, Path]:
    """Sweep and write `model_bench.{json,md}` + `model_bench_fps.png`; returns their paths.
    `tensorrt_sizes`: the sides TensorRT engines are built and timed at (None: every size,
    empty: no TensorRT rows); `dla_core`: also engines on that Jetson DLA core."""
    workdir = Path(tempfile.mkdtemp(prefix="dbrt-bench-"))
    mut = load_model(model, weights, workdir)
    from dbnet.spec import resolve_spec
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(mut.onnx, device="cpu") as probe:
        spec = resolve_spec(probe.metadata)
    variants = {**make_variants(mut, precisions, spec, workdir, log), **(variants or {})}
    trt_sizes = None if tensorrt_sizes is None else [(s, s) for s in tensorrt_sizes]
    targets = default_targets(mut, threads, variants, batches, log, trt_sizes, dla_core)
    if not any(t.backend == "tensorrt" for t in targets):
        mut.notes.append("No TensorRT rows: " + ("not asked for." if trt_sizes == [] else
                                                 "TensorRT or a usable GPU is missing here."))
    elif dla_note(targets, dla_core):
        mut.notes.append(dla_note(targets, dla_core))
        log(f"  {mut.notes[-1]}")
    sizes2 = [(s, s) for s in sizes]
    log(f"model-only sweep: {mut.label}; {len(targets)} targets x {len(sizes2)} sizes x {len(batches)} batches")
    try:
        rows = sweep(targets, spec, sizes2, batches, warmup, repeats, log=log, cpu_batches=cpu_batches)
    finally:
        for t in (t for t in targets if t.close):
            t.close()
    settings = {"sizes": list(sizes), "batches": list(batches), "cpu_batches": list(cpu_batches or batches),
                "precisions": sorted({"fp32", *variants}), "warmup": warmup, "repeats": repeats,
                "threads": threads or "backend default", "targets": [t.name for t in targets]}
    return write_results(rows, mut, settings, Path(out_dir) if out_dir else common.results_dir())


def dla_note(targets, dla_core) -> Optional[str]:
    """Why a sweep asked for DLA rows has none although it has TensorRT's: the DLA computes in
    FP16 / INT8, which TensorRT 8.6 / 10.x build from the FP32 ONNX by their builder flag, and
    11.x (strongly typed) only from the FP16 / Q/DQ ONNX of --precisions."""
    if dla_core is None or any(t.device.startswith("dla") for t in targets):
        return None
    return (f"No DLA rows: this TensorRT builds FP16 / INT8 only from an FP16 / Q/DQ ONNX; add "
            f"--precisions fp16 (or int8) for DLA core {dla_core}.")


def main(argv=None) -> int:
    p = common.argument_parser("benchmarks.model_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped one)")
    p.add_argument("--weights", type=Path, help="the same model's PyTorch weights (for the baseline)")
    p.add_argument("--sizes", type=at_least(32), nargs="+", default=[320, 480, 640, 736], help="square input sides")
    p.add_argument("--batches", type=at_least(1), nargs="+", default=[1, 4])
    p.add_argument("--cpu-batches", type=at_least(1), nargs="+", help="batches for CPU targets (default: --batches)")
    p.add_argument("--warmup", type=at_least(0), default=2)
    p.add_argument("--repeats", type=at_least(1), default=5)
    p.add_argument("--threads", type=at_least(0), default=0, help="CPU threads for every backend (0: default)")
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "fp16", "int8"],
                   help="ONNX Runtime precisions (fp16 / int8 files made with export.quantize)")
    p.add_argument("--variant", action="append", default=[], metavar="PRECISION=PATH",
                   help="another ONNX of the same model, e.g. int8=model_int8.onnx")
    p.add_argument("--tensorrt-sizes", type=at_least(32), nargs="+", metavar="SIDE",
                   help="where TensorRT is usable: the sides to build engines for and time (default: "
                        "--sizes; each size and precision is one engine build, minutes on a Jetson, cached)")
    p.add_argument("--no-tensorrt", action="store_true", help="no TensorRT rows")
    p.add_argument("--dla-core", type=at_least(0), metavar="N",
                   help="Jetson AGX / NX: also time the FP16 / INT8 engines of --precisions on DLA "
                        "core N (the GPU runs what it cannot; one engine per size and batch)")
    p.add_argument("--out", type=common.results_folder, help="results folder (default: benchmarks/results/<machine>)")
    a = p.parse_args(argv)
    if a.dla_core is not None and a.no_tensorrt:
        p.error("--dla-core times TensorRT engines: not with --no-tensorrt")
    if a.tensorrt_sizes and set(a.tensorrt_sizes) - set(a.sizes):
        p.error(f"--tensorrt-sizes {a.tensorrt_sizes}: each must be one of --sizes {a.sizes}")
    if any("=" not in v for v in a.variant):
        p.error(f"--variant expects PRECISION=PATH, e.g. int8=model_int8.onnx, got {a.variant}")
    variants = dict(v.split("=", 1) for v in a.variant)
    paths = run(a.model, a.weights, a.sizes, a.batches, a.warmup, a.repeats, a.threads, variants, a.out,
                cpu_batches=a.cpu_batches, precisions=a.precisions,
                tensorrt_sizes=[] if a.no_tensorrt else a.tensorrt_sizes, dla_core=a.dla_core)
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
