"""`dbrt export`: a DBNet checkpoint -> verified FP32 (and FP16 / INT8) ONNX files."""
from __future__ import annotations

from pathlib import Path

from ._validate import (MAX_WIDTH, at_least, between, output_file_problem, output_file_with_suffix,
                        zero_to_one, side_length, width_multiplier)

NAME = "export"
HELP = "export a DBNet checkpoint to ONNX (FP32 / FP16 / INT8), with parity and TensorRT checks"
ORDER = 20
DESCRIPTION = """Load a checkpoint strictly (MhLiao/DB, plain or wrapped state dicts; architecture
inferred from its keys), export it to one self-contained ONNX with dynamic batch / height / width,
BatchNorm folded and the model's preprocessing + thresholds in its metadata, and check the ONNX
against PyTorch (max abs <= 1e-4 on the probability map). The FP32 model goes to -o; --precision
fp16 / int8 add NAME_fp16.onnx / NAME_int8.onnx beside it (INT8 needs --calib images or a video).
Every file is checked against TensorRT's ONNX support for --target-trt. Without a checkpoint the
shipped weights (export/assets/dbnet_default.pt) are used."""

PRECISIONS = ("fp32", "fp16", "int8")
# a sound full-INT8 DBNet keeps ~0.92-0.98 of its FP32 boxes; a calibration that went wrong
# (a range clipped far too short) falls to ~0.4-0.8 (benchmarks/results/*/int8_calibration.md)
INT8_WARN_HMEAN = 0.9
QUICK_CHECK_IMAGES = 4
CALIB_COUNT, ACCURACY_COUNT = 32, 16
# the opsets torch's TorchScript exporter writes (export.onnx_export.EXPORTER_OPSETS, which this
# layer does not import): --opset 0 was taken for "not given", others refused after the model loaded
MIN_OPSET, MAX_OPSET = 13, 20


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", nargs="?", help="checkpoint (.pth / .pt); default: shipped weights")
    parser.add_argument("-o", "--output", default="dbnet.onnx", type=output_file_with_suffix(".onnx"),
                        help="FP32 ONNX path (.onnx)")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=("resnet18", "resnet34", "resnet50"),
                       help="backbone; inferred from the checkpoint when omitted")
    model.add_argument("--dcn", action="store_true", default=None,
                       help="deformable convolution in stages 2-4; inferred when omitted")
    model.add_argument("--width", type=width_multiplier,
                       help=f"channel width multiplier (at most {MAX_WIDTH:g}); inferred when omitted")
    model.add_argument("--random-init", action="store_true",
                       help="export UNTRAINED random weights (tests, benchmarks); needs --arch")
    model.add_argument("--limit-side", type=side_length, help="resize target stored in the metadata")
    model.add_argument("--thresh", type=zero_to_one, help="binarisation threshold stored in the metadata")
    model.add_argument("--box-thresh", type=zero_to_one, help="box score threshold stored in the metadata")
    model.add_argument("--unclip-ratio", type=at_least(0.0, float), help="unclip ratio stored in the metadata")
    onnx = parser.add_argument_group("ONNX")
    onnx.add_argument("--opset", type=between(MIN_OPSET, MAX_OPSET),
                      help="ONNX opset; when omitted 17, or 19 for DCN models")
    onnx.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"])
    onnx.add_argument("--fp16-converter", choices=("auto", "modelopt", "onnxconverter"),
                      help="FP16 conversion of --precision fp16 (default auto)")
    onnx.add_argument("--calib", help="image folder / glob or video for INT8 calibration")
    onnx.add_argument("--calib-count", type=at_least(1),
                      help=f"calibration images / frames (default {CALIB_COUNT})")
    onnx.add_argument("--calib-method", choices=("percentile", "mse", "entropy", "minmax"),
                      help="activation ranges: the 99.999th percentile of |x|, least squared error, "
                      "TensorRT's entropy (KL) search, or the maxima (default: the one the "
                      "checkpoint's NAME.json chose on validation, else percentile)")
    onnx.add_argument("--calib-side", type=side_length, help="short side for calibration inputs "
                      "(default: the model's limit_side)")
    onnx.add_argument("--keep-fp32-head", action="store_true",
                      help="leave the head (last conv, ConvTranspose, Sigmoid) unquantized")
    onnx.add_argument("--keep-fp32-stem", action="store_true",
                      help="leave the first convolution (on the image) unquantized")
    onnx.add_argument("--keep-fp32-decoder", action="store_true",
                      help="leave the FPN neck and the head unquantized (INT8 backbone only)")
    onnx.add_argument("--keep-fp32-sensitive", type=at_least(0), default=0, metavar="K",
                      help="leave the K layers INT8 hurts most unquantized (ranked on the calibration "
                           "inputs; prints them and the share of MACs still INT8)")
    onnx.add_argument("--target-trt", default="auto",
                      help="TensorRT to check against: 8.6, 10, 10.3, 11 ... (auto: 8.6 for opset "
                           "<= 17, else 10.1)")
    onnx.add_argument("--no-parity", action="store_true", help="skip the PyTorch parity check")
    onnx.add_argument("--accuracy", metavar="IMAGES",
                      help="compare FP16 / INT8 with FP32 on these images (not the calibration set)")
    onnx.add_argument("--accuracy-count", type=at_least(1),
                      help=f"images of --accuracy to compare on (default {ACCURACY_COUNT})")


