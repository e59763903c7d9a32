"""INT8 calibration: which range method and which calibration images bring full-INT8 boxes
closest to FP32. Chosen on a validation split, reported on realdev.

    python -m benchmarks.int8_calibration --val data/real/ic15_val \\
        [--calib NAME=DIR ...] [--count 32] [--checkpoint W.pt]

Every method of `dbrt export --calib-method` (percentile, mse, entropy, minmax) x every
calibration source: `default` (what benchmarks.precision_accuracy calibrates on: synthetic scenes
and frames of the shared videos) and each --calib folder (`count` images spread evenly over it).
Full INT8: nothing left in FP32. Box agreement of each INT8 model with the FP32 model (ICDAR 2015
protocol, IoU > 0.5), ONNX Runtime CPU, on the --val images (where a method is chosen) and on
../shared/data/realdev (reported, never chosen on). The calibration folders must not overlap
the evaluation images. Writes benchmarks/results/<machine>/int8_calibration.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from export.quantize import CALIB_METHODS as METHODS
from pipeline.accuracy import INTEGER_KERNELS
from pipeline.sources.images import is_image_path

from . import common
from .precision_accuracy import _calibration, _model, add_model_arguments


def image_files(folder: Path) -> List[Path]:
    """A folder's image files (the suffixes `dbrt run` reads), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p.name))


def spaced_images(folder: Path, count: int) -> List[np.ndarray]:
    """`count` images spread evenly over a folder's sorted image files."""
    import cv2

    paths = image_files(folder)
    picks = np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int))
    return [image for image in (cv2.imread(str(paths[i])) for i in picks) if image is not None]


def _sources(args, spec) -> dict:
    from pipeline.preprocess import preprocess

    side = args.side or spec.resize.limit_side
    sources = {"default": _calibration(spec, args.count, side)}
    spec = spec.replace(limit_side=side)
    for item in args.calib:
        name, _, folder = item.partition("=")
        images = spaced_images(Path(folder), args.count)
        sources[name] = ([preprocess(im, spec)[0][None] for im in images],
                         f"{len(images)} images spread over {folder}")
    return sources


def _eval_sets(val: Path) -> dict:
    from pipeline.sampling import read_images

    sets = {f"validation ({val.name})": read_images(val)}
    realdev = common.realdev_images("validation only")
    return sets if realdev is None else dict(sets, realdev=realdev)


def run(args) -> dict:
    from export import quantize
    from export.onnx_export import export_onnx
    from pipeline.accuracy import compare_many, int8_execution

    started = time.perf_counter()
    model, described, spec = _model(args)
    with tempfile.TemporaryDirectory(prefix="dbrt_int8_calib_") as tmp:
        work = Path(tmp)
        fp32 = export_onnx(model, work / "fp32.onnx", opset=17, spec=spec)
        sources = _sources(args, fp32.spec)
        variants, seconds = {}, {}
        for source, (inputs, _) in sources.items():
            for method in METHODS:
                path, begun = work / f"{len(variants)}.onnx", time.perf_counter()
                variants[(method, source)] = quantize.to_int8(fp32.path, path, inputs, method)
                seconds[(method, source)] = round(time.perf_counter() - begun, 1)
                print(f"built {method} on {source} in {seconds[(method, source)]} s", flush=True)
        rows = []
        for set_name, images in _eval_sets(Path(args.val)).items():
            results = compare_many(fp32.path, list(variants.values()), images,
                                   limit_side=args.side or fp32.spec.resize.limit_side)
            for (method, source), result in zip(variants, results):
                rows.append(dict(method=method, calibration=source, images=set_name, n=result.images,
                                 calibrate_s=seconds[(method, source)],
                                 fp32_boxes=result.reference_boxes, boxes=result.candidate_boxes,
                                 P=result.precision_score, R=result.recall, hmean=result.hmean,
                                 mean_abs=result.mean_abs))
                print(f"{method:10s} {source:14s} {set_name:24s} {result.hmean:.4f}", flush=True)
    command = " ".join(["python -m benchmarks.int8_calibration"] + sys.argv[1:])
    return dict(command=command, int8_execution=int8_execution(), model=described, rows=rows,
                calibration={name: text for name, (_, text) in sources.items()},
                seconds=round(time.perf_counter() - started, 1))


def method_summary(rows: List[dict]) -> List[dict]:
    """Per evaluation set and method: mean, worst and best agreement over the calibration sources,
    and the mean time to calibrate and quantize."""
    out = []
    for images in dict.fromkeys(r["images"] for r in rows):
        for method in METHODS:
            scores = [r["hmean"] for r in rows if r["images"] == images and r["method"] == method]
            if scores:
                times = [r["calibrate_s"] for r in rows if r["images"] == images and r["method"] == method]
                out.append(dict(images=images, method=method, sources=len(scores),
                                mean_hmean=round(float(np.mean(scores)), 4),
                                worst_hmean=round(min(scores), 4), best_hmean=round(max(scores), 4),
                                mean_calibrate_s=round(float(np.mean(times)), 1)))
    return out


def _markdown(payload: dict) -> list:
    sources = "\n".join(f"- `{name}`: {text}" for name, text in payload["calibration"].items())
    intro = (f"Model: {payload['model']}. Full INT8 (Q/DQ on every Conv, ConvTranspose and Add, "
             "nothing left in FP32), ONNX Runtime CPU (INT8 ran as "
             f"{payload.get('int8_execution', INTEGER_KERNELS)}); `calibrate_s`: "
             "seconds to collect the ranges "
             "and write the Q/DQ model (this machine, one process); box agreement = ICDAR 2015 "
             "protocol of the INT8 boxes against the FP32 boxes. Choose on the validation rows; "
             f"realdev is reported only.\n\nCalibration sources:\n{sources}\n\nCommand: `{payload['command']}`\n")
    shown = [dict(r, **{k: f"{r[k]:.4f}" for k in ("P", "R", "hmean")}, mean_abs=f"{r['mean_abs']:.2e}")
             for r in payload["rows"]]
    summary = [dict(r, **{k: f"{r[k]:.4f}" for k in ("mean_hmean", "worst_hmean", "best_hmean")})
               for r in method_summary(payload["rows"])]
    return [("Setup", intro),
            ("Per method over the calibration sources", common.markdown_table(summary)),
            ("Every method and source", common.markdown_table(shown))]


def main(argv: Optional[List[str]] = None) -> int:
    parser = common.argument_parser("benchmarks.int8_calibration", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", required=True, help="validation image folder (where a method is chosen)")
    parser.add_argument("--calib", action="append", default=[], metavar="NAME=DIR",
                        help="a calibration image folder (repeatable)")
    parser.add_argument("--count", type=int, default=32, help="calibration inputs per source")
    add_model_arguments(parser)
    parser.add_argument("--side", type=int, help="short side of every input (default: the model's)")
    parser.add_argument("--name", default="int8_calibration", help="result file name")
    args = parser.parse_args(argv)
    if not Path(args.val).is_dir():
        parser.error(f"--val {args.val}: not a folder")
    for item in args.calib:
        name, _, folder = item.partition("=")
        if not name or not folder:
            parser.error(f"--calib {item}: give NAME=DIR")
        if not Path(folder).is_dir() or not image_files(Path(folder)):
            parser.error(f"--calib {item}: {folder} is not a folder of images")
    payload = run(args)
    common.write_report(args.name, "INT8 calibration: methods and sources", payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
