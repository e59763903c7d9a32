"""`dbrt eval`: precision / recall / hmean of a model on a dataset (ICDAR 2015 protocol)."""
from __future__ import annotations

from ._model import (ENDS_THE_COMMAND, REC_MARGIN_HELP, THREADS_HELP, TRUST_ENGINE_HELP,
                     add_direction_arguments, add_reconnect_arguments, add_triton_arguments,
                     check_model_reconnect, check_trust_engine_code, direction_asked)
from ._validate import (DEVICES, MAX_CPU_THREADS, at_least, between, number_list, output_file, output_folder,
                        side_length, zero_to_one)

NAME = "eval"
HELP = "score a model on an ICDAR2015 / Total-Text / gt.json dataset (precision, recall, hmean)"
ORDER = 30
DESCRIPTION = """Run the detector on every image of a dataset and score it with the ICDAR 2015
protocol as MhLiao/DB applies it to polygons: one-to-one matching at IoU > 0.5, detections lying
mostly (> 0.5 of their area) inside a "do not care" region ('###') ignored. DATASET is a gt.json
(or a folder holding one, like ../shared/data/realdev), an ICDAR 2015 folder (img_N.jpg +
gt_img_N.txt) or a Total-Text folder. Prints per-image and overall numbers, recall per word
height and the misses / false alarms by kind (a word inside a box spanning its neighbours, split,
partly boxed, not found; a box over several words, on a word, on do-not-care text, on background);
--json writes them, with each image's detections (as dbrt run writes them) that its indices
point at; --vis draws misses (red) and false alarms (orange), tagged with their kinds, for every
image that has any."""


def add_arguments(parser) -> None:
    parser.add_argument("--model", help="ONNX model, TensorRT engine or triton://HOST[:PORT]/NAME "
                                        "(default: the shipped model)")
    parser.add_argument("--dataset", required=True, help="gt.json, or an ICDAR2015 / Total-Text folder")
    parser.add_argument("--gt", help="folder of ground-truth files, when not found next to the images")
    parser.add_argument("--format", default="auto", choices=("auto", "json", "icdar2015", "totaltext"),
                        help="the ground-truth files of a folder (a gt.json is always json)")
    parser.add_argument("--preset", help="ModelSpec preset for models without dbrt metadata (db, ppocr, mmocr)")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"))
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where the model runs")
    parser.add_argument("--threads", type=at_least(0, at_most=MAX_CPU_THREADS), default=0,
                        help=THREADS_HELP)
    parser.add_argument("--trust-engine-code", action="store_true", help=TRUST_ENGINE_HELP)
    triton = add_triton_arguments(parser, ENDS_THE_COMMAND)
    add_reconnect_arguments(triton, "a triton:// model whose server or model is not ready at the "
                                    "start (started together with it, still loading): connect "
                                    "attempts while it is waited for (-1: forever, 0: none: one "
                                    "error line at once)", defaults=False)
    model = parser.add_argument_group("pre- and post-processing (default: the model's own settings)")
    model.add_argument("--limit-side", type=side_length,
                       help="resize: short side (min) / long-side cap (max)")
    model.add_argument("--limit-type", choices=("min", "max", "min_at_least"))
    model.add_argument("--thresh", type=zero_to_one, help="binarisation threshold")
    model.add_argument("--box-thresh", type=zero_to_one, help="minimum mean score of a box")
    model.add_argument("--unclip-ratio", type=at_least(0.0, float))
    model.add_argument("--box-type", choices=("quad", "poly"), help="poly for curved text (Total-Text)")
    proto = parser.add_argument_group("protocol")
    fraction = between(0.0, 1.0, float, open_ends=True)
    proto.add_argument("--iou", type=fraction, default=0.5, help="a match needs IoU above this")
    proto.add_argument("--area-precision", type=fraction, default=0.5,
                       help="a detection this much inside a do-not-care region is ignored")
    parser.add_argument("--max-images", type=at_least(1), help="score only the first N images")
    parser.add_argument("--json", metavar="OUT", type=output_file,
                        help="write overall and per-image results here (not onto the dataset's own "
                             "files); '-': standard output, the text lines then going to standard error")
    parser.add_argument("--vis", metavar="DIR", type=output_folder,
                        help="write images with misses / false alarms drawn, each tagged with its kind, "
                             "under the image's own file name (not into the dataset's image folder)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the overall line (with --tune: the best setting's)")
    e2e = parser.add_argument_group("end to end (detection + recognition)")
    e2e.add_argument("--e2e", action="store_true",
                     help="read the texts too and score end to end (ICDAR 2015: a match also needs "
                          "the transcription, equal after stripping and case folding, the ground "
                          "truth allowed to drop one of !?.:,*\"()·[]/' at each end; '###' ignored)")
    e2e.add_argument("--rec-model", help="CTC recognizer .onnx (default: PP-OCRv6 rec from rapidocr)")
    e2e.add_argument("--rec-dict", help="its dictionary, one character per line")
    e2e.add_argument("--rec-margin", type=zero_to_one, metavar="FRACTION",
                     help=REC_MARGIN_HELP)
    add_direction_arguments(e2e)
    parser.add_argument("--tune", action="store_true",
                        help="grid-search thresh / box_thresh / unclip_ratio on this dataset (a "
                             "validation split, never the data you report) and print the best settings (of "
                             "equal scores, the nearest to the detector's own), with the misses "
                             "and false alarms by kind there")
    grid = parser.add_argument_group("tuning grid (each implies --tune; default: the grid --tune prints)")
    grid.add_argument("--tune-thresh", metavar="LIST", type=number_list(0.0, 1.0),
                      help="thresh values to try, e.g. 0.1,0.15,0.2")
    grid.add_argument("--tune-box-thresh", metavar="LIST", type=number_list(0.0, 1.0),
                      help="box_thresh values to try")
    grid.add_argument("--tune-unclip", metavar="LIST", type=number_list(0.1, 10.0),
                      help="unclip_ratio values to try")


