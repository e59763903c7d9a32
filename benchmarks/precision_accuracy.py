"""FP16 / INT8 ONNX against FP32: probability-map differences and box agreement (issue 3).

    python -m benchmarks.precision_accuracy [--checkpoint W.pt | --random-init] [--side 736]
        [--images DIR] [--variants int8-percentile,int8-entropy]

Exports the checkpoint (default: the shipped export/assets/dbnet_default.pt) to FP32 ONNX with
the parity check, makes FP16 and INT8 variants (percentile, MSE, entropy and min-max
calibration, some layers left in FP32), checks each against TensorRT 8.6 / 10.3 / 11, and
compares each with FP32 on images never used for calibration: deterministic synthetic scenes
(`export.synth`, seeds from 10000), ../shared/data/realdev (when present) and each --images
folder (your own photos, or a validation split to choose a calibrator on). Calibration uses
synthetic scenes with other seeds (50000+) and, when ../shared/data is present, as many real
frames from its two videos (a sign-board close-up and street scenes with captions; the realdev
photos are never used). --variants makes only the named ones (the sensitivity ranking, which
runs every layer once, only for a sensitive-K variant).
Writes benchmarks/results/<machine>/precision_accuracy.{json,md}. ONNX Runtime CPU runs every
model: it upcasts FP16, so FP16 rows validate the converted graph, not GPU FP16 arithmetic.
Targets: INT8 box hmean >= 0.97, FP16 >= 0.995 against FP32.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from pipeline.accuracy import INTEGER_KERNELS

from . import common

TARGETS = {"fp16": 0.995, "int8": 0.97}
TRT_TARGETS = ("8.6", "10.3", "11")
SENSITIVE_K = (10, 20, 30)
FULL_INT8 = ("int8-percentile", "int8-mse", "int8-entropy", "int8-minmax")  # default first
VIDEOS = ("video/pexels_lightbox_text_960x506.mp4", "video/pexels_street_captions_1080x1920.mp4")


def add_model_arguments(parser) -> None:
    """--checkpoint / --random-init / --width: the model `_model` makes."""
    parser.add_argument("--checkpoint", help="default: export/assets/dbnet_default.pt")
    parser.add_argument("--random-init", action="store_true", help="UNTRAINED model (labelled as such)")
    parser.add_argument("--width", type=float, default=0.5, help="width of the --random-init model")


def _model(args):
    from export.checkpoint import model_from_checkpoint, sidecar_spec
    from export.model import DBNet

    if args.random_init:
        import torch

        torch.manual_seed(0)
        described = f"UNTRAINED random init (resnet18 w{args.width:g})"
        return DBNet("resnet18", width=args.width).eval(), described, None
    path = Path(args.checkpoint or common.REPO / "export" / "assets" / "dbnet_default.pt")
    model, _ = model_from_checkpoint(path)
    return model, f"{path.name} (sha256 {common.file_sha256(path)})", sidecar_spec(path)


def _calibration(spec, count: int, side: int):
    from export.synth import synthetic_images
    from pipeline.sampling import calibration_inputs
    from pipeline.preprocess import preprocess

    videos = [v for v in VIDEOS if (common.SHARED_DATA / v).is_file()]
    # half real frames (spread over the videos present), half synthetic scenes
    real = count // 2
    per_video = [real // len(videos) + (i < real % len(videos)) for i in range(len(videos))]
    spec = spec.replace(limit_side=side)
    images = synthetic_images(count - sum(per_video), first_seed=50_000)
    inputs = [preprocess(im, spec)[0][None] for im in images]
    text = f"{len(images)} synthetic scenes (seeds 50000+)"
    for video, n in zip(videos, per_video):
        if not n:
            continue
        inputs += calibration_inputs(common.SHARED_DATA / video, spec, n)
        text += f" + {n} frames of {video}"
    return inputs, text


def _eval_sets(n_synth: int, extra=None) -> dict:
    """Synthetic scenes, realdev when present, then `extra` ({name: images}, the --images folders)."""
    from export.synth import synthetic_images

    sets = {"synthetic": synthetic_images(n_synth)}
    realdev = common.realdev_images("synthetic images only")
    if realdev is not None:
        sets["realdev"] = realdev
    return dict(sets, **(extra or {}))


def variant_names() -> list:
    """Every variant the benchmark can make, in report order."""
    from export.quantize import DEFAULT_CALIB_METHOD

    return (["fp16", *FULL_INT8]
            + [f"int8-{m}-ends-fp32" for m in ("entropy", "percentile")]
            + [f"int8-{m}-decoder-fp32" for m in ("entropy", "percentile")]
            + [f"int8-{DEFAULT_CALIB_METHOD}-sensitive-{k}-fp32" for k in SENSITIVE_K])


def _variants(fp32: Path, calib, out_dir: Path, wanted=None) -> dict:
    """The wanted variants (default: all) as {name: ONNX path}, and the INT8 sensitivity ranking
    (empty unless a sensitive-K variant is wanted: ranking runs every layer once)."""
    from export import quantize

    wanted = list(wanted or variant_names())
    method = quantize.DEFAULT_CALIB_METHOD  # what `dbrt export --keep-fp32-sensitive K` does
    sensitive = {f"int8-{method}-sensitive-{k}-fp32": k for k in SENSITIVE_K}
    ranked = quantize.int8_layer_ranking(fp32, calib, method) if set(wanted) & set(sensitive) else []
    variants = {}
    for name in wanted:
        path = out_dir / f"{name}.onnx"
        if name == "fp16":
            variants[name] = quantize.to_fp16(fp32, path)
            continue
        calib_method = name.split("-")[1]  # int8-<method>-...
        if name in FULL_INT8:
            variants[name] = quantize.to_int8(fp32, path, calib, calib_method)
        elif name.endswith("-ends-fp32"):  # head and stem left in FP32
            variants[name] = quantize.to_int8(fp32, path, calib, calib_method,
                                              keep_fp32_head=True, keep_fp32_stem=True)
        elif name.endswith("-decoder-fp32"):  # INT8 backbone, FP32 FPN + head
            variants[name] = quantize.to_int8(fp32, path, calib, calib_method, keep_fp32_decoder=True)
        else:  # the K layers INT8 hurts most (ranked on the calibration inputs only) in FP32
            variants[name] = quantize.to_int8(fp32, path, calib, method,
                                              keep_fp32_nodes=[r.name for r in ranked[:sensitive[name]]])
    return variants, ranked


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="dbrt_precision_") as work:  # the ONNX files go away
        return _run_in(args, Path(work))


def _run_in(args, work: Path) -> dict:
    from pipeline.accuracy import compare_many, int8_execution, int8_noise_floor
    from export import quantize
    from export.onnx_export import export_onnx
    from export.trt_compat import check_onnx

    model, described, spec = _model(args)
    started = time.perf_counter()
    export = export_onnx(model, work / "fp32.onnx", opset=args.opset, spec=spec)
    print(export)
    args.side = args.side or export.spec.resize.limit_side
    calib, calib_text = _calibration(export.spec, args.calib_count, args.side)
    variants, ranked = _variants(export.path, calib, work, args.variants)
    sets = _eval_sets(args.synthetic, args.image_sets)
    rows = []
    compat = {name: {t: check_onnx(path, t).ok for t in TRT_TARGETS} for name, path in variants.items()}
    share = {name: _mac_share(path) for name, path in variants.items()}
    for set_name, images in sets.items():
        results = compare_many(export.path, list(variants.values()), images, limit_side=args.side)
        floor = {name: _hmean(int8_noise_floor(path, images, limit_side=args.side))
                 for name, path in variants.items() if name.startswith("int8")}
        for name, result in zip(variants, results):
            print(f"{name:28s} {set_name:9s} {result}")
            target = TARGETS[result.precision]
            # without FP32 boxes there is nothing to agree on: say so instead of a vacuous 1.0
            measured = result.reference_boxes > 0
            rows.append(dict(variant=name, images=set_name, n=result.images, max_abs=result.max_abs,
                             mean_abs=result.mean_abs, int8_macs=share[name],
                             fp32_boxes=result.reference_boxes,
                             boxes=result.candidate_boxes, P=result.precision_score, R=result.recall,
                             hmean=result.hmean if measured else None, int8_self=floor.get(name),
                             target=f">= {target}",
                             meets=(result.hmean >= target) if measured else "n/a (no boxes)",
                             **{f"trt{t}": ok for t, ok in compat[name].items()}))
    command = " ".join(["python -m benchmarks.precision_accuracy"] + sys.argv[1:])
    return dict(command=command, model=described, opset=args.opset, side=args.side, calibration=calib_text,
                int8_execution=int8_execution(),
                parity=[vars(p) for p in export.parity], parity_passed=export.passed,
                fp32_sha256=common.file_sha256(export.path), rows=rows,
                sensitivity=[r.to_dict() for r in ranked], sensitivity_method=quantize.DEFAULT_CALIB_METHOD,
                seconds=round(time.perf_counter() - started, 1))


def _hmean(result):
    return None if result is None else result.hmean


def _mac_share(path):
    """Share of conv MACs in INT8 (None for FP16)."""
    from export.quantize import model_spec

    spec = model_spec(path)
    return None if spec.precision != "int8" else (spec.int8.mac_share if spec.int8 else 1.0)


def _markdown(payload: dict) -> list:
    parity = ", ".join(f"{'x'.join(map(str, p['shape']))}: max {p['max_abs']:.1e}" for p in payload["parity"])
    intro = (f"Model: {payload['model']}; FP32 ONNX opset {payload['opset']}, parity vs PyTorch "
             f"{'passed' if payload['parity_passed'] else 'FAILED'} ({parity}).\n\n"
             f"Inputs resized to short side {payload['side']}; calibration: {payload['calibration']}; "
             "evaluation images are disjoint from calibration. Box agreement = ICDAR 2015 protocol "
             "(IoU > 0.5) of each variant's boxes against the FP32 boxes. ONNX Runtime CPU "
             "(FP16 is upcast there: FP16 rows check the converted graph). `trtX`: "
             "export.trt_compat verdict for that TensorRT version. `int8_macs`: share of the "
             "convolution MACs that run in INT8 (the rest stays FP32 / FP16). `int8_self`: box "
             "agreement of the INT8 model with itself executed another valid way (ORT's fused "
             "integer kernels vs the same Q/DQ graph as float ops, `session.disable_quant_qdq`): "
             "the noise floor of INT8 execution, which TensorRT's kernels have too. INT8 ran as: "
             f"{payload.get('int8_execution', INTEGER_KERNELS)}.\n\n"
             f"Command: `{payload['command']}`\n")
    shown = [dict(r, **{k: f"{r[k]:.4f}" for k in ("P", "R", "hmean", "int8_self") if r[k] is not None})
             for r in payload["rows"]]
    sensitivity = [dict(rank=i + 1, layer=r["name"], op=r["op"], mse=f"{r['mse']:.2e}",
                        mmacs=round(r["macs"] / 1e6, 1)) for i, r in enumerate(payload["sensitivity"])]
    return [("Setup", intro), ("Summary", _summary(payload["rows"])),
            ("FP16 / INT8 vs FP32", common.markdown_table(shown)),
            ("INT8 layer sensitivity", "Probability-map MSE against FP32 when only that layer is INT8 "
             f"({payload['sensitivity_method']} ranges), on the calibration inputs; MMACs for one "
             "calibration input. The `sensitive-K` variants leave the first K in FP32.\n\n"
             + common.markdown_table(sensitivity)) if sensitivity else
            ("INT8 layer sensitivity", "Not ranked: no `sensitive-K` variant was asked for.\n")]


def _summary(rows) -> str:
    """Per image set: does FP16 meet its target, and the best INT8 variant."""
    lines = []
    for images in dict.fromkeys(r["images"] for r in rows):
        here = [r for r in rows if r["images"] == images and r["hmean"] is not None]
        fp16 = [r for r in here if r["variant"] == "fp16"]
        int8 = sorted((r for r in here if r["variant"].startswith("int8")), key=lambda r: -r["hmean"])
        if fp16:
            lines.append(f"- {images}: FP16 box hmean {fp16[0]['hmean']:.4f} (target {TARGETS['fp16']})")
        if int8:
            met = sum(r["hmean"] >= TARGETS["int8"] for r in int8)
            share = int8[0].get("int8_macs")
            meeting = [r["variant"] for r in int8 if r["hmean"] >= TARGETS["int8"]]
            which = f": {', '.join(meeting)}" if 0 < met < len(int8) else ""
            lines.append(f"- {images}: best INT8 {int8[0]['variant']} hmean {int8[0]['hmean']:.4f}"
                         f"{f' ({share:.0%} of conv MACs INT8)' if share is not None else ''} "
                         f"(target {TARGETS['int8']}; {met}/{len(int8)} INT8 variants meet it"
                         f"{which}; "
                         f"{int8[0]['fp32_boxes']} FP32 boxes)")
            full = {r["variant"]: r for r in int8 if r["variant"] in FULL_INT8 and r.get("int8_self") is not None}
            if full:
                each = ", ".join(f"{name} {full[name]['hmean']:.4f} vs itself {full[name]['int8_self']:.4f}"
                                 for name in FULL_INT8 if name in full)
                lines.append(f"- {images}: full INT8 against FP32 vs the same INT8 graph run another "
                             f"way (its execution noise floor): {each}")
    return "\n".join(lines) + "\n"


def _read_folders(parser, folders) -> dict:
    """{folder name: its images}, read before the long export so a bad folder fails at once."""
    from engine.errors import SourceError
    from pipeline.sampling import read_images

    sets = {}
    for folder in folders:
        if not Path(folder).is_dir():
            parser.error(f"--images: no such folder: {folder}")
        try:
            sets[Path(folder).name] = read_images(Path(folder))
        except SourceError as exc:
            parser.error(f"--images: {exc}")
    return sets


def _variant_list(text: str) -> list:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in variant_names()]
    if unknown or not names:
        named = ", ".join(unknown) if unknown else repr(text)
        raise argparse.ArgumentTypeError(f"unknown variant(s) {named}; "
                                         f"choose from {', '.join(variant_names())}")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    parser = common.argument_parser("benchmarks.precision_accuracy", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--side", type=int, help="short side of every input (default: the model's)")
    parser.add_argument("--synthetic", type=int, default=24, help="synthetic evaluation images")
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--images", action="append", default=[], metavar="DIR",
                        help="also compare on this folder's images (repeatable; e.g. a validation split)")
    parser.add_argument("--variants", type=_variant_list, metavar="A,B",
                        help="only these variants (default: all): " + ", ".join(variant_names()))
    parser.add_argument("--name", default="precision_accuracy", help="result file name")
    args = parser.parse_args(argv)
    args.image_sets = _read_folders(parser, args.images)
    import torch

    torch.set_num_threads(2)
    payload = run(args)
    common.write_report(args.name, "FP16 / INT8 ONNX accuracy against FP32", payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
