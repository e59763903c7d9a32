"""Detectors on photos labelled only with masks, side by side in one run: a mask folder (NAME.jpg +
NAME_mask.png, shrunk word regions, the layout `dbrt train --data` reads), e.g. the mask set's
`test` folder, whose shop signs, street signs and banners no ICDAR-style set here has.

Such masks carry no word polygons, and the mask set's kernels are only roughly placed (many
nearly the full letter height, shifted along the word), so boxes grown back from them fail the
ICDAR 2015 IoU test on words a detector boxes well. Coverage counts instead, at each word's scale:

* a box is at a word's scale when its short side (of its minimum-area rectangle) is at most
  SCALE_FACTOR x the kernel's short side + SCALE_SLACK px: a box around the word or its line is,
  a box over several lines or a whole sign is not;
* words found: mask components (one per word, or per line where the mask joins them) of which at
  least FOUND_SHARE of the pixels lie inside boxes at their scale;
* boxes on text: boxes of which at least ON_TEXT_SHARE of the area is kernels they are at the
  scale of (a box around a word holds its kernel; a box on background, or one far larger than
  the text in it, does not);

and their harmonic mean. A box over several words of a line counts for each, and letters boxed
one by one count for their word once they cover FOUND_SHARE of it: the counts say whether a
detector responds to the text at its size, not whether it splits words as ICDAR 2015 wants
(peer_accuracy's ICDAR sets say that). Components under MIN_PIXELS (kernels of words too small
to read) are left out.

    python -m benchmarks.mask_coverage DIR [--model NAME=M.onnx ...] [--no-rapidocr]
                                       [--threads 0] [--name mask_coverage]

Each dbrt model runs at its own settings (ONNX Runtime, CPU); the default is the shipped model.
RapidOCR's detector (PP-OCRv6 det small, its defaults) joins when the `bench` extra is installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from engine.errors import DbrtError
from export.train.data import read_mask_folder, read_masked_photo  # as training reads them

from . import common

FOUND_SHARE = 0.5
ON_TEXT_SHARE = 0.1
SCALE_FACTOR, SCALE_SLACK = 3.0, 8.0
MIN_PIXELS = 20
SHIPPED = common.REPO / "pipeline" / "assets" / "dbnet_default.onnx"


def box_rasters(polygons: Sequence[np.ndarray], hw: Tuple[int, int]) -> Tuple[List[np.ndarray], np.ndarray]:
    """Each polygon filled into its own boolean HxW raster, and each one's short side."""
    rasters, short = [], []
    for poly in polygons:
        points = np.asarray(poly, np.float32).reshape(-1, 2)
        r = np.zeros(hw, np.uint8)
        cv2.fillPoly(r, [np.round(points).astype(np.int32)], 1)
        rasters.append(r.astype(bool))
        short.append(min(cv2.minAreaRect(points)[1]))
    return rasters, np.asarray(short, np.float64)


