"""DB post-processing micro-benchmark: ours vs the reference on identical probability maps, for
every setting (box type quad / poly x score mode fast / slow x 2x2 dilation off / on).

Implementations (each takes one (H, W) map and returns boxes in frame pixels):
- reference: tests/reference_db.py, PaddleOCR's DBPostProcess re-implemented contour by contour
  (shapely for the unclip distance, as PaddleOCR);
- rapidocr:  RapidOCR's own copy of DBPostProcess (peer, quad settings; `pip install rapidocr`);
- cpu:       pipeline.postprocess, NumPy / OpenCV path (DBPostprocessor(device="cpu"));
- twin:      the GPU path's array code run with NumPy (with --twin; checks it on real maps);
- gpu:       the CuPy path on maps already on the GPU, copies included (GPU only).

Maps: dense synthetic DB-like maps (736x1280 ~ 1 MP and 1472x2560 ~ 4 MP, 10..1000 text bars)
and, when a trained model is available, real maps: the PP-OCR det model shipped with rapidocr
and pipeline/assets/dbnet_default.onnx run on ../shared/data realdev images and video frames.

Reported per setting (the summary: one row each) and per (setting, map set): time per frame,
boxes, whether every box is identical to the reference's (same count, every vertex equal, every
score equal in float32) and the speed-up over the reference. The summary's speed-up is the
reference's total time over ours on all maps of the setting (wall and process CPU time); its
`min_set_speedup_*` the worst single map set. Results: benchmarks/results/<machine>/postprocess.{json,md}.

    python -m benchmarks.postprocess_bench [--quick] [--repeats 5] [--no-real] [--settings quad/fast,...]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchmarks import common  # noqa: E402
from pipeline.commands._validate import at_least  # noqa: E402
from engine.lazy import cupy_or_none, optional  # noqa: E402
from pipeline.postprocess import DBPostprocessor, PostprocessConfig, gpu  # noqa: E402
from pipeline.postprocess.postprocessor import to_detections  # noqa: E402
from pipeline.preprocess import make_letterbox  # noqa: E402
from postprocess_maps import dense_map  # noqa: E402  (tests/)
from reference_db import ReferenceDB  # noqa: E402  (tests/)

CONFIG = PostprocessConfig(thresh=0.3, box_thresh=0.6, unclip_ratio=1.5)
SETTINGS = [CONFIG.replace(box_type=b, score_mode=s, use_dilation=d)
            for b, s, d in itertools.product(("quad", "poly"), ("fast", "slow"), (False, True))]
SIZES = {"1MP": (736, 1280), "4MP": (1472, 2560)}
COUNTS = (10, 100, 300, 1000)

Impl = Callable[[np.ndarray], tuple]


# -- implementations --------------------------------------------------------------------------
def setting_name(config: PostprocessConfig) -> str:
    return f"{config.box_type}/{config.score_mode}" + (" +dilation" if config.use_dilation else "")


def reference_impl(config: PostprocessConfig) -> Impl:
    ref = ReferenceDB(**{k: v for k, v in config.to_dict().items()})
    return lambda prob: ref(prob)


def rapidocr_impl(config: PostprocessConfig) -> Optional[Impl]:
    """RapidOCR's DBPostProcess (quad only); None when absent or for polygon settings."""
    if config.box_type != "quad" or optional("rapidocr.ch_ppocr_det.utils") is None:
        return None
    import cv2
    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    peer = DBPostProcess(thresh=config.thresh, box_thresh=config.box_thresh,
                         max_candidates=config.max_candidates, unclip_ratio=config.unclip_ratio,
                         score_mode=config.score_mode, use_dilation=config.use_dilation)

    def run(prob):  # its __call__ minus the extra clockwise re-ordering / 3-px filter
        h, w = prob.shape
        bitmap = prob > config.thresh
        if config.use_dilation:
            bitmap = cv2.dilate(bitmap.astype(np.uint8), np.ones((2, 2), np.uint8))
        boxes, scores = peer.boxes_from_bitmap(prob, bitmap, w, h)
        return [b.astype(np.float32) for b in boxes], scores
    return run


