"""Accuracy against CPU time by input size: one detector at several short sides, side by side.

The detector resizes every frame so that its short side is `limit_side` (736 by default,
`--limit-side` of the CLI). A larger input finds smaller words and costs more time. For each
short side this scores a validation split (ICDAR 2015 protocol) twice: at the model's own
thresholds, what a user gets by changing only the input size, and at the thresholds tuned on the
split for that side (`dbrt eval --tune`'s grid), the best that size gives. It also times one
ONNX Runtime CPU forward pass of a 720p video frame and of a photo of the split's size at each
side, the sides taking turns repetition by repetition so that the machine's load falls on all of
them alike. Times are reported as ratios to the default side.

    python -m benchmarks.input_size --val DIR [--model M] [--sides 640 736 ...] [--repeats 7]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from . import common

DEFAULT_SIDE = 736
DEFAULT_SIDES = (640, 736, 832, 896, 960, 1024, 1152)
VIDEO_FRAME = (720, 1280)


def _side(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 32 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"a short side from 32 to 4096, not {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def accuracy_at(model, dataset, side: int, threads: int) -> dict:
    """The split scored at short side `side`: at the model's thresholds and at the best of the
    tuning grid (the network runs once per image; only post-processing repeats)."""
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector
    from pipeline.tune import probability_maps, score, tune_on_maps

    with Detector(model, lambda spec: spec.replace(limit_side=side, limit_type="min"),
                  backend="onnxruntime", device="cpu", options=RunnerOptions(threads=threads)) as det:
        maps = probability_maps(det, dataset)
        post = det.post
    own = score(maps, post)
    best = tune_on_maps(maps, post.config)[0]
    config = post.config
    return {"own_settings": f"{config.thresh:g} / {config.box_thresh:g} / {config.unclip_ratio:g}",
            "own_precision": own.precision, "own_recall": own.recall, "own_hmean": own.hmean,
            "tuned_settings": f"{best['thresh']:g} / {best['box_thresh']:g} / {best['unclip_ratio']:g}",
            "tuned_precision": best["precision"], "tuned_recall": best["recall"],
            "tuned_hmean": best["hmean"]}


def forward_ms(model, inputs: Dict[str, Tuple[int, int]], repeats: int, threads: int) -> Dict[str, float]:
    """Median ms of one CPU forward pass per named input (H, W), the inputs taking turns."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    calls = {key: functools.partial(session.run, None, {name: rng.random((1, 3, *hw), dtype=np.float32)})
             for key, hw in inputs.items()}
    samples = common.time_in_turns(calls, repeats)
    return {key: common.Stats.from_seconds(v).median_ms for key, v in samples.items()}


def measure(model, dataset, sides: Sequence[int], repeats: int, threads: int, log=print) -> List[dict]:
    """One row per side: input sizes, forward-pass times and their ratio to the default side's,
    the split's scores at the model's and at tuned thresholds."""
    from dbnet.spec import target_size

    photo = dataset[0].read_image().shape[:2]
    frames = {"video": VIDEO_FRAME, "photo": photo}
    inputs = {(kind, side): target_size(*hw, side) for side in sides for kind, hw in frames.items()}
    load_before = os.getloadavg()[0]
    times = forward_ms(model, {f"{k} {s}": hw for (k, s), hw in inputs.items()}, repeats, threads)
    rows = []
    for side in sides:
        log(f"short side {side}: scoring {len(dataset)} images")
        row = {"short_side": side,
               "photo_input": "x".join(map(str, inputs[("photo", side)])),
               "photo_ms": times[f"photo {side}"],
               "video_input": "x".join(map(str, inputs[("video", side)])),
               "video_ms": times[f"video {side}"]}
        rows.append(dict(row, **accuracy_at(model, dataset, side, threads), load_1min_before=load_before))
    reference = next((r for r in rows if r["short_side"] == DEFAULT_SIDE), rows[0])
    for row in rows:
        for kind in ("photo", "video"):
            row[f"{kind}_time_vs_{reference['short_side']}"] = row[f"{kind}_ms"] / reference[f"{kind}_ms"]
    return rows