def _tune(args, dataset) -> int:
    from dataclasses import replace

    from pipeline import tune
    from pipeline.postprocess import DBPostprocessor

    grid = {"thresh": args.tune_thresh or tune.THRESH, "box_thresh": args.tune_box_thresh or tune.BOX_THRESH,
            "unclip_ratio": args.tune_unclip or tune.UNCLIP_RATIO}
    say = (lambda line: None) if args.quiet else print  # --quiet: the best setting's line only
    say("grid: " + "; ".join(f"{k} {','.join(f'{v:g}' for v in values)}" for k, values in grid.items()))
    with _detector(args) as detector:
        maps = tune.probability_maps(detector, dataset)
        base = detector.post.config
        described = detector.describe()
    protocol = dict(iou=args.iou, area_precision=args.area_precision)
    rows = tune.tune_on_maps(maps, base, **grid, **protocol)
    for row in rows[:10]:
        say("thresh {thresh:g} box_thresh {box_thresh:g} unclip_ratio {unclip_ratio:g}: "
            "P {precision:.4f} R {recall:.4f} hmean {hmean:.4f}".format(**row))
    best = rows[0]
    print(f"best on {dataset.name} ({len(dataset)} images): --thresh {best['thresh']} "
          f"--box-thresh {best['box_thresh']} --unclip-ratio {best['unclip_ratio']} (hmean {best['hmean']:.4f})")
    edges = tune.grid_edges(best, **grid)
    if edges:
        say(f"on the grid's edge: {', '.join(edges)}; a better setting may lie outside it "
            "(widen it with --tune-thresh / --tune-box-thresh / --tune-unclip)")
    chosen = replace(base, thresh=best["thresh"], box_thresh=best["box_thresh"],
                     unclip_ratio=best["unclip_ratio"])
    at_best = tune.score(maps, DBPostprocessor(chosen, "cpu"), True, **protocol)
    say("at those settings: " + at_best.errors_summary())
    if args.json:  # scored as a plain --json says, each row at its own post-processing settings
        _write_json(args.json, {**_scoring(args, dataset, described), "images": len(dataset),
                                "best": {**best, "errors": at_best.error_counts()}, "grid_edges": edges,
                                "grid": rows})
    return 0