def kernels(mask: np.ndarray) -> Tuple[List[np.ndarray], np.ndarray]:
    """The mask's word kernels (components of MIN_PIXELS or more) as boolean rasters, and each
    one's short side (its pixel extent: the rectangle around its pixel centres plus one)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    found, short = [], []
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] >= MIN_PIXELS:
            pixels = labels == k
            ys, xs = np.nonzero(pixels)
            found.append(pixels)
            short.append(min(cv2.minAreaRect(np.float32(np.column_stack([xs, ys])))[1]) + 1.0)
    return found, np.asarray(short, np.float64)


def coverage(mask: np.ndarray, polygons: Sequence[np.ndarray]) -> dict:
    """Words found and boxes on text of one image (see the module docstring)."""
    words, word_short = kernels(np.asarray(mask, bool))
    boxes, box_short = box_rasters(polygons, np.shape(mask))
    at_scale = box_short[None, :] <= SCALE_FACTOR * word_short[:, None] + SCALE_SLACK  # words x boxes
    found = 0
    for w, word in enumerate(words):
        near = [boxes[b] for b in np.flatnonzero(at_scale[w])]
        found += bool(near) and np.logical_or.reduce(near)[word].mean() >= FOUND_SHARE
    on_text = 0
    for b, box in enumerate(boxes):
        text = [words[w] for w in np.flatnonzero(at_scale[:, b])]
        on_text += bool(text) and box.any() and np.logical_or.reduce(text)[box].mean() >= ON_TEXT_SHARE
    return {"words": len(words), "words_found": int(found), "boxes": len(boxes), "boxes_on_text": int(on_text)}


def summarise(per_image: Sequence[dict]) -> dict:
    total = {k: int(sum(r[k] for r in per_image)) for k in ("words", "words_found", "boxes", "boxes_on_text")}
    recall = total["words_found"] / total["words"] if total["words"] else 0.0
    precision = total["boxes_on_text"] / total["boxes"] if total["boxes"] else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {**total, "recall": round(recall, 4), "precision": round(precision, 4), "hmean": round(hmean, 4)}


def score(pairs: Sequence[Tuple[Path, Path]], detect: Callable[[np.ndarray], Sequence[np.ndarray]]) -> dict:
    """Coverage of every (image, mask) pair of a mask folder, read one at a time."""
    per_image = []
    for image_path, mask_path in pairs:
        image, mask = read_masked_photo(image_path, mask_path)
        per_image.append({"image": image_path.name, **coverage(mask, detect(image))})
    return {**summarise(per_image), "per_image": per_image}


def _polygons(out) -> List[np.ndarray]:
    return list(out.polygons) if hasattr(out, "polygons") else list(out)


def run(args, log=print) -> dict:
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector

    from .peer_rapidocr import RapidOcrDetector, locate_model

    photos = read_mask_folder(args.folder)
    log(f"{args.folder}: {len(photos)} masked photos")
    report = {"command": common.command_line("benchmarks.mask_coverage", args.argv),
              "folder": str(args.folder), "photos": len(photos),
              "criteria": {"found_share": FOUND_SHARE, "on_text_share": ON_TEXT_SHARE, "scale_factor": SCALE_FACTOR,
                           "scale_slack_px": SCALE_SLACK, "min_pixels": MIN_PIXELS},
              "detectors": {}}
    for name, path in args.models.items():
        with Detector(path, backend="onnxruntime", device="cpu",
                      options=RunnerOptions(threads=args.threads)) as ours:
            row = score(photos, lambda image: _polygons(ours.detect(image)))
            row.update(model=str(path), model_sha256=common.file_sha256(path), settings=ours.describe())
        report["detectors"][name] = row
        log(f"{name}: {_line(row)}")
    rapid_model = None if args.no_rapidocr else locate_model()
    if rapid_model is not None:
        theirs = RapidOcrDetector(rapid_model, args.threads)
        row = score(photos, theirs)
        row.update(model=rapid_model.name, version=theirs.version, settings=theirs.settings)
        report["detectors"]["rapidocr"] = row
        log(f"rapidocr: {_line(row)}")
    elif not args.no_rapidocr:
        log("rapidocr: not installed (pip install -e '.[bench]'), left out")
    return report


def _line(row: dict) -> str:
    return (f"words found {row['words_found']}/{row['words']} ({row['recall']:.3f}), boxes on text "
            f"{row['boxes_on_text']}/{row['boxes']} ({row['precision']:.3f}), hmean {row['hmean']:.3f}")


def write(report: dict, name: str) -> Path:
    columns = ("detector", "words", "words_found", "recall", "boxes", "boxes_on_text", "precision", "hmean")
    rows = [{"detector": k, **{c: v[c] for c in columns[1:]}} for k, v in report["detectors"].items()]
    criteria = (f"FOUND_SHARE {FOUND_SHARE}, ON_TEXT_SHARE {ON_TEXT_SHARE}, SCALE_FACTOR "
                f"{SCALE_FACTOR:g}, SCALE_SLACK {SCALE_SLACK:g} px, MIN_PIXELS {MIN_PIXELS}")
    counted = __doc__[__doc__.index("Such masks"):__doc__.index("    python -m")].rstrip()
    sections = [("What is counted", f"{counted}\n\n{criteria}.\n"),
                ("Results", f"`{report['folder']}`: {report['photos']} photos.\n\n"
                            + common.markdown_table(rows, columns) + f"\nCommand: `{report['command']}`\n")]
    return common.write_report(name, "Coverage of mask-labelled photos", report, sections)


def _model(text: str) -> Tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"want NAME=MODEL.onnx, got {text!r}")
    return name, Path(path)


def parse_args(argv=None) -> argparse.Namespace:
    p = common.argument_parser("benchmarks.mask_coverage", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a mask folder (NAME.jpg + NAME_mask.png)")
    p.add_argument("--model", type=_model, action="append", metavar="NAME=MODEL.onnx",
                   help="a dbrt ONNX model and its name in the table; repeat (default: shipped=the shipped model)")
    p.add_argument("--no-rapidocr", action="store_true", help="leave RapidOCR's detector out")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--name", default="mask_coverage", help="result file name")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    args.models: Dict[str, Path] = dict(args.model or [("shipped", SHIPPED)])
    if not args.folder.is_dir():
        p.error(f"{args.folder}: no such folder")
    missing = [str(m) for m in args.models.values() if not m.is_file()]
    if missing:
        p.error(f"--model {missing[0]}: no such file")
    return args


def main(argv=None, log=print) -> int:
    args = parse_args(argv)
    try:
        report = run(args, log)
    except DbrtError as exc:  # an unreadable photo, mask or model: one line, no traceback
        log(f"mask_coverage: {exc}")
        return 2
    write(report, args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
