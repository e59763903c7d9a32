"""Tables, plot and markdown of the model-only benchmark (benchmarks/model_bench.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from . import common


# -- tables ---------------------------------------------------------------------------------

COLUMNS = ("backend", "device", "precision", "batch", "input", "median_ms", "p10_ms", "p90_ms",
           "images_per_s", "max_abs_diff")


def speedup_rows(rows: Sequence[dict]) -> List[dict]:
    """Each configuration's throughput relative to PyTorch fp32 on the CPU and, where it ran,
    on the GPU, at the same size / batch."""
    def base(device):
        return {(r["input"], r["batch"]): r["images_per_s"] for r in rows if r["backend"] == "pytorch"
                and r["device"] == device and r["precision"] == "fp32" and "images_per_s" in r}
    cpu, cuda = base("cpu"), base("cuda")
    out = []
    for r in rows:
        key, config = (r["input"], r["batch"]), f"{r['backend']}/{r['device']}/{r['precision']}"
        if "images_per_s" not in r or config in ("pytorch/cpu/fp32", "pytorch/cuda/fp32"):
            continue
        ratios = {f"x_vs_pytorch_{name}": round(r["images_per_s"] / ref[key], 2)
                  for name, ref in (("cpu", cpu), ("cuda", cuda)) if key in ref}
        if ratios:
            out.append({"config": config, "input": r["input"], "batch": r["batch"], **ratios})
    return out


def speedup_table(rows: Sequence[dict]) -> str:
    ratios = speedup_rows(rows)
    columns = ["config", "input", "batch"] + [c for c in ("x_vs_pytorch_cpu", "x_vs_pytorch_cuda")
                                              if any(c in r for r in ratios)]
    return common.markdown_table(ratios, columns)


def write_results(rows: List[dict], mut, settings: dict, out_dir: Path,
                  name: str = "model_bench") -> Dict[str, Path]:
    info = common.machine_info()
    payload = {"benchmark": "model-only", "model": mut.describe(), "settings": settings,
               "machine": info, "rows": rows}
    paths = {"json": common.write_json(out_dir / f"{name}.json", payload)}
    series: Dict[str, list] = {}
    for r in rows:
        if "images_per_s" in r and r["batch"] == min(settings["batches"]):
            series.setdefault(f"{r['backend']}/{r['device']}/{r['precision']}", []).append(
                (r["height"], r["images_per_s"]))
    paths["png"] = common.plot_lines(
        series, out_dir / f"{name}_fps.png", f"Model-only FPS, batch {min(settings['batches'])}\n{mut.label}",
        "input side, square H = W (px)", "images / s")
    failed = [r for r in rows if "error" in r]
    sections = [
        ("What is timed", "One forward pass on a preprocessed input already on the backend's device "
         "(no decode, pre/post-processing or host copies; ONNX Runtime's CUDA provider is given "
         "host arrays, so its rows include that copy); CUDA synchronised. TensorRT: one engine per "
         "input size, tuned for the largest batch. "
         f"Warm-up {settings['warmup']}, {settings['repeats']} repetitions, median and p10/p90. "
         "max_abs_diff: probability map vs PyTorch fp32 CPU on the same real frame.\n"),
        ("Model", f"`{mut.describe()['onnx']}` sha256 `{mut.describe()['sha256']}`: {mut.label}. "
         + " ".join(mut.notes) + "\n"),
        ("Results", common.markdown_table([r for r in rows if "error" not in r], COLUMNS)),
        ("Speed-up vs PyTorch fp32 (CPU; GPU where it ran)", speedup_table(rows)),
        ("Plot", f"![FPS vs input size]({name}_fps.png)\n"),
    ]
    if failed:
        sections.append(("Failed configurations", common.markdown_table(
            failed, ("backend", "device", "precision", "batch", "input", "error"))))
    paths["md"] = common.write_markdown(out_dir / f"{name}.md", "Model-only latency and throughput",
                                        sections, info)
    return paths