def ours_impl(config: PostprocessConfig, device: str) -> Impl:
    post = DBPostprocessor(config, device=device)

    def run(prob):
        h, w = prob.shape
        det = post(prob[None], [make_letterbox(h, w, h, w)])[0]
        return list(det.polygons), list(det.scores)
    return run


def twin_impl(config: PostprocessConfig) -> Impl:
    def run(prob):
        (polys, scores), = gpu.postprocess_batch(prob[None], [prob.shape], config)
        det = to_detections(polys, scores, make_letterbox(*prob.shape, *prob.shape))
        return list(det.polygons), list(det.scores)
    return run


def implementations(config: PostprocessConfig, twin: bool) -> Dict[str, Impl]:
    impls = {"reference": reference_impl(config)}
    peer = rapidocr_impl(config)
    if peer is not None:
        impls["rapidocr"] = peer
    impls["cpu"] = ours_impl(config, "cpu")
    if twin:
        impls["twin"] = twin_impl(config)
    return impls


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
    """Boxes of one implementation against the reference's, over all frames of a set.
    identical: every frame has the reference's boxes, every vertex equal, every score equal
    once both are float32 (the precision of Detections.scores)."""
    same_count, vertex, score = True, 0.0, 0.0
    for (rb, rs), (ob, os_) in zip(ref_out, out):
        if len(rb) != len(ob) or any(np.shape(a) != np.shape(b) for a, b in zip(rb, ob)):
            same_count = False
            continue
        for a, b in zip(rb, ob):
            vertex = max(vertex, float(np.abs(np.asarray(a, np.float64) - np.asarray(b)).max()))
        if len(rs):
            diff = np.abs(np.float32(rs).astype(np.float64) - np.float32(os_).astype(np.float64))
            score = max(score, float(diff.max()))
    return dict(identical=bool(same_count and vertex == 0 and score == 0), same_count=same_count,
                max_vertex_diff_px=round(vertex, 4), max_score_diff=float(f"{score:.3g}"))


def _interleaved_times(impls: Dict[str, Impl], maps: list, repeats: int,
                       sync: Optional[Callable[[], None]] = None) -> Dict[str, list]:
    """Per implementation, one (wall, process CPU) time per (repeat, map); the implementations
    take turns on each map, so a load change on a shared machine hits all of them alike."""
    times = {label: [] for label in impls}
    for _ in range(repeats):
        for prob in maps:
            for label, impl in impls.items():
                wall, cpu = time.perf_counter(), time.process_time()
                impl(prob)
                if sync:
                    sync()
                times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def run_set(setting: str, name: str, maps: List[np.ndarray], impls: Dict[str, Impl], repeats: int,
            gpu_impl: Optional[tuple] = None) -> List[dict]:
    outputs = {label: [impl(m) for m in maps] for label, impl in impls.items()}  # + warm-up
    times = _interleaved_times(impls, maps, repeats)
    if gpu_impl is not None:
        label, impl, to_device, sync = gpu_impl
        device_maps = [to_device(m) for m in maps]
        outputs[label] = [impl(m) for m in device_maps]
        times[label] = _interleaved_times({label: impl}, device_maps, 4 * repeats, sync)[label]
    ref = _per_frame(times["reference"], len(maps))
    return [_row(setting, name, label, maps, _per_frame(times[label], len(maps)), outputs[label],
                 outputs["reference"], ref) for label in outputs]


def _per_frame(samples: list, frames: int) -> dict:
    """Per frame: the median and best wall time and the best process CPU time (per map the
    median / minimum over the repeats, averaged over the maps). The best wall time is what an
    unloaded core does; the CPU time leaves out the time other processes held the core (it
    counts every thread, e.g. OpenCV's parallel dilation, alike for all implementations)."""
    per_map = np.asarray(samples).reshape(-1, frames, 2) * 1e3
    return dict(median=float(np.median(per_map[..., 0], axis=0).mean()),
                best=float(per_map[..., 0].min(axis=0).mean()),
                cpu=float(per_map[..., 1].min(axis=0).mean()))


