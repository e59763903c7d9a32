"""dbrt's shipped detector against the detector a CPU user would pick instead: RapidOCR's own
text detector with its default det model (PP-OCRv6 det small in rapidocr 3.x), each at its own
default settings, side by side in one run.

Both run ONNX Runtime on the CPU with the same intra-op thread count. Per set, both score the
ICDAR 2015 protocol (`pipeline.evaluate`) and are timed per image (the image already decoded;
the timed call is the detector's whole pre-processing, model and post-processing): one untimed
warm-up each, then the two sides alternate image by image (the order swapping every image), and
the median per-image latency of each side and their ratio are reported.

Sets: (a) ../shared/data/realdev; (b) a validation split given by `--val DIR` (an ICDAR 2015
folder; skipped without it), and with `--val-side N` once more with both detectors resizing its
images to short side N (the DB paper tests ICDAR 2015 at 1152; `--val-post T/B/U` gives dbrt's
thresh / box_thresh / unclip_ratio for that size, chosen on the same split); (c) held-out synthetic scenes (`export.synth.dataset.write_dataset`,
seed 10000, deterministic, written to a temporary folder); (d) the lightbox video of the shared
data at each detector's default input size: the share of sampled frames on which the sign's
three words are boxed (see `words_boxed`).

    python -m benchmarks.peer_accuracy [--val DIR [--val-side 1152 [--val-post T/B/U]]]
                                       [--synth 100] [--max-images N]
                                       [--every 10] [--frames N] [--threads 0] [--model M.onnx]

rapidocr is a benchmark-only dependency (the `bench` extra); without it the script says so and
exits 0 without writing results.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from engine.errors import DbrtError
from pipeline.datasets import DatasetError

from . import common
from .peer_accuracy_report import write
from .peer_rapidocr import RapidOcrDetector, locate_model, read_frames

SHIPPED = common.REPO / "pipeline" / "assets" / "dbnet_default.onnx"
LIGHTBOX = Path("video") / "pexels_lightbox_text_960x506.mp4"
# The lightbox sign in every shot of the video (x0, y0, x1, y1 as fractions of the frame): its
# three lines of letters (#BLACK / LIVES / MATTER) fall one in each third of this region's height.
SIGN_REGION = (0.04, 0.0, 0.70, 0.92)
WORD_ASPECT = 2.0  # a word-sized box is at least this many times as wide as it is tall
WORDS_CRITERION = (
    "a box is word-sized when its axis-aligned extent is at least 2x as wide as it is tall; a "
    "frame has the three words boxed when each third (by height) of the sign's region "
    f"(x {SIGN_REGION[0]:.2f}-{SIGN_REGION[2]:.2f}, y {SIGN_REGION[1]:.2f}-{SIGN_REGION[3]:.2f} of "
    "the frame) holds the centre of a word-sized box: one per line of the sign (single letters "
    "are taller than wide, so they never count)")


# -- the lightbox criterion ----------------------------------------------------------------------

def word_boxes_in_sign(polygons: Sequence[np.ndarray], frame_hw: Tuple[int, int]) -> List[int]:
    """For each word-sized box centred in the sign's region, the line (0, 1, 2) it lies on."""
    h, w = frame_hw
    x0, y0, x1, y1 = (SIGN_REGION[0] * w, SIGN_REGION[1] * h, SIGN_REGION[2] * w, SIGN_REGION[3] * h)
    lines = []
    for poly in polygons:
        pts = np.asarray(poly, np.float32).reshape(-1, 2)
        width, height = np.ptp(pts[:, 0]), np.ptp(pts[:, 1])
        cx, cy = (pts[:, 0].min() + pts[:, 0].max()) / 2, (pts[:, 1].min() + pts[:, 1].max()) / 2
        if height > 0 and width >= WORD_ASPECT * height and x0 <= cx <= x1 and y0 <= cy <= y1:
            lines.append(min(2, int(3 * (cy - y0) / (y1 - y0))))
    return lines


def words_boxed(polygons: Sequence[np.ndarray], frame_hw: Tuple[int, int]) -> bool:
    """Whether all three lines of the sign hold a word-sized box (WORDS_CRITERION)."""
    return _every_line(word_boxes_in_sign(polygons, frame_hw))


def _every_line(lines: Sequence[int]) -> bool:
    return len(set(lines)) == 3


# -- running both sides --------------------------------------------------------------------------

def _polygons(out) -> List[np.ndarray]:
    return list(out.polygons) if hasattr(out, "polygons") else list(out)


def _detections(out):
    """Either side's output as Detections (RapidOCR gives polygons; their scores are not used)."""
    from pipeline.detections import Detections

    polygons = _polygons(out)
    return Detections(tuple(polygons), np.ones(len(polygons), np.float32))


