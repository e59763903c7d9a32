"""DB post-processing micro-benchmark: ours vs the reference on identical probability maps.

Implementations (each takes one (H, W) map and returns boxes in map pixels):
- reference: tests/reference_db.py, PaddleOCR's DBPostProcess re-implemented contour by contour;
- rapidocr:  RapidOCR's own copy of DBPostProcess (peer; `pip install rapidocr`, optional);
- cpu:       pipeline.postprocess, NumPy / OpenCV path (DBPostprocessor(device="cpu"));
- twin:      the GPU path's array code run with NumPy (with --twin; checks it on real maps);
- gpu:       the CuPy path on maps already on the GPU, compact copies included (GPU only).

Maps: dense synthetic DB-like maps (736x1280 ~ 1 MP and 1472x2560 ~ 4 MP, 10..1000 text bars)
and, when a trained model is available, real maps: the PP-OCR det model shipped with rapidocr
and pipeline/assets/dbnet_default.onnx run on ../shared/data realdev images.

Reported per map set and implementation: median time per frame, boxes, whether the boxes are
identical to the reference's (count, max vertex difference in px, max score difference) and the
speed-up over the reference. Results: benchmarks/results/<machine>/postprocess.{json,md}.

    python -m benchmarks.postprocess_bench [--quick] [--repeats 5] [--no-real]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchmarks import common  # noqa: E402
from engine.lazy import cupy_or_none, optional  # noqa: E402
from pipeline.postprocess import DBPostprocessor, PostprocessConfig, gpu  # noqa: E402
from pipeline.postprocess.postprocessor import to_detections  # noqa: E402
from pipeline.preprocess import make_letterbox  # noqa: E402
from postprocess_maps import dense_map  # noqa: E402  (tests/)
from reference_db import ReferenceDB  # noqa: E402  (tests/)

CONFIG = PostprocessConfig(thresh=0.3, box_thresh=0.6, unclip_ratio=1.5)
SIZES = {"1MP": (736, 1280), "4MP": (1472, 2560)}
COUNTS = (10, 100, 300, 1000)

Impl = Callable[[np.ndarray], tuple]


# -- implementations --------------------------------------------------------------------------
def reference_impl() -> Impl:
    ref = ReferenceDB(thresh=CONFIG.thresh, box_thresh=CONFIG.box_thresh,
                      max_candidates=CONFIG.max_candidates, unclip_ratio=CONFIG.unclip_ratio)
    return lambda prob: ref(prob)


def rapidocr_impl() -> Optional[Impl]:
    if optional("rapidocr.ch_ppocr_det.utils") is None:
        return None
    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    peer = DBPostProcess(thresh=CONFIG.thresh, box_thresh=CONFIG.box_thresh,
                         max_candidates=CONFIG.max_candidates, unclip_ratio=CONFIG.unclip_ratio)

    def run(prob):  # its __call__ minus the extra clockwise re-ordering / 3-px filter
        h, w = prob.shape
        boxes, scores = peer.boxes_from_bitmap(prob, prob > CONFIG.thresh, w, h)
        return [b.astype(np.float32) for b in boxes], scores
    return run


def ours_impl(device: str) -> Impl:
    post = DBPostprocessor(CONFIG, device=device)

    def run(prob):
        h, w = prob.shape
        det = post(prob[None], [make_letterbox(h, w, h, w)])[0]
        return list(det.polygons), list(det.scores)
    return run


def twin_impl() -> Impl:
    def run(prob):
        (polys, scores), = gpu.postprocess_batch(prob[None], [prob.shape], CONFIG)
        det = to_detections(polys, scores, make_letterbox(*prob.shape, *prob.shape))
        return list(det.polygons), list(det.scores)
    return run


# -- maps ---------------------------------------------------------------------------------------
def synthetic_sets(quick: bool) -> Dict[str, List[np.ndarray]]:
    rng = np.random.default_rng(0)
    frames = 2 if quick else 3
    sizes = {"1MP": SIZES["1MP"]} if quick else SIZES
    counts = (10, 300) if quick else COUNTS
    return {f"synthetic {name} x{n}": [dense_map(rng, h, w, n) for _ in range(frames)]
            for name, (h, w) in sizes.items() for n in counts}


def _model_maps(model: Path, preset: Optional[str], images: List[np.ndarray]) -> List[np.ndarray]:
    from pipeline.detector import Detector

    detector = Detector(str(model), backend="onnxruntime", device="cpu", preset=preset)
    try:
        maps = []
        for image in images:
            batch, _ = detector.prepare([image])
            prob = np.asarray(detector.infer(batch))  # (1, 1, H, W) or (1, H, W)
            maps.append(np.ascontiguousarray(prob.reshape(prob.shape[-2:]), np.float32))
        return maps
    finally:
        detector.close()


def _video_frames(path: Path, count: int) -> List[np.ndarray]:
    """`count` frames spread over a video (OpenCV's decoder; empty when it cannot be read)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for index in np.linspace(0, max(total - 1, 0), count).astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if ok:
            frames.append(frame)
    capture.release()
    return frames


def real_images(quick: bool, log=print) -> Dict[str, List[np.ndarray]]:
    """realdev photographs and frames of the two shared videos (absent ones are skipped)."""
    import cv2

    sources = {}
    realdev = common.SHARED_DATA / "realdev" / "images"
    if realdev.is_dir():
        paths = sorted(p for p in realdev.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        sources["realdev images"] = [cv2.imread(str(p)) for p in paths[: 4 if quick else None]]
    else:
        log(f"no realdev maps: {realdev} is absent")
    for video in sorted((common.SHARED_DATA / "video").glob("*.mp4")):
        frames = _video_frames(video, 3 if quick else 8)
        if frames:
            sources[f"{video.stem} frames"] = frames
    return sources


def real_sets(quick: bool, log=print) -> Dict[str, List[np.ndarray]]:
    """Maps of trained models on real images and video frames (skipped when absent)."""
    sources = real_images(quick, log)
    if not sources:
        return {}
    models = []
    rapidocr = optional("rapidocr")
    if rapidocr is not None:
        models.append(("PP-OCRv6 det", Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_det_small.onnx",
                       "ppocr"))
    models.append(("dbrt default", REPO / "pipeline" / "assets" / "dbnet_default.onnx", None))
    sets = {}
    for name, path, preset in models:
        if not path.is_file():
            log(f"no real maps from {name}: {path} is absent")
            continue
        for source, images in sources.items():
            maps = _model_maps(path, preset, images)
            sizes = sorted({f"{m.shape[0]}x{m.shape[1]}" for m in maps})
            sets[f"real: {name} on {len(maps)} {source} (maps {', '.join(sizes)})"] = maps
    return sets


# -- comparison ---------------------------------------------------------------------------------
def compare(ref_out: list, out: list) -> dict:
    """Boxes of one implementation against the reference's, over all frames of a set."""
    same_count, vertex, score = True, 0.0, 0.0
    for (rb, rs), (ob, os_) in zip(ref_out, out):
        if len(rb) != len(ob) or any(np.shape(a) != np.shape(b) for a, b in zip(rb, ob)):
            same_count = False
            continue
        for a, b in zip(rb, ob):
            vertex = max(vertex, float(np.abs(np.asarray(a, np.float64) - np.asarray(b)).max()))
        if len(rs):
            score = max(score, float(np.abs(np.asarray(rs, np.float64) - np.asarray(os_)).max()))
    return dict(same_count=same_count, max_vertex_diff_px=round(vertex, 4),
                max_score_diff=float(f"{score:.3g}"))


def _interleaved_times(impls: Dict[str, Impl], maps: list, repeats: int,
                       sync: Optional[Callable[[], None]] = None) -> Dict[str, list]:
    """Per implementation, one time per (repeat, map); the implementations take turns on each
    map, so a load change on a shared machine hits all of them alike."""
    times = {label: [] for label in impls}
    for _ in range(repeats):
        for prob in maps:
            for label, impl in impls.items():
                start = time.perf_counter()
                impl(prob)
                if sync:
                    sync()
                times[label].append(time.perf_counter() - start)
    return times


def run_set(name: str, maps: List[np.ndarray], impls: Dict[str, Impl], repeats: int,
            gpu_impl: Optional[tuple] = None) -> List[dict]:
    outputs = {label: [impl(m) for m in maps] for label, impl in impls.items()}  # + warm-up
    times = _interleaved_times(impls, maps, repeats)
    if gpu_impl is not None:
        label, impl, to_device, sync = gpu_impl
        device_maps = [to_device(m) for m in maps]
        outputs[label] = [impl(m) for m in device_maps]
        times[label] = _interleaved_times({label: impl}, device_maps, 4 * repeats, sync)[label]
    ref = _per_frame(times["reference"], len(maps))
    return [_row(name, label, maps, _per_frame(times[label], len(maps)), outputs[label],
                 outputs["reference"], ref) for label in outputs]


def _per_frame(samples: list, frames: int) -> dict:
    """Median and best time per frame: per map the median / minimum over the repeats, summed
    over the maps, divided by their number. The best time is what an unloaded core does; on a
    shared machine the median carries other processes' load."""
    per_map = np.asarray(samples).reshape(-1, frames) * 1e3
    return dict(median=float(np.median(per_map, axis=0).mean()), best=float(per_map.min(axis=0).mean()))


def _row(name, label, maps, ms, outputs, ref_out, ref_ms) -> dict:
    row = dict(maps=name, impl=label, frames=len(maps), ms_per_frame=round(ms["median"], 3),
               best_ms_per_frame=round(ms["best"], 3), boxes=int(sum(len(o[0]) for o in outputs)))
    row.update(compare(ref_out, outputs))
    row["speedup_best"] = round(ref_ms["best"] / ms["best"], 2)
    row["speedup_median"] = round(ref_ms["median"] / ms["median"], 2)
    return row


def gpu_impl_or_none():
    cp = cupy_or_none()
    if cp is None:
        return None
    post = DBPostprocessor(CONFIG)

    def run(prob):
        h, w = prob.shape
        det = post(prob[None], [make_letterbox(h, w, h, w)])[0]
        return list(det.polygons), list(det.scores)
    return ("gpu (cupy)", run, cp.asarray, cp.cuda.get_current_stream().synchronize)


# -- main -------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller map sets")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per map")
    parser.add_argument("--no-real", action="store_true", help="skip the model-generated maps")
    parser.add_argument("--twin", action="store_true",
                        help="also time the GPU path's array code run with NumPy (slow on a CPU)")
    args = parser.parse_args(argv)

    impls = {"reference": reference_impl()}
    peer = rapidocr_impl()
    if peer is not None:
        impls["rapidocr"] = peer
    impls["cpu"] = ours_impl("cpu")
    if args.twin:
        impls["twin"] = twin_impl()
    gpu_impl = gpu_impl_or_none()

    sets = synthetic_sets(args.quick)
    if not args.no_real:
        sets.update(real_sets(args.quick))
    rows, load_before = [], os.getloadavg()
    for name, maps in sets.items():
        print(f"[postprocess] {name}", flush=True)
        rows.extend(run_set(name, maps, impls, args.repeats, gpu_impl))
        for row in rows[-len(impls) - (gpu_impl is not None):]:
            print(f"  {row['impl']:>10}: {row['best_ms_per_frame']:8.3f} ms/frame best, "
                  f"{row['ms_per_frame']:8.3f} median  {row['boxes']:5d} boxes  "
                  f"same={row['same_count']} dv={row['max_vertex_diff_px']} "
                  f"ds={row['max_score_diff']} x{row['speedup_best']}", flush=True)
    write(rows, args, dict(before=load_before, after=os.getloadavg()))
    return 0


def write(rows: List[dict], args, load: dict) -> None:
    info = common.machine_info()
    info["load_average_1_5_15min"] = {k: [round(v, 2) for v in vals] for k, vals in load.items()}
    out = common.results_dir()
    config = CONFIG.to_dict()
    common.write_json(out / "postprocess.json", dict(config=config, rows=rows, machine=info,
                                                     command="python -m benchmarks.postprocess_bench"
                                                     + (" --quick" if args.quick else "")))
    note = ("Time per frame: per map the best (minimum) and the median over the repeats, "
            "averaged over the maps of a set; the implementations take turns map by map. On a "
            "shared machine the best time is the meaningful one (what an unloaded core does); "
            "`speedup_best` = reference best / implementation best. `same_count`: every frame has "
            "the reference's number of boxes; `max_vertex_diff_px` / `max_score_diff`: the largest "
            "difference to the reference's boxes (in map pixels) and scores. GPU times include "
            "the compact device-to-host copies; the map is already on the GPU.\n\n"
            f"Options: {config}.\n\nLoad average (1, 5, 15 min) before / after the run: "
            f"{info['load_average_1_5_15min']['before']} / {info['load_average_1_5_15min']['after']} "
            f"on {info['cpu_count']} cores.\n")
    common.write_markdown(out / "postprocess.md", "DB post-processing vs the reference",
                          [("Method", note), ("Results", common.markdown_table(rows))], info)
    print(f"wrote {out / 'postprocess.md'}")


if __name__ == "__main__":
    sys.exit(main())