def _row(setting, name, label, maps, ms, outputs, ref_out, ref_ms) -> dict:
    row = dict(setting=setting, maps=name, impl=label, frames=len(maps),
               ms_per_frame=round(ms["median"], 3), best_ms_per_frame=round(ms["best"], 3),
               cpu_ms_per_frame=round(ms["cpu"], 3), boxes=int(sum(len(o[0]) for o in outputs)))
    row.update(compare(ref_out, outputs))
    row["speedup_best"] = round(ref_ms["best"] / ms["best"], 2)
    row["speedup_median"] = round(ref_ms["median"] / ms["median"], 2)
    row["speedup_cpu"] = round(ref_ms["cpu"] / max(ms["cpu"], 1e-6), 2)
    return row


def summary(rows: List[dict], impl: str = "cpu") -> List[dict]:
    """One row per setting: total time over all its maps (per frame times the frames) for the
    reference and `impl`, the ratios, the worst map set, identical everywhere."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting and r["impl"] == impl]
        ref = [r for r in rows if r["setting"] == setting and r["impl"] == "reference"]
        if not mine:
            continue
        total = {key: (sum(r[key] * r["frames"] for r in ref), sum(r[key] * r["frames"] for r in mine))
                 for key in ("best_ms_per_frame", "ms_per_frame", "cpu_ms_per_frame")}
        ratio = {key: round(a / max(b, 1e-6), 2) for key, (a, b) in total.items()}
        out.append(dict(setting=setting, impl=impl, map_sets=len(mine),
                        frames=sum(r["frames"] for r in mine), boxes=sum(r["boxes"] for r in mine),
                        reference_ms=round(total["best_ms_per_frame"][0], 1),
                        ours_ms=round(total["best_ms_per_frame"][1], 1),
                        speedup_best=ratio["best_ms_per_frame"], speedup_median=ratio["ms_per_frame"],
                        speedup_cpu=ratio["cpu_ms_per_frame"],
                        min_set_speedup_best=min(r["speedup_best"] for r in mine),
                        min_set_speedup_cpu=min(r["speedup_cpu"] for r in mine),
                        speedup_cpu_vs_rapidocr=_ratio(rows, setting, "rapidocr", impl),
                        identical=all(r["identical"] for r in mine)))
    return out


def _ratio(rows: List[dict], setting: str, slow: str, fast: str) -> Optional[float]:
    """Total CPU time of `slow` over `fast` on the setting's maps (None without `slow` rows)."""
    total = {label: sum(r["cpu_ms_per_frame"] * r["frames"] for r in rows
                        if r["setting"] == setting and r["impl"] == label) for label in (slow, fast)}
    return round(total[slow] / total[fast], 2) if total[slow] and total[fast] else None


def gpu_impl_or_none(config: PostprocessConfig):
    cp = cupy_or_none()
    if cp is None:
        return None
    post = DBPostprocessor(config)

    def run(prob):
        h, w = prob.shape
        det = post(prob[None], [make_letterbox(h, w, h, w)])[0]
        return list(det.polygons), list(det.scores)
    return ("gpu (cupy)", run, cp.asarray, cp.cuda.get_current_stream().synchronize)


# -- main -------------------------------------------------------------------------------------
def chosen_settings(names: str) -> List[PostprocessConfig]:
    """--settings: a comma-separated subset of SETTINGS by name."""
    wanted = [n.strip() for n in names.split(",")]
    unknown = [n for n in wanted if n not in {setting_name(c) for c in SETTINGS}]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from "
                                         f"{[setting_name(c) for c in SETTINGS]}")
    return [c for c in SETTINGS if setting_name(c) in wanted]


