"""Reading text, side by side with RapidOCR (same PP-OCRv6 rec model, from the rapidocr wheel):

- end to end on ../shared/data/realdev (ICDAR 2015 end-to-end protocol, pipeline.e2e: IoU > 0.5
  and transcriptions equal after strip + casefold, '###' ignored): dbrt (shipped detector +
  `--read`) against RapidOCR's full pipeline at its defaults (PP-OCRv6 det small, the direction
  classifier, PP-OCRv6 rec small), both scored by the same code; median per-image latency;
- the threaded pipeline with reading and tracking on against the detector + recognizer calls
  alone on the same demo-video frames;
- recognition cost per text instance on the CPU: the ground-truth polygons of realdev (every
  one not marked '###') read by dbrt's Recognizer (crop + batch + infer + decode) and by
  RapidOCR's recognizer on its own crops (get_rotate_crop_image, its batches of 6).

    python -m benchmarks.reading_bench [--rounds 3]

Without rapidocr or the shared data it says so and exits 0 without writing results.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
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
    for sample in dataset:
        image = sample.read_image()
        for name, detect in sides.items():  # alternating, so load changes hit both alike
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

    stats = {"dbrt (crop + infer + decode)": common.measure(dbrt_read, warmup=1, repeats=rounds),
             "rapidocr (infer + decode)": common.measure(rapid_read, warmup=1, repeats=rounds),
             "rapidocr (crop)": common.measure(rapid_crop, warmup=1, repeats=rounds)}
    rows = [{"what": name, "instances": count, "median_ms_per_instance":
             round(s.median_ms / count, 3), "spread_pct": round(s.spread_pct, 1)}
            for name, s in stats.items()]
    return {"instances": count, "rows": rows}


def pipeline_overlap(video: Path, frames: int) -> dict:
    """The threaded pipeline with reading on against the detector and recognizer calls alone on
    the same frames (decoded beforehand): how much of crops, decoding, tracking and sinks the
    stages hide behind inference."""
    import itertools

    from pipeline.detector import Detector
    from pipeline.runner import Pipeline
    from pipeline.sources import open_sources

    with open_sources([str(video)])[0] as source:
        images = [f.image for f in itertools.islice(iter(source), frames)]
    with Detector(read=True, device="cpu") as detector:
        for image in images[:3]:  # warm-up
            detector.detect(image)
        t0 = time.perf_counter()
        texts = sum(len(detector.detect(image)) for image in images)
        alone = time.perf_counter() - t0
    pipe = Pipeline([str(video)], Detector(read=True, device="cpu"), close_detector=True,
                    max_frames=frames, track=True)
    report = pipe.run()
    fps_alone = len(images) / alone
    return {"rows": [{"video": video.name, "frames": len(images), "texts": texts,
                      "calls_alone_fps": round(fps_alone, 2),
                      "pipeline_read_track_fps": round(report["fps"], 2),
                      "ratio": round(report["fps"] / fps_alone, 3)}]}


def _rec_input(crops):
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    return TextRecInput(img=crops)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=60, help="demo video frames for the overlap row")
    args = parser.parse_args(argv)
    realdev = common.SHARED_DATA / "realdev"
    if optional("rapidocr") is None or not realdev.is_dir():
        print("reading_bench: needs rapidocr (pip install 'dbrt[bench]') and ../shared/data/realdev; "
              "nothing written")
        return 0
    from pipeline.detector import Detector

    dataset = open_dataset(realdev)
    engine = _rapidocr_engine()
    with Detector(read=True, device="cpu") as detector:
        e2e = end_to_end(dataset, detector, engine)
        cost = recognition_cost(dataset, detector.recognizer, engine, args.rounds)
        described = detector.describe()
    from pipeline.shipped import DEMO_VIDEO

    overlap = pipeline_overlap(DEMO_VIDEO, args.frames)
    info = common.machine_info()
    payload = {"e2e_realdev": e2e, "recognition_cost": cost, "overlap": overlap,
               "detector": described, "machine": info}
    out = common.results_dir()
    common.write_json(out / "reading.json", payload)
    common.write_markdown(out / "reading.md", "Reading text: dbrt vs RapidOCR (same PP-OCRv6 rec)", [
        ("End to end on realdev (ICDAR 2015 end-to-end protocol, same scorer)",
         common.markdown_table(e2e["rows"]) + "\nRapidOCR at its defaults outputs text lines "
         "(its det merges the words of a line), the ground truth is one box per word.\n"),
        ("Recognition cost per text instance (CPU, realdev's ground-truth words)",
         common.markdown_table(cost["rows"])),
        ("Pipeline with --read --track vs the detector + recognizer calls alone (demo video)",
         common.markdown_table(overlap["rows"]) + "\nCalls alone: `Detector(read=True).detect` "
         "frame after frame on frames decoded beforehand; pipeline: decoding, the threaded "
         "stages and tracking included. The two runs are sequential, not interleaved: on a loaded "
         "shared machine the load moves between them, so treat this row as indicative only.\n"),
    ], info)
    for row in e2e["rows"] + cost["rows"] + overlap["rows"]:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