def report(rows: List[dict], args, model: Path, val_name: str, images: int) -> Path:
    reference = next((r["short_side"] for r in rows if r["short_side"] == DEFAULT_SIDE), rows[0]["short_side"])
    columns = ("short_side", "photo_input", "photo_ms", f"photo_time_vs_{reference}", "video_input",
               "video_ms", f"video_time_vs_{reference}", "own_settings", "own_precision", "own_recall",
               "own_hmean", "tuned_settings", "tuned_precision", "tuned_recall", "tuned_hmean")
    what = (f"`{model.name}` on the validation split `{val_name}` ({images} images), each image resized "
            "so that its short side is `short_side` (`dbrt eval --limit-side N`). `own_*`: at the "
            "model's own thresh / box_thresh / unclip_ratio; `tuned_*`: at the best of `dbrt eval "
            "--tune`'s grid for that side, chosen on the same split (so an upper bound for data like it). "
            f"Times: the median of {args.repeats} ONNX Runtime CPU forward passes "
            f"({args.threads or 'default'} intra-op threads, batch 1) of a {VIDEO_FRAME[0]}x{VIDEO_FRAME[1]} "
            "video frame and of a photo of the split's size, resized as the detector resizes them, "
            f"the inputs taking turns; ratios are to short side {reference}. Post-processing is not "
            "timed: it depends on the number of words, not the input size.\n")
    out = common.results_dir()
    sides = f"short side {rows[0]['short_side']} to {rows[-1]['short_side']}"
    plot = common.plot_lines(
        {"thresholds tuned per side": [(r["photo_ms"], r["tuned_hmean"]) for r in rows],
         "the model's own thresholds": [(r["photo_ms"], r["own_hmean"]) for r in rows]},
        out / f"{args.name}.png", f"{model.name}: validation hmean against CPU time, {sides}",
        "ms per photo (ONNX Runtime, CPU)", "hmean")
    shown = [{k: (f"{v:.3f}" if k.endswith(("precision", "recall", "hmean")) else
                  f"{v:.0f}" if k.endswith("_ms") else v) for k, v in r.items()} for r in rows]
    sections = [("What is measured", what),
                ("Results", common.markdown_table(shown, columns) + f"\n![hmean against time]({plot.name})\n")]
    payload = {"rows": rows, "model": str(model), "model_sha256": common.file_sha256(model),
               "validation": val_name, "images": images, "repeats": args.repeats, "threads": args.threads,
               "command": common.command_line("benchmarks.input_size", args.argv)}
    return common.write_report(args.name, "Input size: validation accuracy against CPU time", payload, sections)


def parse_args(argv=None) -> argparse.Namespace:
    p = common.argument_parser("benchmarks.input_size", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val", type=Path, required=True,
                   help="validation split: an ICDAR 2015 folder (img_N.jpg + gt_img_N.txt) or a gt.json")
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped one)")
    p.add_argument("--sides", type=_side, nargs="+", default=list(DEFAULT_SIDES),
                   help=f"short sides to compare (default: {' '.join(map(str, DEFAULT_SIDES))})")
    p.add_argument("--max-images", type=_count, default=0, help="score only the first N images (0: all)")
    p.add_argument("--repeats", type=_count, default=7, help="timed forward passes per input")
    p.add_argument("--threads", type=_count, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--name", default="input_size", help="result file name")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.sides = sorted(set(args.sides))
    return args


def main(argv=None, log=print) -> int:
    from engine.errors import DbrtError
    from pipeline.datasets import open_dataset
    from pipeline.shipped import default_model_path

    args = parse_args(argv)
    model = args.model or default_model_path()
    if not Path(model).is_file():
        log(f"input_size: --model {model}: no such file")
        return 2
    try:
        dataset = open_dataset(args.val).head(args.max_images or None)
        if not len(dataset):
            log(f"input_size: --val {args.val}: no images")
            return 2
        rows = measure(model, dataset, args.sides, args.repeats, args.threads, log)
    except DbrtError as exc:  # an unreadable dataset or model: one line, no traceback
        log(f"input_size: {exc}")
        return 2
    report(rows, args, Path(model), Path(args.val).name, len(dataset))
    for r in rows:
        log(f"short side {r['short_side']}: photo {r['photo_input']} {r['photo_ms']:.0f} ms, "
            f"hmean {r['own_hmean']:.3f} at its own thresholds, {r['tuned_hmean']:.3f} tuned ({r['tuned_settings']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