def main(argv=None) -> int:
    parser = common.argument_parser("benchmarks.postprocess_bench",
                                    description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller map sets")
    parser.add_argument("--repeats", type=at_least(1), default=5, help="timed runs per map")
    parser.add_argument("--no-real", action="store_true", help="skip the model-generated maps")
    parser.add_argument("--twin", action="store_true",
                        help="also time the GPU path's array code run with NumPy (slow on a CPU)")
    parser.add_argument("--settings", type=chosen_settings, default=SETTINGS,
                        help="comma-separated subset, e.g. 'quad/fast,poly/slow +dilation'")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    settings = args.settings

    sets = synthetic_sets(args.quick)
    if not args.no_real:
        sets.update(real_sets(args.quick))
    rows, load_before = [], os.getloadavg()
    for config in settings:
        setting = setting_name(config)
        impls = implementations(config, args.twin)
        gpu_impl = gpu_impl_or_none(config)
        for name, maps in sets.items():
            print(f"[postprocess] {setting}: {name}", flush=True)
            new = run_set(setting, name, maps, impls, args.repeats, gpu_impl)
            rows.extend(new)
            for row in new:
                print(f"  {row['impl']:>10}: {row['best_ms_per_frame']:8.3f} ms/frame best, "
                      f"{row['ms_per_frame']:8.3f} median, {row['cpu_ms_per_frame']:8.3f} CPU  "
                      f"{row['boxes']:5d} boxes  identical={row['identical']} "
                      f"x{row['speedup_best']} best x{row['speedup_cpu']} CPU", flush=True)
    totals = summary(rows) + (summary(rows, "gpu (cupy)") if gpu_impl_or_none(CONFIG) else [])
    for row in totals:
        print(f"{row['setting']:>20} {row['impl']}: x{row['speedup_best']} best, "
              f"x{row['speedup_median']} median, x{row['speedup_cpu']} CPU; worst set "
              f"x{row['min_set_speedup_best']} best, x{row['min_set_speedup_cpu']} CPU; "
              f"vs RapidOCR x{row['speedup_cpu_vs_rapidocr']} CPU; identical={row['identical']}")
    write(rows, totals, args, dict(before=load_before, after=os.getloadavg()))
    return 0


def write(rows: List[dict], totals: List[dict], args, load: dict) -> None:
    info = common.machine_info()
    info["load_average_1_5_15min"] = {k: [round(v, 2) for v in vals] for k, vals in load.items()}
    out = common.results_dir()
    config = CONFIG.to_dict()
    command = common.command_line("benchmarks.postprocess_bench", args.argv)
    common.write_json(out / "postprocess.json", dict(config=config, summary=totals, rows=rows,
                                                     machine=info, command=command))
    note = ("Settings: box type x score mode x 2x2 dilation; the other options are "
            f"{ {k: v for k, v in config.items() if k not in ('box_type', 'score_mode', 'use_dilation')} }. "
            "Time per frame: per map the best (minimum) and the median over the repeats, "
            "averaged over the maps of a set; the implementations take turns map by map. On a "
            "shared machine the best time is the meaningful one (what an unloaded core does). "
            "The process CPU time (`cpu_ms_per_frame`, best over the repeats) leaves out the time "
            "other processes held the core. Summary: `reference_ms` / `ours_ms` = total best wall "
            "time over all the setting's frames, `speedup_best` their ratio (`speedup_median` with "
            "medians, `speedup_cpu` with CPU times), `min_set_speedup_*` the worst single map set, "
            "`speedup_cpu_vs_rapidocr` the CPU-time ratio against RapidOCR's shipped copy of "
            "DBPostProcess (quad settings; it allocates more than the reference re-implementation). "
            "`identical`: every frame has the "
            "reference's boxes, every vertex equal and every score equal in float32; "
            "`max_vertex_diff_px` / `max_score_diff`: the largest differences (map pixels). GPU "
            "times include the device-to-host copies; the map is already on the GPU.\n\n"
            f"Command: `{command}`. Load average (1, 5, 15 min) before / after the run: "
            f"{info['load_average_1_5_15min']['before']} / {info['load_average_1_5_15min']['after']} "
            f"on {info['cpu_count']} cores.\n")
    common.write_markdown(out / "postprocess.md", "DB post-processing vs the reference",
                          [("Method", note), ("Summary: one row per setting", common.markdown_table(totals)),
                           ("Every map set", common.markdown_table(rows))], info)
    print(f"wrote {out / 'postprocess.md'}")


if __name__ == "__main__":
    sys.exit(main())