def _e2e(args, dataset) -> int:
    from engine.errors import DbrtError
    from pipeline.e2e import EDGE_SPECIALS, evaluate_e2e, untranscribed

    if not any(t and t not in ("###", "#") for s in dataset for t in s.gt.texts):
        raise DbrtError(f"--e2e needs transcriptions; the ground truth of {args.dataset} has none")
    lacking = [(s.name, untranscribed(s.gt), s.gt.care_count) for s in dataset if untranscribed(s.gt)]
    if lacking:
        name, words, cared = lacking[0]
        raise DbrtError(f"--e2e: {len(lacking)} image(s) of {args.dataset} have cared-for words "
                        f"without a transcription (e.g. {name}: {words} of {cared}), which no "
                        "reading can match: transcribe them, or mark them '###'")
    args.read = True
    timings: list = []

    def on_image(sample, image, dets, scored):
        timer.image_done()
        if not args.quiet:
            wrong = "; ".join(f"{g!r} read {r!r}" for g, r in scored.wrong)
            print(f"{sample.name}: {scored.correct}/{scored.detection.gt_care} read correctly"
                  + (f" ({wrong})" if wrong else ""), flush=True)
        timer.callback_done()

    with _detector(args) as detector:
        timer = _ImageTimer(detector.detect, timings)
        result = evaluate_e2e(timer.detect, dataset, on_image, iou=args.iou,
                              area_precision=args.area_precision)
        described = detector.describe()
    ms = 1e3 * sum(timings) / max(1, len(timings))
    print(f"{dataset.name} ({dataset.format}, {len(dataset)} images): {result.summary()}; "
          f"{ms:.1f} ms/image incl. decoding the image file and reading")
    if args.json:
        scoring = _scoring(args, dataset, described, name="icdar2015 end-to-end",
                           normalisation="strip + casefold", gt_may_drop_at_each_end=EDGE_SPECIALS)
        _write_json(args.json, {**scoring, "ms_per_image": round(ms, 2), **result.to_dict()},
                    ensure_ascii=False)
    return 0


def _scoring(args, dataset, described: dict, name: str = "icdar2015", **protocol) -> dict:
    """How a --json report was scored, the same in every mode: the data, the model used with
    its settings (Detector.describe), and the protocol."""
    return {"dataset": str(args.dataset), "format": dataset.format, "model": described["model"],
            "detector": described, "protocol": {"name": name, "iou": args.iou,
                                                "area_precision": args.area_precision, **protocol}}


def _write_json(path, payload, **dump) -> None:
    """The --json report, whole or not at all (a run killed while writing keeps the earlier
    one); a failed write names the file (a full disk's error does not). '-': standard output."""
    import json
    from pathlib import Path

    from dbnet.files import write_text_whole

    if hasattr(path, "write"):  # --json -: the standard output run() set aside
        path.write(json.dumps(payload, indent=1, **dump) + "\n")
        path.flush()
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_whole(path, json.dumps(payload, indent=1, **dump) + "\n")


def _detector(args):
    """The Detector of the flags; an untrained one said in every mode (--tune and --e2e
    scored one without a word), on stderr (--quiet's stdout is the overall line only)."""
    import sys

    from ._model import build_detector

    detector = build_detector(args)
    if detector.untrained:
        print("dbrt eval: note: the model's metadata says its weights are untrained", file=sys.stderr)
    return detector


def _image_callback(args, total: int, timings: list, detect):
    """Per-image progress line and visualisation, and `detect` timed (`_ImageTimer`). Returns
    (timed detect, callback)."""
    from pathlib import Path

    from pipeline.eval_errors import draw_errors

    vis = Path(args.vis) if args.vis else None
    if vis:
        vis.mkdir(parents=True, exist_ok=True)
    timer = _ImageTimer(detect, timings)

    def on_image(sample, image, dets, result):
        from dbnet.files import write_image

        timer.image_done()
        if not args.quiet:
            print(f"[{len(timings)}/{total}] {sample.name}: P {result.precision:.3f} R {result.recall:.3f} "
                  f"H {result.hmean:.3f} ({result.matched} matched, {len(result.missed)} missed, "
                  f"{len(result.false_alarms)} false alarms)", flush=True)
        if vis and (result.missed or result.false_alarms):
            drawn = draw_errors(image, sample.gt.polygons, dets.polygons, result)
            write_image(vis / vis_name(sample.name), drawn)
        timer.callback_done()

    return timer.detect, on_image


