"""What a wider backbone would cost on the CPU: DBNet ResNet-18 at several widths, side by side.

The shipped detector is a half-width ResNet-18 DBNet. A wider one has more capacity, but the
default model has to stay small (a file under 15 MB) and at least as fast on the CPU as the one
it replaces at the same input size. For each width this builds the network (untrained weights:
the cost does not depend on their values), stores it the way `export.train.ship` does (fp16
initializers behind Cast nodes) and times ONNX Runtime on the CPU, the widths taking turns
repetition by repetition so that the machine's load falls on all of them alike. The shipped
ONNX runs in the same rounds, as the check that the width-0.5 row is the shipped network.

    python -m benchmarks.width_cost [--widths 0.5 0.75 1.0] [--frames 720x1280 640x960] [--repeats 7]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from . import common

SHIPPED = common.REPO / "pipeline" / "assets" / "dbnet_default.onnx"
SHIPPED_WIDTH = 0.5
SIZE_BUDGET_MB = 15.0
# a 16:9 video frame and an ICDAR 2015 photo as the project's data has them (3:2)
DEFAULT_FRAMES = ("720x1280", "640x960")


def parse_frame(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 720x1280") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be positive")
    return h, w


def shipped_form(width: float, path: Path) -> Tuple[Path, int]:
    """The width's DBNet as the shipped file would be (fp16 storage); returns (path, parameters)."""
    from export.model import DBNet
    from export.train.ship import write_fp16_onnx

    model = DBNet("resnet18", width=width).eval()
    write_fp16_onnx(model, path)
    return path, sum(p.numel() for p in model.parameters())


def time_in_turns(models: Dict[str, Path], size: Tuple[int, int], repeats: int,
                  threads: int) -> Dict[str, List[float]]:
    """Seconds per forward pass of each model, the models taking turns each repetition."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in models.items()}
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    calls = {name: functools.partial(s.run, None, {s.get_inputs()[0].name: x}) for name, s in sessions.items()}
    return common.time_in_turns(calls, repeats)


def rows_for(models: Dict[str, Path], params: Dict[str, int], frames: Sequence[Tuple[int, int]],
             limit_side: int, repeats: int, threads: int) -> List[dict]:
    from dbnet.spec import target_size

    reference = f"width {SHIPPED_WIDTH:g}"
    rows = []
    for frame in frames:
        size = target_size(*frame, limit_side)
        load_before = os.getloadavg()[0]
        stats = {name: common.Stats.from_seconds(v)
                 for name, v in time_in_turns(models, size, repeats, threads).items()}
        for name, path in models.items():
            mb = path.stat().st_size / 1e6
            rows.append({"model": name, "frame": f"{frame[0]}x{frame[1]}", "input": f"{size[0]}x{size[1]}",
                         "parameters_m": params[name] / 1e6 if name in params else None,
                         "onnx_mb": round(mb, 2), "median_ms": stats[name].median_ms,
                         "p90_ms": stats[name].p90_ms,
                         "latency_vs_shipped_width": stats[name].median_ms / stats[reference].median_ms,
                         "under_15_mb": mb < SIZE_BUDGET_MB,
                         "load_1min_before": load_before})
    return rows


def report(rows: List[dict], args) -> Path:
    columns = ("model", "frame", "input", "parameters_m", "onnx_mb", "median_ms", "p90_ms",
               "latency_vs_shipped_width", "under_15_mb", "load_1min_before")
    text = ("Budget for the shipped default: an ONNX file under 15 MB, and no slower on the CPU "
            "than the model it replaces at the same input size (`latency_vs_shipped_width` <= 1).\n")
    sections = [("What is timed",
                 f"One ONNX Runtime CPU forward pass ({args.threads or 'default'} intra-op threads) "
                 f"on a preprocessed input, batch 1, the frame resized to short side {args.limit_side} "
                 "as the detector does by default; the models take turns each repetition "
                 f"({args.repeats} repetitions after one warm-up each). Widths are untrained "
                 "DBNet ResNet-18 networks stored as the shipped file is (fp16 initializers); "
                 "`shipped` is pipeline/assets/dbnet_default.onnx.\n"),
                ("Results", common.markdown_table(rows, columns) + "\n" + text)]
    payload = {"rows": rows, "repeats": args.repeats, "threads": args.threads,
               "command": common.command_line("benchmarks.width_cost", args.argv)}
    return common.write_report("width_cost", "Backbone width: size and CPU latency", payload, sections)


def main(argv=None) -> int:
    p = common.argument_parser("benchmarks.width_cost", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    p.add_argument("--frames", type=parse_frame, nargs="+", default=[parse_frame(s) for s in DEFAULT_FRAMES],
                   help="source frame sizes HEIGHTxWIDTH, resized as the detector resizes them")
    p.add_argument("--limit-side", type=int, default=736, help="short side of the network input (the default 736)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if SHIPPED_WIDTH not in args.widths:
        p.error(f"--widths must include {SHIPPED_WIDTH:g}, the shipped width the ratios are taken against")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.limit_side < 32:
        p.error("--limit-side must be at least 32")
    with tempfile.TemporaryDirectory(prefix="dbrt_width_") as tmp:
        models, params = {}, {}
        for width in args.widths:
            name = f"width {width:g}"
            models[name], params[name] = shipped_form(width, Path(tmp) / f"w{width:g}.onnx")
        if SHIPPED.is_file():
            models["shipped"] = SHIPPED
        rows = rows_for(models, params, args.frames, args.limit_side, args.repeats, args.threads)
        out = report(rows, args)
    for row in rows:
        print(f"{row['model']:>11} {row['frame']} -> {row['input']}: {row['onnx_mb']:.1f} MB, {row['median_ms']:.0f} ms "
              f"({row['latency_vs_shipped_width']:.2f}x the shipped width)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
