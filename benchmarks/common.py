"""What every dbrt benchmark shares: where results go, what machine and libraries produced them,
how a timing is taken (warm-up, repetitions, median and spread), and the JSON / markdown / PNG
writers.

Results live in `benchmarks/results/<machine>/<name>.{json,md,png}`; `<machine>` is the GPU model
when one is present (e.g. `nvidia-h200`), else `cpu-<cpu model>-<cores>c`, or `$DBRT_MACHINE`;
`$DBRT_RESULTS_DIR` redirects everything (scratch runs, tests).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
REPO = RESULTS_ROOT.parent.parent
# the exit status of a benchmark that measured nothing because this machine lacks its data or
# package (automake's "skipped"): run_all's index says "skipped", not "ok"
SKIPPED = 77
SHARED_DATA = Path(os.environ.get("DBRT_SHARED_DATA", REPO.parent / "shared" / "data"))
LIBRARIES = ("numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "onnx", "torch",
             "cupy-cuda12x", "cupy-cuda13x", "tensorrt", "av", "pyclipper", "rapidocr")


# `dbrt bench X` calls these modules' main(); their usage and argument errors then name that
# command instead of `python -m benchmarks.X` (set by pipeline/commands/bench.py)
invoked_as: Dict[str, str] = {}


def prog(module: str) -> str:
    """The program name a benchmark's argument parser shows: how it was started."""
    return invoked_as.get(module, f"python -m {module}")


def argument_parser(module: str, **kwargs):
    """A benchmark's argument parser, named as it was started; a usage mistake is one line, as
    in every dbrt command."""
    from pipeline.commands._validate import OneLineParser

    return OneLineParser(prog=prog(module), **kwargs)


def results_folder(text: str) -> Path:
    """--out: a folder the results can be written to, checked while parsing (an unwritable
    one failed only once the benchmark had run for minutes)."""
    from pipeline.commands._validate import output_folder

    return Path(output_folder(text))