def _load_model(args):
    """(model, checkpoint path or None)."""
    from engine.errors import ModelError
    from export.checkpoint import model_from_checkpoint
    from export.model import DBNet

    if args.random_init:
        if args.checkpoint:
            raise ModelError("give either a checkpoint or --random-init, not both")
        if not args.arch:
            raise ModelError("--random-init needs --arch")
        print("WARNING: exporting UNTRAINED random weights (--random-init); detections are meaningless")
        return DBNet(args.arch, dcn=bool(args.dcn), width=args.width or 1.0).eval(), None
    path = args.checkpoint or _shipped_checkpoint()
    model, report = model_from_checkpoint(path, arch=args.arch, dcn=args.dcn, width=args.width)
    print(f"checkpoint {path}: {report}")
    return model, path


def _shipped_checkpoint() -> Path:
    from engine.errors import ModelError

    path = Path(__file__).resolve().parents[2] / "export" / "assets" / "dbnet_default.pt"
    if not path.is_file():
        raise ModelError(f"no checkpoint given and the shipped weights are missing ({path}); pass a "
                         "checkpoint, or --random-init --arch resnet18 for an untrained model")
    return path


def _spec(args, model, checkpoint):
    """The checkpoint's own spec (sidecar NAME.json) or DB defaults, then the command's options."""
    from export.checkpoint import sidecar_spec, trained_post_settings
    from export.onnx_export import default_spec

    changes = {k: v for k, v in dict(limit_side=args.limit_side, thresh=args.thresh,
                                     box_thresh=args.box_thresh,
                                     unclip_ratio=args.unclip_ratio).items() if v is not None}
    if args.random_init:
        changes["untrained"] = True
    base = sidecar_spec(checkpoint) if checkpoint else None
    if base is not None:
        print(f"model settings from {Path(checkpoint).with_suffix('.json')}")
        return base.replace(**changes, arch=_own_arch(base, model, checkpoint))
    trained = trained_post_settings(checkpoint) if checkpoint else {}
    if trained:  # a training checkpoint: the thresholds its validation chose or its --init had
        print("post-processing from the checkpoint: " + ", ".join(f"{k} {v:g}" for k, v in trained.items()))
    spec = default_spec(model, **{**trained, **changes})
    untold = [k for k in ("thresh", "box_thresh", "unclip_ratio") if k not in {**trained, **changes}]
    if checkpoint and untold and not args.random_init:  # e.g. a copy of a .pt without its .json
        print(f"note: no {Path(checkpoint).with_suffix('.json').name} beside the checkpoint and no "
              f"tuned thresholds in it: DBNet's defaults for "
              + ", ".join(f"{k} {getattr(spec.post, k):g}" for k in untold)
              + " (copy the .json with the .pt, or give --thresh / --box-thresh / --unclip-ratio)")
    return spec


def _own_arch(base, model, checkpoint) -> str:
    """The architecture the metadata names is the network exported: a record copied from
    another model (the shipped .json beside a narrower fine-tune) must not rename it."""
    arch = getattr(model, "arch_name", base.arch)
    if base.arch != arch:
        print(f"note: {Path(checkpoint).with_suffix('.json').name} describes {base.arch}, but the "
              f"checkpoint is {arch}: its settings are used, the metadata names {arch}")
    return arch


def _calib_method(given, checkpoint) -> str:
    """--calib-method, else the method the checkpoint's record chose on validation, else the default."""
    from export.checkpoint import sidecar_calib_method
    from export.quantize import DEFAULT_CALIB_METHOD

    if given:
        return given
    recorded = sidecar_calib_method(checkpoint) if checkpoint else None
    if recorded:
        print(f"INT8 calibration: {recorded}, chosen for this model on validation "
              f"({Path(checkpoint).with_suffix('.json').name}; --calib-method overrides)")
    return recorded or DEFAULT_CALIB_METHOD


