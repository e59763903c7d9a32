"""Reading text, side by side with RapidOCR (same PP-OCRv6 rec model, from the rapidocr wheel):

- end to end on ../shared/data/realdev (ICDAR 2015 end-to-end protocol, pipeline.e2e: IoU > 0.5
  and transcriptions equal after strip + casefold, '###' ignored): dbrt (shipped detector +
  `--read`) against RapidOCR's full pipeline at its defaults (PP-OCRv6 det small, the direction
  classifier, PP-OCRv6 rec small), both scored by the same code; median per-image latency;
- the same end to end on a validation split given by `--val DIR` (an ICDAR 2015
  folder with transcriptions, e.g. training images 801..900; skipped without it);
- recognition cost per text instance on the CPU: the ground-truth polygons of realdev (every
  one not marked '###') read by dbrt's Recognizer (crop + batch + infer + decode) and by
  RapidOCR's recognizer on its own crops (get_rotate_crop_image, its batches of 6).

    python -m benchmarks.reading_bench [--rounds 3] [--val DIR]

Throughput on video (the pipeline against the calls alone and against RapidOCR) is
benchmarks/reading_throughput.py.

Without rapidocr or the shared data it says so and exits 77 (skipped) without writing results;
a `--val` that is not a folder is refused before any work.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from pipeline.commands._validate import at_least  # noqa: E402
from engine.lazy import optional  # noqa: E402
from pipeline.datasets import open_dataset  # noqa: E402
from pipeline.detections import Detections  # noqa: E402
from pipeline.e2e import E2EResult, e2e_image  # noqa: E402


def _rapidocr_engine():
    from rapidocr import RapidOCR

    return RapidOCR(params={"Global.log_level": "error"})


def _rapidocr_detections(engine, image) -> Detections:
    out = engine(image)
    if out.boxes is None or not len(out.boxes):
        return Detections.from_quads(np.zeros((0, 4, 2), np.float32), [], {"text": [], "text_score": []})
    return Detections.from_quads(np.float32(out.boxes), np.asarray(out.scores, np.float32),
                                 {"text": list(out.txts), "text_score": list(out.scores)})


def end_to_end(dataset, detector, engine) -> dict:
    sides = {"dbrt": detector.detect, "rapidocr": lambda image: _rapidocr_detections(engine, image)}
    scored = {name: [] for name in sides}
    times = {name: [] for name in sides}
    for index, sample in enumerate(dataset):
        image = sample.read_image()
        if index == 0:  # one untimed call each: first-call allocations are not per-image cost
            for detect in sides.values():
                detect(image)
        # alternating, so load changes hit both alike; who goes first changes image by image
        for name in (list(sides) if index % 2 == 0 else list(sides)[::-1]):
            detect = sides[name]
            t0 = time.perf_counter()
            dets = detect(image)
            times[name].append(time.perf_counter() - t0)
            scored[name].append(e2e_image(sample.gt.polygons, sample.gt.ignore, sample.gt.texts,
                                          dets, sample.name))
    rows = []
    for name in sides:
        result = E2EResult(tuple(scored[name]))
        rows.append({"pipeline": name, "precision": round(result.precision, 4),
                     "recall": round(result.recall, 4), "hmean": round(result.hmean, 4),
                     "correct": result.correct, "gt_care": result.gt_care,
                     "det_care": result.det_care,
                     "median_ms_per_image": round(1e3 * float(np.median(times[name])), 1)})
    return {"rows": rows}


def _gt_words(dataset):
    """(image, Detections of the ground-truth polygons that are not '###')."""
    out = []
    for sample in dataset:
        keep = [i for i, flag in enumerate(sample.gt.ignore) if not flag]
        if keep:
            polys = tuple(sample.gt.polygons[i] for i in keep)
            out.append((sample.read_image(), Detections(polys, np.ones(len(polys)))))
    return out


def recognition_cost(dataset, recognizer, engine, rounds: int) -> dict:
    from rapidocr.utils.process_img import get_rotate_crop_image

    from pipeline.reading.crops import reading_quads

    words = _gt_words(dataset)
    count = sum(len(d) for _, d in words)
    crops = [[get_rotate_crop_image(image, q) for q in reading_quads(d.polygons)]
             for image, d in words]

    def dbrt_read():
        for image, dets in words:
            recognizer.read(image, dets)

    def rapid_read():  # RapidOCR's recognizer alone on its crops (cropping timed separately)
        for image_crops in crops:
            engine.text_rec(_rec_input(image_crops))

    def rapid_crop():
        for image, dets in words:
            [get_rotate_crop_image(image, q) for q in reading_quads(dets.polygons)]

    # taking turns round by round (each timed as a block before: a load change fell on one side)
    samples = common.time_in_turns({"dbrt (crop + infer + decode)": dbrt_read,
                                    "rapidocr (infer + decode)": rapid_read,
                                    "rapidocr (crop)": rapid_crop}, rounds)
    stats = {name: common.Stats.from_seconds(times) for name, times in samples.items()}
    rows = [{"what": name, "instances": count, "median_ms_per_instance":
             round(s.median_ms / count, 3), "spread_pct": round(s.spread_pct, 1)}
            for name, s in stats.items()]
    return {"instances": count, "rows": rows}


def _val_e2e(folder, detector, engine) -> dict:
    """End to end on an ICDAR 2015 folder the detector was not trained on (both pipelines), or an
    empty table saying why."""
    if folder is None or not Path(folder).is_dir():
        why = "no --val folder given" if folder is None else f"{folder} is absent"
        print(f"reading_bench: {why}; skipping the validation end-to-end table")
        return {"name": "a validation split", "rows": [], "note": f"Not run: {why}."}
    dataset = open_dataset(folder)
    names = [s.name for s in dataset]
    result = end_to_end(dataset, detector, engine)
    result["name"] = f"{Path(folder).name} ({len(names)} images: {names[0]} .. {names[-1]})"
    result["note"] = ("The shipped detector was not trained on these images; its checkpoint and "
                      "thresholds were chosen on ICDAR 2015 training images 801..900, its "
                      "validation split. PaddleOCR's models "
                      "may have seen ICDAR 2015 training images. '###' regions ignored; RapidOCR "
                      "at its defaults outputs text lines, the ground truth boxes words.")
    return result


def _rec_input(crops):
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    return TextRecInput(img=crops)


def main(argv=None) -> int:
    parser = common.argument_parser("benchmarks.reading_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=at_least(1), default=3)
    parser.add_argument("--val", type=Path, help="an ICDAR 2015 folder with transcriptions "
                        "(e.g. training images 801..900) for a second end-to-end table")
    args = parser.parse_args(argv)
    if args.val is not None and not args.val.is_dir():  # found only after the realdev run, which
        parser.error(f"--val {args.val}: not a folder")  # then wrote results without the table
    realdev = common.SHARED_DATA / "realdev"
    if optional("rapidocr") is None:
        print("reading_bench: skipped: needs rapidocr (pip install 'dbrt[bench]'); nothing written")
        return common.SKIPPED
    if not realdev.is_dir():
        print(f"reading_bench: skipped: shared data not found at {realdev}; nothing written")
        return common.SKIPPED
    from pipeline.detector import Detector
    from pipeline.shipped import default_model_path

    dataset = open_dataset(realdev)
    engine = _rapidocr_engine()
    with Detector(read=True, device="cpu") as detector:
        e2e = end_to_end(dataset, detector, engine)
        val = _val_e2e(args.val, detector, engine)
        cost = recognition_cost(dataset, detector.recognizer, engine, args.rounds)
        described = detector.describe()
    described["reader"]["model"] = Path(described["reader"]["model"]).name  # no local paths
    model = default_model_path()
    info = common.machine_info()
    payload = {"e2e_realdev": e2e, "e2e_val": val, "recognition_cost": cost,
               "detector_model": {"file": model.name, "sha256": common.file_sha256(model)},
               "detector": described, "machine": info}
    out = common.results_dir()
    common.write_json(out / "reading.json", payload)
    common.write_markdown(out / "reading.md", "Reading text: dbrt vs RapidOCR (same PP-OCRv6 rec)", [
        ("End to end on realdev (ICDAR 2015 end-to-end protocol, same scorer)",
         common.markdown_table(e2e["rows"]) + "\nRapidOCR at its defaults outputs text lines "
         "(its det merges the words of a line), the ground truth is one box per word. dbrt's "
         f"detector: `{model.name}` sha256 `{payload['detector_model']['sha256']}`.\n"),
        (f"End to end on {val['name']} (not trained on; same protocol and scorer)",
         common.markdown_table(val["rows"]) + "\n" + val["note"] + "\n"),
        ("Recognition cost per text instance (CPU, realdev's ground-truth words)",
         common.markdown_table(cost["rows"]) + "\nTimings here (and the per-image latency "
         "columns above) were taken at the load average in the footer, on 2 cores shared with "
         "other jobs: compare the rows of one run, not runs with each other. Throughput on video "
         "with reading on (the "
         "pipeline against the calls alone and against RapidOCR): "
         "[reading_throughput.md](reading_throughput.md).\n"),
    ], info)
    for row in e2e["rows"] + val["rows"] + cost["rows"]:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