# -- machine -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def gpu_names() -> List[str]:
    """NVIDIA GPU models from nvidia-smi (empty without a driver); a Jetson's board name."""
    from .jetson import board

    if board() is not None:
        return [board()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name() -> str:
    """Folder name of this machine's results."""
    if os.environ.get("DBRT_MACHINE"):
        return _slug(os.environ["DBRT_MACHINE"])
    gpus = gpu_names()
    if gpus:
        return _slug(gpus[0].replace("NVIDIA", "nvidia"))
    return f"cpu-{_slug(cpu_model())}-{os.cpu_count()}c"


def results_dir(machine: Optional[str] = None) -> Path:
    """benchmarks/results/<machine>/ (created), or $DBRT_RESULTS_DIR when set (tests, scratch runs)."""
    override = os.environ.get("DBRT_RESULTS_DIR")
    path = Path(override) if override and machine is None else RESULTS_ROOT / (machine or machine_name())
    path.mkdir(parents=True, exist_ok=True)
    return path


def library_versions(names: Iterable[str] = LIBRARIES) -> Dict[str, str]:
    """Installed versions of the libraries that shape the numbers (absent ones are left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict:
    info = {"machine": machine_name(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "gpus": gpu_names(), "libraries": library_versions(),
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    from .jetson import jetson_info

    jetson = jetson_info()
    if jetson is not None:  # its power mode sets its FPS as much as the model does
        info["jetson"] = jetson
    if hasattr(os, "getloadavg"):  # a shared machine's load explains noisy timings
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    shipped = REPO / "pipeline" / "assets" / "dbnet_default.onnx"
    if shipped.is_file():  # which default model the run had, where the benchmark names none
        info["shipped_model_sha256"] = file_sha256(shipped)
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def command_line(module: str, argv: Sequence[str]) -> str:
    """`python -m MODULE ARGS` as a results file shows it: paths in the checkout relative to it,
    other absolute paths cut to their last two parts (no machine's folders in the results);
    quoted as a shell needs them."""
    def shown(arg: str) -> str:
        path = Path(arg)
        if not path.is_absolute():
            return arg
        return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else "/".join(path.parts[-2:])
    return " ".join(["python -m", module, *(shlex.quote(shown(a)) for a in argv)])


def file_sha256(path, length: int = 16) -> str:
    """Hex digest prefix of a file (to say exactly which model was measured)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


# -- timing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stats:
    """Summary of repeated timings, in milliseconds."""

    n: int
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "Stats":
        ms = np.asarray(samples, np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timing samples")
        p10, p50, p90 = np.percentile(ms, (10, 50, 90))
        return cls(int(ms.size), round(float(p50), 4), round(float(ms.mean()), 4),
                   round(float(ms.std()), 4), round(float(ms.min()), 4), round(float(ms.max()), 4),
                   round(float(p10), 4), round(float(p90), 4))

    @property
    def spread_pct(self) -> float:
        """(p90 - p10) / median: how noisy the measurement was."""
        return 0.0 if self.median_ms == 0 else 100.0 * (self.p90_ms - self.p10_ms) / self.median_ms

    def to_dict(self) -> dict:
        out = asdict(self)
        out["spread_pct"] = round(self.spread_pct, 2)
        return out


def measure(fn: Callable[[], object], warmup: int = 3, repeats: int = 10,
            sync: Optional[Callable[[], None]] = None) -> Stats:
    """Time `fn()` `repeats` times after `warmup` untimed calls. `sync` (e.g. a CUDA stream
    synchronise) runs inside the timed region so asynchronous work is counted."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append(time.perf_counter() - start)
    return Stats.from_seconds(samples)


def time_in_turns(calls: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    """Seconds per call of each of `calls` (after one untimed warm-up each: allocations, kernel
    choice), the calls taking turns every repetition so that the machine's load falls on all alike."""
    for call in calls.values():
        call()
    samples: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples


# -- writers -----------------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.2f}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """A GitHub markdown table of `rows` (dicts); columns default to the first row's keys."""
    if not rows:
        return "_no rows_\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_markdown(path: Path, title: str, sections: Sequence[tuple], info: Optional[dict] = None) -> Path:
    """`sections` are (heading, markdown text) pairs; `info` (machine_info()) becomes a footer."""
    from .jetson import describe as describe_jetson

    parts = [f"# {title}\n"]
    for heading, text in sections:
        parts.append(f"## {heading}\n\n{text}")
    if info:
        libs = ", ".join(f"{k} {v}" for k, v in sorted(info.get("libraries", {}).items()))
        gpus = ", ".join(info.get("gpus") or []) or "none"
        load = info.get("load_average")
        load_text = f" 1/5/15-min load average at the end: {', '.join(map(str, load))}." if load else ""
        jetson = f" ({describe_jetson(info['jetson'])})" if info.get("jetson") else ""
        shipped = info.get("shipped_model_sha256")
        shipped = f" Shipped model (dbnet_default.onnx) sha256 `{shipped}`." if shipped else ""
        parts.append(f"---\nMachine `{info['machine']}`: {info['cpu']} ({info['cpu_count']} cores), "
                     f"GPU: {gpus}{jetson}; Python {info['python']}; {libs}. Measured {info['date_utc']}."
                     f"{load_text}{shipped}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def realdev_images(otherwise: str) -> Optional[list]:
    """../shared/data/realdev's photos, or None (saying so, and `otherwise`) when absent."""
    from pipeline.sampling import read_images

    folder = SHARED_DATA / "realdev" / "images"
    if folder.is_dir():
        return read_images(folder)
    print(f"realdev not found at {folder}: {otherwise}", file=sys.stderr)
    return None


def write_report(name: str, title: str, payload: dict, sections: Sequence[tuple]) -> Path:
    """results/<machine>/<name>.json (the payload and the machine) and .md (`sections`)."""
    info = machine_info()
    out = results_dir()
    write_json(out / f"{name}.json", dict(payload, machine=info))
    write_markdown(out / f"{name}.md", title, sections, info)
    print(f"wrote {out / name}.json / .md")
    return out / f"{name}.json"


# -- plots -------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_lines(series: Dict[str, Sequence[tuple]], path: Path, title: str, xlabel: str,
               ylabel: str) -> Path:
    """One line per series; each series is a list of (x, y) points (e.g. FPS vs input size)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, points in series.items():
        xs, ys = zip(*sorted(points)) if points else ((), ())
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_stacked_bars(bars: Dict[str, Dict[str, float]], path: Path, title: str, ylabel: str) -> Path:
    """One stacked bar per key of `bars`, the first at the top; each bar is {segment: value}
    (e.g. per-stage ms). Horizontal, one row per bar: side by side, the labels of ten passes ran
    into each other."""
    plt = _pyplot()
    segments = list(dict.fromkeys(seg for bar in bars.values() for seg in bar))
    fig, ax = plt.subplots(figsize=(6.4, max(3.0, 1.5 + 0.45 * len(bars))), dpi=100)
    left = np.zeros(len(bars))
    for seg in segments:
        values = np.array([bar.get(seg, 0.0) for bar in bars.values()])
        ax.barh(list(bars), values, left=left, label=seg)
        left += values
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set(xlabel=ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
