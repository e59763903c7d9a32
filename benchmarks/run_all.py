"""Run the main benchmarks (`dbrt bench all`) in one go and index what they wrote.

0. accuracy     (benchmarks.accuracy): ICDAR 2015 protocol on realdev, so speed is never alone
1. model only   (benchmarks.model_bench): backend x precision x batch x input size, PyTorch beside ORT
2. pipeline     (benchmarks.pipeline_overlap): the threaded pipeline on a real video, per-stage
                times, and its throughput relative to inference alone on the same frames
3. postprocess  (benchmarks.postprocess_bench): our DB post-processing vs the reference on the
                same maps
4. peer-accuracy (benchmarks.peer_accuracy): the shipped model vs RapidOCR's own default det
                model, accuracy and per-image latency side by side, and the lightbox video
                (needs the bench extra; a validation split through --peer-accuracy-args "--val DIR")

Each runs in its own process (one failing benchmark does not stop the others, and one's threads
or memory do not disturb the next one's timings). `benchmarks/results/<machine>/index.md` lists
every result file with the command that made it.

    python -m benchmarks.run_all [--quick] [--only model pipeline] [--model M.onnx --weights W.pt]

--quick writes to out/bench-quick/<machine>/ unless --out or $DBRT_RESULTS_DIR says where.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from pipeline.commands._validate import at_least

from . import common

BENCHMARKS = {  # name -> (module, what it measures)
    "accuracy": ("benchmarks.accuracy", "ICDAR 2015 protocol on ../shared/data/realdev (the shipped model)"),
    "model": ("benchmarks.model_bench", "model-only latency / throughput sweep, PyTorch vs ONNX Runtime"),
    "pipeline": ("benchmarks.pipeline_overlap", "full threaded pipeline on a video vs inference alone"),
    "postprocess": ("benchmarks.postprocess_bench", "DB post-processing vs the reference implementation"),
    "peer-accuracy": ("benchmarks.peer_accuracy", "shipped model vs RapidOCR's own detector, side by side"),
}
# Short CPU runs (shared machines); a GPU gets wider sweeps.
CPU_ARGS = {"model": ["--sizes", "320", "480", "640", "736", "--batches", "1", "4", "--repeats", "5",
                      "--precisions", "fp32", "fp16", "int8", "--threads", "1"]}
# TensorRT (where installed) at the default input size only: every size is an engine build
GPU_ARGS = {"model": ["--sizes", "320", "480", "640", "736", "960", "1280", "--batches", "1", "4", "8", "16",
                      "--cpu-batches", "1", "--warmup", "5", "--repeats", "20", "--tensorrt-sizes", "736"]}
QUICK_ARGS = {"model": ["--sizes", "256", "512", "--batches", "1", "2", "--warmup", "1", "--repeats", "3",
                        "--tensorrt-sizes", "512"],
              "postprocess": ["--quick"],
              "peer-accuracy": ["--max-images", "2", "--synth", "2", "--frames", "4"]}


def available(name: str) -> bool:
    return importlib.util.find_spec(BENCHMARKS[name][0]) is not None


def default_args(name: str, quick: bool, given: Sequence[str] = ()) -> List[str]:
    """This machine's defaults for a benchmark, before the arguments `given` for it. Sizes given
    there replace the default sizes of the TensorRT rows too (they must be among --sizes)."""
    table = QUICK_ARGS if quick else (GPU_ARGS if common.gpu_names() else CPU_ARGS)
    args = list(table.get(name, []))
    if "--sizes" in given and "--tensorrt-sizes" in args:
        start = args.index("--tensorrt-sizes")
        end = next((i for i in range(start + 1, len(args)) if args[i].startswith("--")), len(args))
        del args[start:end]
    return args


def run_one(name: str, args: Sequence[str], timeout_s: float, log=print) -> dict:
    """Run one benchmark module as `python -m MODULE ARGS`; returns its status record."""
    module = BENCHMARKS[name][0]
    cmd = [sys.executable, "-m", module, *args]
    record = {"benchmark": name, "module": module, "command": "python -m " + " ".join([module, *map(shlex.quote, args)])}
    if not available(name):
        log(f"[{name}] {module} is not present: skipped")
        return {**record, "status": "missing"}
    log(f"[{name}] {record['command']}")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, timeout=timeout_s,
                              env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {**record, "status": "timeout", "seconds": round(time.perf_counter() - start, 1)}
    said = (proc.stdout + proc.stderr).strip()
    status = {0: "ok", common.SKIPPED: "skipped: " + (said.splitlines() or ["no reason given"])[-1]}
    record.update(seconds=round(time.perf_counter() - start, 1),
                  status=status.get(proc.returncode, f"failed (exit {proc.returncode})"),
                  output_tail=said[-2000:])
    log(f"[{name}] {record['status']} in {record['seconds']} s")
    if proc.returncode not in status:
        log(record["output_tail"])
    return record


STAGES = ("decode", "preprocess", "infer", "postprocess", "sink")


def plot_pipeline_stages(out_dir: Path) -> Optional[Path]:
    """Stacked per-stage p50 latency of each pipeline pass in pipeline_overlap.json (the stages
    overlap in threads, so a bar's height is the work per frame, not the wall time per frame)."""
    source = out_dir / "pipeline_overlap.json"
    if not source.is_file():
        return None
    import json

    rows = [r for r in json.loads(source.read_text()).get("rows", []) if "decode_p50_ms" in r]
    if not rows:
        return None
    bars = {f"{r['mode']}\n{r['fps']:.1f} FPS": {s: r.get(f"{s}_p50_ms") or 0.0 for s in STAGES} for r in rows}
    return common.plot_stacked_bars(bars, out_dir / "pipeline_stages.png",
                                    "Pipeline per-stage latency, p50 per batch (stages overlap)", "ms")


FILE_KINDS = (  # file name prefix -> what it holds
    ("accuracy_", "accuracy (ICDAR 2015 protocol)"), ("model_bench", "model only"),
    ("peer_accuracy", "dbrt vs RapidOCR's own detector: accuracy, latency, lightbox words"),
    ("pipeline_", "full pipeline vs inference alone"), ("postprocess", "post-processing vs reference"),
    ("peer_", "RapidOCR side by side"), ("precision_accuracy", "FP16 / INT8 vs FP32 accuracy"),
    ("gpu_proof", "GPU proof"), ("width_cost", "backbone width: file size and CPU latency"),
    ("input_size", "input size: validation accuracy against CPU time"),
)


def _kind(name: str) -> str:
    return next((kind for prefix, kind in FILE_KINDS if name.startswith(prefix)), "")


def write_index(out_dir: Path, records: List[dict], started: float) -> Path:
    """index.md: the latest run of each benchmark (this one's merged with earlier run_all
    records of this machine), how it was run, and every result file of the folder."""
    previous = out_dir / "run_all.json"
    runs = {}
    if previous.is_file():
        import json

        runs = {r["benchmark"]: r for r in json.loads(previous.read_text()).get("runs", [])}
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(started))
    runs.update({r["benchmark"]: {**r, "date_utc": stamp} for r in records})
    table = [{"benchmark": r["benchmark"], "status": r["status"], "seconds": r.get("seconds"),
              "date (UTC)": r.get("date_utc"), "command": f"`{r['command']}`"} for r in runs.values()]
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name not in ("index.md", "run_all.json"))
    listing = [{"file": f"[{name}]({name})", "what": _kind(name)} for name in files]
    sections = [("Latest runs", common.markdown_table(table)), ("Files", common.markdown_table(listing))]
    sections += [(f"{r['benchmark']}: output tail", f"```\n{r['output_tail']}\n```\n")
                 for r in records if r["status"] != "ok" and r.get("output_tail")]
    common.write_json(previous, {"machine": common.machine_info(), "runs": list(runs.values())})
    return common.write_markdown(out_dir / "index.md", f"Benchmark results: {out_dir.name}", sections,
                                 common.machine_info())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = common.argument_parser("benchmarks.run_all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="tiny sweeps (smoke test, not for publishing; "
                   "written to out/bench-quick/<machine>/ unless --out says where)")
    p.add_argument("--model", help="ONNX model of the model sweep, accuracy and peer-accuracy (default: shipped)")
    p.add_argument("--weights", help="its PyTorch weights (the PyTorch baseline)")
    p.add_argument("--timeout", type=at_least(0.0, float, strict=True), default=1800,
                   help="seconds per benchmark")
    p.add_argument("--out", type=common.results_folder, help="results folder (default: benchmarks/results/<machine>)")
    for name in BENCHMARKS:
        p.add_argument(f"--{name}-args", default="", help=f"extra arguments for {BENCHMARKS[name][0]}")
    a = p.parse_args(argv)
    if a.quick and not a.out and not os.environ.get("DBRT_RESULTS_DIR"):
        # a smoke run's tiny sweeps are not results: never over the committed ones
        a.out = str(common.REPO / "out" / "bench-quick" / common.machine_name())
    if a.out:  # the benchmarks write through common.results_dir(), which honours this
        os.environ["DBRT_RESULTS_DIR"] = str(Path(a.out).resolve())
    out_dir = common.results_dir()
    started = time.time()
    records = []
    for name in a.only:
        given = shlex.split(getattr(a, f"{name.replace('-', '_')}_args"))
        args = default_args(name, a.quick, given) + given
        if name in ("model", "accuracy", "peer-accuracy"):
            args += ["--model", a.model] if a.model else []
        if name == "model":
            args += ["--weights", a.weights] if a.weights else []
        records.append(run_one(name, args, a.timeout))
    plot_pipeline_stages(out_dir)
    index = write_index(out_dir, records, started)
    print(f"wrote {index}")
    return 0 if all(r["status"] in ("ok", "missing") for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