def _variants(args, fp32_path: Path, spec) -> list:
    from engine.errors import DbrtError
    from export import quantize
    from pipeline.sampling import calibration_inputs

    out = [fp32_path]
    if "fp16" in args.precision:
        out.append(quantize.to_fp16(fp32_path, variant_path(fp32_path, "fp16"),
                                    backend=args.fp16_converter))
        print(f"wrote {out[-1]} (FP16, converter: {quantize.fp16_backend(args.fp16_converter)})")
    if "int8" in args.precision:
        if not args.calib:
            raise DbrtError("--precision int8 needs --calib IMAGES_OR_VIDEO")
        data = calibration_inputs(args.calib, spec, args.calib_count, args.calib_side)
        out.append(quantize.to_int8(fp32_path, variant_path(fp32_path, "int8"),
                                    data, args.calib_method, args.keep_fp32_head, args.keep_fp32_stem,
                                    args.keep_fp32_decoder, args.keep_fp32_sensitive))
        kept = [name for name, on in (("head", args.keep_fp32_head), ("stem", args.keep_fp32_stem),
                                      ("decoder", args.keep_fp32_decoder),
                                      (f"{args.keep_fp32_sensitive} most sensitive layers",
                                       args.keep_fp32_sensitive)) if on]
        notes = quantize.model_spec(out[-1]).int8
        share = f"; {notes.mac_share:.0%} of conv MACs INT8" if notes else ""
        print(f"wrote {out[-1]} (INT8 Q/DQ, {args.calib_method} calibration on {len(data)} inputs"
              f"{', FP32 ' + ' + '.join(kept) if kept else ''}{share})")
        if args.keep_fp32_sensitive:
            print("  FP32 layers: " + ", ".join(notes.fp32_layers if notes else ()))
        if notes and notes.mac_share == 0:  # every convolution kept: INT8 in name only
            print(f"WARNING: no convolution of {out[-1].name} runs in INT8 (the layers kept in "
                  "FP32 are all of them): it runs as FP32 plus quantize / dequantize steps; keep "
                  "fewer (--keep-fp32-sensitive K below the model's convolutions) or use FP16")
    return out


def variant_path(fp32_path: Path, precision: str) -> Path:
    """Where --precision fp16 / int8 writes its file: NAME_fp16.onnx / NAME_int8.onnx beside -o."""
    return fp32_path.with_name(f"{fp32_path.stem}_{precision}.onnx")


def _check_variant_outputs(args) -> None:
    """The FP16 / INT8 files can be written: found now, not after the FP32 export and the
    calibration."""
    from engine.errors import DbrtError

    for precision in ("fp16", "int8"):
        path = variant_path(Path(args.output), precision)
        problem = precision in args.precision and output_file_problem(path)
        if problem:
            raise DbrtError(f"--precision {precision}: cannot write {path}: {problem}")


def _check_inputs(args) -> None:
    """The flags that name inputs, checked before the export runs (minutes with INT8)."""
    from engine.errors import DbrtError, SourceError
    from export.trt_compat import TrtTarget
    from pipeline.sources import open_source

    if "int8" in args.precision and not args.calib:
        raise DbrtError("--precision int8 needs --calib IMAGES_OR_VIDEO")
    int8_only = [flag for flag, given in (
        ("--calib", args.calib), ("--calib-count", args.calib_count is not None),
        ("--calib-method", args.calib_method), ("--calib-side", args.calib_side),
        ("--keep-fp32-head", args.keep_fp32_head),
        ("--keep-fp32-stem", args.keep_fp32_stem), ("--keep-fp32-decoder", args.keep_fp32_decoder),
        ("--keep-fp32-sensitive", args.keep_fp32_sensitive)) if given]
    if int8_only and "int8" not in args.precision:
        raise DbrtError(f"{int8_only[0]} applies to --precision int8 only; add it or drop the flag")
    if args.fp16_converter and "fp16" not in args.precision:
        raise DbrtError("--fp16-converter applies to --precision fp16 only; add it or drop the flag")
    if "fp16" in args.precision:  # its package, before the FP32 export it would follow
        from export.quantize import check_fp16_backend
        check_fp16_backend(args.fp16_converter or "auto")
    if args.accuracy and not set(args.precision) - {"fp32"}:
        raise DbrtError("--accuracy compares FP16 / INT8 with FP32: add --precision fp16 or int8")
    if args.accuracy_count is not None and not args.accuracy:
        raise DbrtError("--accuracy-count applies to --accuracy IMAGES only; add it or drop the flag")
    if args.target_trt != "auto":
        _check_opset_for_target(args.opset, TrtTarget.parse(args.target_trt))
    _check_variant_outputs(args)
    for flag, source in (("--calib", args.calib), ("--accuracy", args.accuracy)):
        if source:
            try:
                with open_source(str(source)):
                    pass
            except SourceError as exc:
                raise DbrtError(f"{flag}: {exc}") from None