def run_alternating(images: Sequence[np.ndarray], sides: dict) -> dict:
    """Every side on every image, timed: one untimed warm-up call each on the first image, then
    the sides alternate image by image, the order reversed on every other image.
    Returns {side: (outputs, seconds)}."""
    names = list(sides)
    for name in names:
        sides[name](images[0])
    outputs = {name: [] for name in names}
    seconds = {name: [] for name in names}
    for i, image in enumerate(images):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            out = sides[name](image)
            seconds[name].append(time.perf_counter() - start)
            outputs[name].append(out)
    return {name: (outputs[name], seconds[name]) for name in names}


def _latency(seconds: Sequence[float]) -> dict:
    stats = common.Stats.from_seconds(seconds)
    return {"median_ms": stats.median_ms, "p10_ms": stats.p10_ms, "p90_ms": stats.p90_ms}


def _speed(runs: dict) -> dict:
    latency = {name: _latency(seconds) for name, (_out, seconds) in runs.items()}
    ratio = latency["rapidocr"]["median_ms"] / latency["dbrt"]["median_ms"]
    return {"latency_ms": latency, "dbrt_speedup": round(ratio, 3)}


def score_set(name: str, dataset, sides: dict, log=print) -> dict:
    """ICDAR 2015 accuracy and per-image latency of every side on one dataset."""
    from pipeline.evaluate import evaluate

    log(f"{name}: {len(dataset)} images")
    images = [s.read_image() for s in dataset]
    runs = run_alternating(images, sides)
    row = {"set": name, "status": "ok", "images": len(images), **_speed(runs)}
    for side, (outputs, _seconds) in runs.items():
        result = evaluate([s.gt for s in dataset], [_detections(o) for o in outputs],
                          names=[s.name for s in dataset])
        row[side] = {k: v for k, v in result.to_dict(per_image=False).items()
                     if k in ("precision", "recall", "hmean", "gt_care", "det_care", "matched",
                              "recall_by_height", "errors")}
    return row


def sample_frames(video: Path, every: int, frames: Optional[int]) -> Tuple[List[int], list, int]:
    """Every `every`-th frame of the video; with `frames`, that many of them evenly spread over
    it. Returns (frame indices, frames, how many every-`every`-th frames the video has)."""
    images = list(read_frames(video, every=every))
    indices = list(range(0, every * len(images), every))
    if not images:
        raise DatasetError(f"{video}: no frames decoded")
    if frames and frames < len(images):
        keep = np.linspace(0, len(images) - 1, frames).round().astype(int)
        return [indices[k] for k in keep], [images[k] for k in keep], len(images)
    return indices, images, len(images)


def score_video(video: Path, sides: dict, every: int, frames: Optional[int], log=print) -> dict:
    """Share of sampled frames with the sign's three words boxed, per side, at default sizes."""
    indices, images, available = sample_frames(video, every, frames)
    log(f"{video.name}: {len(images)} sampled frames")
    runs = run_alternating(images, sides)
    row = {"video": video.name, "status": "ok", "every": every, "frames": len(images),
           "every_kth_frames": available, "frame_indices": indices, "criterion": WORDS_CRITERION, **_speed(runs)}
    for side, (outputs, _seconds) in runs.items():
        hw = images[0].shape[:2]
        lines = [word_boxes_in_sign(_polygons(o), hw) for o in outputs]
        boxed = [_every_line(frame_lines) for frame_lines in lines]
        row[side] = {"frames_words_boxed": int(sum(boxed)), "share": round(float(np.mean(boxed)), 4),
                     "word_boxes_per_frame": round(float(np.mean([len(x) for x in lines])), 3),
                     "frames_missed": [i for i, ok in zip(indices, boxed) if not ok]}
    return row


# -- sets ----------------------------------------------------------------------------------------

def _skipped(name: str, reason: str, log=print) -> dict:
    log(f"{name}: skipped ({reason})")
    return {"set": name, "status": "skipped", "reason": reason}


def image_sets(args, workdir: Path, log=print):
    """(name, Dataset or skip reason) for realdev, the validation split and the synthetic set."""
    from pipeline.datasets import open_dataset

    realdev = args.data / "realdev"
    yield ("realdev", open_dataset(realdev).head(args.max_images or None) if realdev.is_dir()
           else f"shared data not found at {args.data}")
    if args.val is None:
        yield "validation", "no --val DIR given"
    else:
        val = open_dataset(args.val, fmt="icdar2015")
        yield f"validation ({args.val.name})", val.head(args.max_images or None)
    count = min(args.synth, args.max_images or args.synth)
    if count <= 0:
        yield "synthetic", "--synth 0"
    else:
        from export.synth.dataset import write_dataset

        log(f"synthetic: writing {count} scenes (seed {args.synth_seed})")
        yield (f"synthetic (seed {args.synth_seed})",
               open_dataset(write_dataset(workdir / "synth", count, seed=args.synth_seed)))


