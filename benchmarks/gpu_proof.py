"""GPU proof (issue 9): on a machine with an NVIDIA GPU, run the GPU-marked tests and the GPU
benchmarks in one go and publish everything.

    python -m benchmarks.gpu_proof --out DIR      (benchmarks/gpu_proof.sh wraps it)

Steps, most important first (each recorded as ok / failed / skipped with its error; none stops
the others; a step that would start after the time budget is skipped, and the report is
rewritten after every step, so a run cut short keeps what it measured):
  environment   nvidia-smi, torch / CuPy / ONNX Runtime versions
  gpu tests     pytest -m gpu (junit XML + counts)
  preprocess    CuPy kernel vs OpenCV on video frames
  postprocess   CuPy vs NumPy DB post-processing: synthetic 1 MP / 4 MP maps and real model maps
  pipeline      threaded pipeline with the PyTorch-CUDA fp16 stand-in for TensorRT on the video,
                vs the stand-in alone; per-stage latencies; GPU time outside the model (batch 1, 4)
  triton tensorrt  `dbrt triton export --backend tensorrt` served by an installed tritonserver with
                the TensorRT backend vs the same plan run locally (benchmarks/gpu_triton.py);
                skipped where there is no such server
  model only    benchmarks.model_bench: PyTorch CUDA fp32 / fp16 (and TensorRT FP32 / FP16 at 736
                where TensorRT is installed) beside CPU PyTorch and ORT
  peers         benchmarks.postprocess_bench and benchmarks.pipeline_overlap, when present

Results: benchmarks/results/<machine>/gpu_proof.{json,md} (+ the benchmarks' own files); DIR gets
gpu_proof.md, gpu_tests.xml and results_<machine>.tar.gz (the whole results folder).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Callable, List, Optional

from . import common, gpu_checks, gpu_triton, model_bench, run_all
from .gpu_checks import Skip

VIDEO = common.SHARED_DATA / "video" / "pexels_lightbox_text_960x506.mp4"


class Proof:
    """Runs named steps, keeping each one's outcome and result. With a time budget, a step that
    would start too late is skipped, so a run killed at its limit never loses what it measured;
    `on_step(steps)` runs after every step (the report is rewritten each time)."""

    def __init__(self, log=print, budget_s: Optional[float] = None,
                 on_step: Optional[Callable[[List[dict]], None]] = None):
        self.steps: List[dict] = []
        self.log = log
        self.on_step = on_step
        self.deadline = None if budget_s is None else time.perf_counter() + budget_s

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.perf_counter()

    def step(self, name: str, fn: Callable[[], object], min_s: float = 10) -> Optional[object]:
        self.log(f"== {name}")
        start = time.perf_counter()
        record = {"step": name}
        try:
            if self.remaining() < min_s:
                raise Skip(f"out of time ({max(0.0, self.remaining()):.0f} s of the budget left)")
            record["result"] = fn()
            record["status"] = "ok"
        except Skip as exc:
            record["status"] = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - a failed step is a published result
            record["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record["traceback"] = traceback.format_exc()[-3000:]
        record["seconds"] = round(time.perf_counter() - start, 1)
        self.log(f"   {record['status']} ({record['seconds']} s)")
        self.steps.append(record)
        if self.on_step:
            self.on_step(self.steps)
        return record.get("result")


# -- steps -------------------------------------------------------------------------------------

def environment() -> dict:
    info = common.machine_info()
    torch = _optional("torch")
    cupy = _optional("cupy")
    info["torch_cuda"] = bool(torch and torch.cuda.is_available())
    info["torch_version"] = getattr(torch, "__version__", None)
    info["cupy_version"] = getattr(cupy, "__version__", None)
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        info["nvidia_smi"] = None
    if not info["gpus"]:
        raise Skip("no NVIDIA GPU visible (nvidia-smi)")
    return info


def _optional(name):
    from engine.lazy import optional

    return optional(name)


# A test module that cannot be imported on the GPU machine (a dev extra missing there) is counted
# as an error but stops only itself: without the flag pytest runs no test at all.
GPU_TEST_ARGS = ("-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", "--continue-on-collection-errors")


def gpu_tests(out: Path, timeout: float) -> dict:
    if not gpu_checks_possible():
        raise Skip("no usable GPU: the GPU-marked tests would all skip")
    xml = out / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", *GPU_TEST_ARGS, "tests", f"--junitxml={xml}"]
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, timeout=timeout)
    counts = _junit_counts(xml) if xml.is_file() else {}
    result = {"command": " ".join(cmd[1:]), "exit": proc.returncode, **counts,
              "output_tail": (proc.stdout + proc.stderr)[-4000:]}
    if proc.returncode not in (0, 5):  # 5: no tests collected
        raise RuntimeError(f"pytest -m gpu exit {proc.returncode}: {counts}\n{result['output_tail'][-1500:]}")
    return result


def _junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    keys = ("tests", "failures", "errors", "skipped")
    return {k: int(suite.get(k, 0)) for k in keys}


def standin_runner(torch_model, spec):
    """The PyTorch-CUDA fp16 model behind the Runner interface (CuPy in / out via DLPack); the
    runner folds BatchNorm before halving (the module it is given is moved, so pass a copy)."""
    import copy

    try:
        from export.torch_runner import TorchRunner
    except ImportError as exc:
        raise Skip(f"export/torch_runner.py (the stand-in runner) is not available: {exc}") from None
    return TorchRunner(copy.deepcopy(torch_model), device="cuda", half=True, spec=spec).activate()


def gpu_checks_possible() -> bool:
    from engine.lazy import cupy_or_none

    return cupy_or_none() is not None


def need_gpu():
    if not gpu_checks_possible():
        raise Skip("CuPy with a usable CUDA device is needed")


# -- orchestration -----------------------------------------------------------------------------

def run_proof(proof: Proof, out: Path, frames: int, quick: bool = False) -> List[dict]:
    """The steps in order of importance: correctness first, then the GPU paths' speed, then the
    wide sweeps (the first to be cut when the time budget runs out)."""
    log = proof.log

    def timeout(cap: float) -> float:
        return max(10.0, min(cap, proof.remaining() - 15))

    proof.step("environment", environment)
    proof.step("gpu tests", lambda: gpu_tests(out, timeout(240)))
    mut = model_bench.load_model()
    log(f"   model: {mut.label}" + ("" if mut.torch_model is not None else
                                     " (no PyTorch weights: the stand-in steps are skipped)"))
    spec = _spec(mut)
    video_frames = gpu_checks.read_frames(VIDEO, 16) if VIDEO.is_file() else None

    def preprocess():
        need_gpu()
        if video_frames is None:
            raise Skip(f"video not found: {VIDEO}")
        import cv2

        full_hd = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_LINEAR) for f in video_frames[:8]]
        return gpu_checks.check_preprocess(video_frames, spec) + gpu_checks.check_preprocess(full_hd, spec)

    def postprocess():
        need_gpu()
        real = {}
        if mut.torch_model is not None and video_frames is not None:
            runner = standin_runner(mut.torch_model, spec)
            real = gpu_checks.model_maps(runner, video_frames, spec, [(736, 1376), (1472, 2784)])
        return gpu_checks.check_postprocess(real)

    def pipeline(batch: int):
        need_gpu()
        if video_frames is None or mut.torch_model is None:
            raise Skip("needs the video and the model's PyTorch weights")
        from pipeline.detector import Detector

        with Detector(standin_runner(mut.torch_model, spec)) as detector:
            return {"model": mut.label, **gpu_checks.check_pipeline(VIDEO, detector, frames, batch)}

    proof.step("preprocess", preprocess)
    proof.step("postprocess", postprocess)
    for batch in (1, 4):
        proof.step(f"pipeline batch {batch}", lambda b=batch: pipeline(b))
    proof.step("video encoder", lambda: gpu_checks.check_video_encoders(video_frames or []))
    proof.step("video decoder", lambda: gpu_checks.check_video_decoders(_decode_video()))
    proof.step("triton tensorrt", lambda: gpu_triton.triton_step(video_frames or []), min_s=60)
    args = run_all.QUICK_ARGS["model"] if quick else run_all.GPU_ARGS["model"]
    proof.step("model only", lambda: _ok(run_all.run_one("model", args, timeout(240), log)), min_s=60)
    # the CPU pipeline benchmark once, without the annotated-video pass: all of it took > 150 s on an H200 host
    for name, extra in (("postprocess", []), ("pipeline", ["--rounds", "1", "--no-video-sink"])):
        proof.step(run_all.BENCHMARKS[name][0],
                   lambda n=name, e=extra: _ok(run_all.run_one(n, e, timeout(150), log)), min_s=30)
    return proof.steps


def _decode_video() -> Optional[Path]:
    """The 1080x1920 street video whose software decoding is the host's limit
    (benchmarks/host_ceiling.py), else the lightbox video (all a prepared machine may have)."""
    street = VIDEO.parent / "pexels_street_captions_1080x1920.mp4"
    return next((path for path in (street, VIDEO) if path.is_file()), None)


def _ok(record: dict) -> dict:
    if record["status"] == "missing":
        raise Skip(f"{record['module']} is not in this checkout")
    if record["status"] != "ok":
        raise RuntimeError(f"{record['command']}: {record['status']}\n{record.get('output_tail', '')[-1500:]}")
    return record


def _spec(mut):
    from dbnet.spec import resolve_spec
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(mut.onnx, device="cpu") as probe:
        return resolve_spec(probe.metadata)


# -- report ------------------------------------------------------------------------------------

PIPELINE_COLUMNS = ("batch", "frames", "pipeline_fps", "model_alone_fps", "ratio", "gpu_in_model_share",
                    "gpu_idle_share")


def _stage_rows(result: dict) -> List[dict]:
    rows = []
    for name, s in {**result["stages"], "end-to-end": result["end_to_end"]}.items():
        rows.append({"batch": result["batch"], "stage": name, **{k: s.get(k) for k in (
            "count", "mean_ms", "p50_ms", "p95_ms", "p99_ms")}})
    return rows


def report_sections(steps: List[dict]) -> list:
    by_name = {s["step"]: s for s in steps}
    sections = [("Steps", common.markdown_table(
        [{"step": s["step"], "status": s["status"], "seconds": s["seconds"]} for s in steps]))]
    tests = by_name.get("gpu tests", {}).get("result")
    if tests:
        sections.append(("GPU-marked tests", common.markdown_table([{k: tests.get(k) for k in (
            "tests", "failures", "errors", "skipped", "exit")}]) + f"\n`{tests['command']}`\n"))
    if by_name.get("model only", {}).get("status") == "ok":
        sections.append(("Model only", "See [model_bench.md](model_bench.md) and "
                         "[model_bench_fps.png](model_bench_fps.png).\n"))
    for name, title in (("preprocess", "Preprocessing: CuPy kernel vs OpenCV (per frame)"),
                        ("postprocess", "Post-processing: GPU vs CPU on the same maps (per map)"),
                        ("video encoder", "The annotated video's encoder: x264 vs NVENC, "
                                          "1080x1920 (per frame)"),
                        ("video decoder", "Decoding a video file to BGR pictures: software vs "
                                          "NVDEC (--hwaccel cuda)")):
        if by_name.get(name, {}).get("result"):
            sections.append((title, common.markdown_table(by_name[name]["result"])))
    pipes = [s["result"] for s in steps if s["step"].startswith("pipeline batch") and s.get("result")]
    if pipes:
        text = ("Threaded pipeline (decode -> preprocess -> infer -> postprocess -> sink) on the video "
                "with the PyTorch-CUDA fp16 stand-in, vs the stand-in alone on the same frames "
                "(already preprocessed on the GPU). gpu_idle_share = 1 - (GPU time spanned by the "
                "model's calls, CUDA events) / wall time.\n\n" + common.markdown_table(pipes, PIPELINE_COLUMNS))
        sections.append(("Pipeline with the GPU stand-in", text))
        sections.append(("Pipeline per-stage latency (ms)",
                         common.markdown_table([r for p in pipes for r in _stage_rows(p)])))
    triton = by_name.get("triton tensorrt")
    if triton:
        sections.append(("Triton with the TensorRT backend", _triton_text(triton)))
    failed = [s for s in steps if s["status"].startswith("failed")]
    for s in failed:
        sections.append((f"{s['step']}: failure", f"```\n{s.get('traceback', s['status'])}\n```\n"))
    return sections


def _triton_text(step: dict) -> str:
    result = step.get("result")
    if not result:
        return f"{step['status']}.\n"
    columns = ("frames", "identical", "local_boxes", "triton_boxes", "box_hmean", "local_detect_ms",
               "triton_detect_ms", "ratio_to_local")
    return (f"`{result['export']}` served by `{result['tritonserver']}`, against the same plan run "
            "in this process; detect() per frame, Triton with system shared memory.\n\n"
            + common.markdown_table([result], columns))


def write_report(steps: List[dict], out: Path) -> Path:
    results = common.results_dir()
    info = common.machine_info()
    common.write_json(results / "gpu_proof.json", {"machine": info, "steps": steps})
    md = common.write_markdown(results / "gpu_proof.md", f"GPU proof: {results.name}", report_sections(steps), info)
    stages = {f"batch {s['result']['batch']}": {k: v.get("mean_ms", 0.0) for k, v in s["result"]["stages"].items()}
              for s in steps if s["step"].startswith("pipeline batch") and s.get("result")}
    if stages:
        common.plot_stacked_bars(stages, results / "gpu_proof_stages.png",
                                 "Pipeline per-stage mean latency (GPU stand-in)", "ms per batch")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_proof.md").write_text(md.read_text())
    with tarfile.open(out / f"results_{results.name}.tar.gz", "w:gz") as tar:
        tar.add(results, arcname=results.name)
    return md


def main(argv=None) -> int:
    p = common.argument_parser("benchmarks.gpu_proof", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=common.REPO / "out" / "gpu_proof",
                   help="where a copy of the results goes (a folder to take home from the GPU machine)")
    p.add_argument("--frames", type=int, default=935, help="video frames for the pipeline step")
    p.add_argument("--budget", type=float, default=540,
                   help="seconds for the whole proof: a step that would start after it is skipped")
    p.add_argument("--quick", action="store_true", help="small model sweep (smoke run)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    proof = Proof(budget_s=a.budget, on_step=lambda steps: write_report(steps, a.out))
    steps = run_proof(proof, a.out, a.frames, a.quick)
    md = write_report(steps, a.out)
    print(f"wrote {md} and {a.out}")
    print(json.dumps([{k: s[k] for k in ("step", "status", "seconds")} for s in steps], indent=1))
    return 0 if not any(s["status"].startswith("failed") for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