def _check_opset_for_target(opset, target) -> None:
    """An --opset the --target-trt parser cannot read was exported first, then failed the
    compatibility check (exit 1): refused before the model loads."""
    from engine.errors import DbrtError

    low, high = target.opsets
    if opset is not None and not low <= opset <= high:
        raise DbrtError(f"--opset {opset}: TensorRT {target.name}'s ONNX parser reads opsets "
                        f"{low}..{high}; give --opset {min(max(opset, low), high)} or a later "
                        "--target-trt")


def _fill_defaults(args) -> None:
    """The defaults of the flags left unset in the parser, so that _check_inputs sees which
    ones the user gave."""
    args.fp16_converter = args.fp16_converter or "auto"
    args.calib_count = args.calib_count or CALIB_COUNT
    args.accuracy_count = args.accuracy_count or ACCURACY_COUNT


def run(args) -> int:
    from pipeline.accuracy import compare_many
    from pipeline.sampling import read_images
    from export.onnx_export import export_onnx, has_deform_conv
    from export.trt_compat import check_onnx

    _check_inputs(args)
    _fill_defaults(args)
    model, checkpoint = _load_model(args)
    if "int8" in args.precision:  # before the export: a bad record fails at once
        args.calib_method = _calib_method(args.calib_method, checkpoint)
    opset = args.opset if args.opset is not None else (19 if has_deform_conv(model) else 17)
    spec = _spec(args, model, checkpoint)
    report = export_onnx(model, args.output, opset=opset, spec=spec,
                         parity_shapes=None if args.no_parity else ((1, 3, 256, 320), (2, 3, 320, 192)))
    print(report)
    paths = _variants(args, Path(args.output), spec)
    target = args.target_trt if args.target_trt != "auto" else ("8.6" if opset <= 17 else "10.1")
    status = 0
    for path in paths:
        compat = check_onnx(path, target)
        print(compat)
        status |= 0 if compat.ok else 1
    if args.accuracy and len(paths) > 1:
        if args.calib and Path(args.accuracy).resolve() == Path(args.calib).resolve():
            print("WARNING: --accuracy uses the calibration images; INT8 agreement will look better "
                  "than on unseen images")
        images = read_images(args.accuracy, args.accuracy_count)
        for result in compare_many(paths[0], paths[1:], images):  # at the model's own input size
            _report(result, args.keep_fp32_sensitive)
    elif "int8" in args.precision:
        # no --accuracy: a quick look on a few calibration images still catches a broken range
        images = read_images(args.calib, min(QUICK_CHECK_IMAGES, args.calib_count))
        print(f"quick INT8 check on {len(images)} images from --calib (--accuracy IMAGES checks "
              "held-out ones):")
        _report(compare_many(paths[0], [paths[-1]], images, limit_side=args.calib_side)[0],
                args.keep_fp32_sensitive)
    return status


def _report(result, kept_sensitive: int = 0) -> None:
    """One comparison line, and a warning when INT8 lost many of FP32's boxes."""
    print(result)
    if result.precision == "int8" and result.reference_boxes and result.hmean < INT8_WARN_HMEAN:
        print(f"WARNING: the INT8 model's boxes agree with FP32 at only {result.hmean:.2f} on "
              "these images; try another --calib-method, more or more representative --calib "
              f"images{_keep_more_hint(kept_sensitive)}")


# the shipped ResNet-18 DBNet has 31 convolutions: with this many kept in FP32 little is left INT8,
# so no larger number is suggested
MANY_SENSITIVE = 32


def _keep_more_hint(kept: int) -> str:
    """The --keep-fp32-sensitive to try next: more than the `kept` layers already kept, or none
    when most of the network is FP32 already."""
    if kept >= MANY_SENSITIVE:
        return f" (already {kept} sensitive layers kept in FP32)"
    return f", or --keep-fp32-sensitive {max(10, 2 * kept)}" + (
        f" (more than the {kept} kept now)" if kept else "")