class _ImageTimer:
    """`detect` timed: each image's seconds from the end of the previous image's callback
    (decoding the file) to the end of detecting (and reading), not its scoring, printing or
    drawing. The callback calls image_done() first and callback_done() last."""

    def __init__(self, detect, timings: list):
        import time

        self._clock, self._detect, self.timings = time.perf_counter, detect, timings
        self._last, self._detected = self._clock(), 0.0

    def detect(self, image):
        dets = self._detect(image)
        self._detected = self._clock()
        return dets

    def image_done(self) -> None:
        self.timings.append(self._detected - self._last)

    def callback_done(self) -> None:
        self._last = self._clock()


def vis_name(image_name: str) -> str:
    """The --vis picture of an image: the image's own file name (its stem + '.jpg' drew
    img_1.png over img_1.jpg when each has its own ground truth), the folders of a gt.json
    name joined by '_' (never a path out of the --vis folder)."""
    return image_name.replace("\\", "/").strip("/").replace("/", "_")


def _check_vis_folder(vis, dataset) -> None:
    """--vis into the dataset's image folder would draw over the images it scores."""
    from pathlib import Path

    from engine.errors import DbrtError

    folder = Path(vis).resolve()
    for sample in dataset:
        if (folder / vis_name(sample.name)) == sample.image_path.resolve():
            raise DbrtError(f"--vis {vis} holds the dataset's images: drawing the errors would "
                            f"write over them (e.g. {sample.name}); pick another folder")


def _check_json_target(path, dataset) -> None:
    """--json naming the dataset's gt.json, a ground-truth file or an image would write the
    report over it (after scoring): refused first."""
    from pathlib import Path

    from engine.errors import DbrtError

    target = Path(path).resolve()
    for sample in dataset:
        for kind, used in (("ground truth", sample.gt_path), ("image", sample.image_path)):
            if used is not None and Path(used).resolve() == target:
                raise DbrtError(f"--json {path} is the dataset's {kind} ({used}): the report "
                                "would write over it; pick another file")


JSON_TO_STDOUT = "-"


def run(args) -> int:
    """--json -: the report is standard output's only content, so the text lines go to stderr."""
    import contextlib
    import sys

    if args.json != JSON_TO_STDOUT:
        return _run(args)
    args.json = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args)


def _run(args) -> int:
    from engine.errors import DbrtError
    from pipeline.datasets import open_dataset
    from pipeline.evaluate import evaluate_detector

    args.tune = args.tune or any((args.tune_thresh, args.tune_box_thresh, args.tune_unclip))
    check_trust_engine_code(args)
    check_model_reconnect(args)
    if not args.e2e and (direction_asked(args) or any(
            v is not None for v in (args.rec_model, args.rec_dict, args.rec_margin))):
        raise DbrtError("--rec-model, --rec-dict, --rec-margin and the --rec-cls flags apply to "
                        "reading, which dbrt eval does with --e2e only; add --e2e")
    if args.tune and args.e2e:
        raise DbrtError("--tune scores detection only; run --e2e on its own, with the "
                        "thresholds --tune picked")
    if args.vis and (args.tune or args.e2e):
        raise DbrtError(f"--vis draws the misses and false alarms of a plain detection run; "
                        f"run dbrt eval without {'--tune' if args.tune else '--e2e'} (at the "
                        "thresholds --tune picked) to draw them")
    dataset = open_dataset(args.dataset, args.gt, args.format)
    if isinstance(args.json, str):
        _check_json_target(args.json, dataset)
    dataset = dataset.head(args.max_images)
    if args.vis:
        _check_vis_folder(args.vis, dataset)
    if args.tune:
        return _tune(args, dataset)
    if args.e2e:
        return _e2e(args, dataset)
    timings: list = []
    with _detector(args) as detector:
        detect, on_image = _image_callback(args, len(dataset), timings, detector.detect)
        result = evaluate_detector(detect, dataset, on_image, iou=args.iou,
                                   area_precision=args.area_precision)
        described = detector.describe()
    ms = 1e3 * sum(timings) / max(1, len(timings))
    print(f"{dataset.name} ({dataset.format}, {len(dataset)} images): {result.summary()}; "
          f"{ms:.1f} ms/image incl. decoding the image file")
    if not args.quiet:  # --quiet: the overall line only, for scripts
        print(result.height_summary())
        print(result.errors_summary())
    if args.json:
        _write_json(args.json, {**_scoring(args, dataset, described), "ms_per_image": round(ms, 2),
                                **result.to_dict()})
    return 0