def score_at_side(name: str, dataset, args, log=print) -> dict:
    """The validation split once more, both detectors resizing to short side --val-side (dbrt
    with --val-post's thresholds when given); the settings used go into the row."""
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector

    side = args.val_side
    theirs = RapidOcrDetector(args.rapidocr_model, args.threads, limit_side_len=side, limit_type="min")
    changes = {"limit_side": side, "limit_type": "min", **(args.val_post or {})}
    with Detector(args.model, lambda spec: spec.replace(**changes), backend="onnxruntime",
                  device="cpu", options=RunnerOptions(threads=args.threads)) as ours:
        row = score_set(f"{name} at short side {side}", dataset,
                        {"rapidocr": theirs, "dbrt": ours.detect}, log)
        row["settings"] = {"rapidocr": theirs.settings, "dbrt": ours.describe()}
    return row


def run(args, log=print) -> dict:
    """The whole comparison; returns the report."""
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector

    model = args.model or SHIPPED
    theirs = RapidOcrDetector(args.rapidocr_model, args.threads)
    report = {"command": common.command_line("benchmarks.peer_accuracy", sys.argv[1:]),
              "threads": args.threads, "load_average": {"before": round(os.getloadavg()[0], 2)},
              "rapidocr": {"version": theirs.version, "model": args.rapidocr_model.name,
                           "model_sha256": common.file_sha256(args.rapidocr_model),
                           "settings": theirs.settings}}
    with Detector(args.model, backend="onnxruntime", device="cpu",
                  options=RunnerOptions(threads=args.threads)) as ours, \
            tempfile.TemporaryDirectory(prefix="dbrt_peer_accuracy_") as tmp:
        report["dbrt"] = {"model": model.name, "model_sha256": common.file_sha256(model),
                          "settings": ours.describe()}
        sides = {"rapidocr": theirs, "dbrt": ours.detect}
        report["sets"] = []
        for name, data in image_sets(args, Path(tmp), log):
            report["sets"].append(_skipped(name, data, log) if isinstance(data, str)
                                  else score_set(name, data, sides, log))
            if name.startswith("validation") and args.val_side and not isinstance(data, str):
                report["sets"].append(score_at_side(name, data, args, log))
        video = args.data / LIGHTBOX
        report["lightbox"] = (score_video(video, sides, args.every, args.frames, log)
                              if video.is_file() else _skipped(LIGHTBOX.name, f"{video} not found", log))
    report["load_average"]["after"] = round(os.getloadavg()[0], 2)
    return report


# -- command line --------------------------------------------------------------------------------

def _count(text: str, least: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
    return value


def _positive(text: str) -> int:
    return _count(text, least=1)


def _post(text: str) -> dict:
    try:
        thresh, box_thresh, unclip = (float(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want THRESH/BOX_THRESH/UNCLIP_RATIO, got {text!r}") from None
    return {"thresh": thresh, "box_thresh": box_thresh, "unclip_ratio": unclip}


def parse_args(argv=None) -> argparse.Namespace:
    p = common.argument_parser("benchmarks.peer_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--val", type=Path, help="validation split: an ICDAR 2015 folder "
                   "(img_N.jpg + gt_img_N.txt); the row is skipped without it")
    p.add_argument("--val-side", type=_count, default=0, metavar="N",
                   help="also score the validation split with both detectors at short side N (0: no)")
    p.add_argument("--val-post", type=_post, metavar="T/B/U",
                   help="dbrt's thresh / box_thresh / unclip_ratio at --val-side (default: its own)")
    p.add_argument("--synth", type=_count, default=100, help="held-out synthetic scenes (0: none)")
    p.add_argument("--synth-seed", type=int, default=10_000)
    p.add_argument("--max-images", type=_count, default=0,
                   help="at most this many images per set (0: all)")
    p.add_argument("--every", type=_positive, default=10, metavar="K",
                   help="lightbox video: every K-th frame (default 10)")
    p.add_argument("--frames", type=_count, default=0,
                   help="lightbox video: at most this many of those frames, spread over it (0: all)")
    p.add_argument("--threads", type=_count, default=0,
                   help="ONNX Runtime intra-op threads of both sides (0: ORT default)")
    p.add_argument("--model", type=Path, help="dbrt's ONNX model (default: the shipped one)")
    p.add_argument("--data", type=Path, default=common.SHARED_DATA, help="the shared data folder")
    p.add_argument("--name", default="peer_accuracy", help="result file name")
    p.add_argument("--out", type=common.results_folder, help="results folder (default: benchmarks/results/<machine>/)")
    args = p.parse_args(argv)
    if args.val is not None and not args.val.is_dir():  # not a skipped row in results written over
        p.error(f"--val {args.val}: not a folder")      # the committed ones after minutes of work
    return args


def main(argv=None, log=print) -> int:
    args = parse_args(argv)
    args.rapidocr_model = locate_model()
    if args.rapidocr_model is None:
        log("peer_accuracy: skipped: rapidocr (with its packaged det model) is not installed; "
            "pip install -e '.[bench]'")
        return common.SKIPPED
    if args.model is not None and not args.model.is_file():
        log(f"peer_accuracy: --model {args.model}: no such file")
        return 2
    try:
        report = run(args, log)
    except DbrtError as exc:  # an unreadable dataset, video or model: one line, no traceback
        log(f"peer_accuracy: {exc}")
        return 2
    for path in write(report, args.out or common.results_dir(), args.name):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
