"""`dbrt build`: ONNX -> TensorRT engine (+ its .json record)."""
from __future__ import annotations

from engine.loader import ENGINE_FILE_KINDS

from ._validate import at_least, engine_file, output_file, output_file_problem

NAME = "build"
HELP = "build a TensorRT engine from an ONNX model (FP32 / FP16 / INT8, dynamic shapes)"
ORDER = 40
DESCRIPTION = """Build a TensorRT engine on this GPU. Precision: on TensorRT 8.6 / 10.x the FP16 /
INT8 builder flags are used (INT8 from an FP32 ONNX calibrates on --calib images); TensorRT 11.x
builds strongly typed networks only, so the precision is the ONNX's own (dbrt export --precision
fp16 / int8 first). Shapes: --min / --opt / --max as NxCxHxW or HxW (with --batch MIN:OPT:MAX);
H and W must be multiples of 32; by default opt is a 16:9 frame under the model's resize rule,
batch 1..4, and max leaves room for other aspect ratios. The engine only runs on this TensorRT
version and GPU model (unless --version-compatible / --hardware-compatible); a .json record
next to it says so, and `dbrt info` shows it. On a Jetson AGX / NX, --dla-core N runs what the
DLA can on DLA core N (FP16 / INT8, one input shape)."""


def add_arguments(parser) -> None:
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("-o", "--output", type=engine_file,
                        help=f"engine path, {ENGINE_FILE_KINDS} (default: MODEL with .engine)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "int8"),
                        help="auto: the ONNX's precision, FP16 for an FP32 ONNX where TensorRT "
                             "has precision flags")
    parser.add_argument("--strongly-typed", action="store_true", default=None,
                        help="TensorRT 10.x: build the FP16 / Q/DQ ONNX strongly typed")
    shapes = parser.add_argument_group("optimisation profile")
    shapes.add_argument("--min", help="smallest input, NxCxHxW or HxW (default 32x32)")
    shapes.add_argument("--opt", help="the shape TensorRT tunes for")
    shapes.add_argument("--max", help="largest input (default: --opt)")
    shapes.add_argument("--batch", help="batch range for HxW shapes: N, MIN:MAX or MIN:OPT:MAX")
    tuning = parser.add_argument_group("builder")
    tuning.add_argument("--workspace", type=at_least(1), metavar="MiB", help="scratch memory limit")
    tuning.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                        help="builder optimisation level (TensorRT default 3; higher builds longer)")
    tuning.add_argument("--timing-cache", type=output_file, help="timing cache file (default: one per TensorRT "
                                               "version and GPU in the engine cache folder)")
    tuning.add_argument("--no-timing-cache", action="store_true",
                        help="do not use a timing cache (not with --timing-cache)")
    tuning.add_argument("--version-compatible", action="store_true",
                        help="the engine also runs on later TensorRT versions (somewhat slower); it carries "
                             "TensorRT's runtime, which dbrt run / info / eval run only when told "
                             "to trust the file")
    tuning.add_argument("--hardware-compatible", action="store_true",
                        help="the engine runs on any Ampere or newer discrete GPU (somewhat "
                             "slower; refused on a Jetson, where TensorRT has no hardware "
                             "compatibility)")
    tuning.add_argument("--dla-core", type=at_least(0), metavar="N",
                        help="Jetson AGX / NX: run the layers the DLA can on DLA core N, the rest "
                             "on the GPU (FP16 / INT8 only; one input shape: --opt, with "
                             "--min / --max left out)")
    calib = parser.add_argument_group("INT8 calibration (TensorRT 8.6 / 10.x, FP32 ONNX)")
    calib.add_argument("--calib", metavar="DIR", help="folder of representative images")
    calib.add_argument("--calib-count", type=at_least(1), default=64,
                       help="use at most this many images")
    calib.add_argument("--calib-cache", type=output_file,
                       help="calibration cache file (reused when it exists; then --calib may be "
                            "left out)")
    parser.add_argument("--preset", help="preprocessing preset for models without dbrt metadata "
                        "(db, ppocr, mmocr): INT8 calibration normalises images with it")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def profile_from_args(args):
    """ShapeProfile from --min/--opt/--max/--batch, or None for the model's default."""
    from engine.errors import ShapeError
    from engine.shapes import ShapeProfile, parse_batch

    if not any((args.min, args.opt, args.max)):
        if args.batch:
            raise ShapeError("--batch needs --opt (and optionally --min / --max)")
        if args.dla_core is not None:
            raise ShapeError("--dla-core: the DLA runs one input shape; give it as --opt HxW "
                             "(and --batch N)")
        return None
    if not args.opt:
        raise ShapeError("give --opt with --min / --max")
    opt = _flag_shape("--opt", args.opt)
    smallest = opt if args.dla_core is not None else (  # the DLA runs one shape
        (32, 32) if len(opt) == 2 else (opt[0], opt[1], 32, 32))
    low = _flag_shape("--min", args.min) if args.min else smallest
    high = _flag_shape("--max", args.max) if args.max else opt
    if len({len(low), len(opt), len(high)}) != 1:
        raise ShapeError("--min, --opt and --max must all be NxCxHxW or all HxW")
    if len(opt) == 4:
        if args.batch:
            raise ShapeError("--batch applies to HxW shapes; NxCxHxW shapes carry their batch")
        return ShapeProfile(low, opt, high).validate()
    try:
        batch = parse_batch(args.batch or "1")
    except ShapeError as exc:
        raise ShapeError(f"--batch: {exc}") from None
    return ShapeProfile.from_hw(low, opt, high, batch).validate()


def _flag_shape(flag: str, text: str):
    """parse_shape, its error naming the flag."""
    from engine.errors import ShapeError
    from engine.shapes import parse_shape

    try:
        return parse_shape(text)
    except ShapeError as exc:
        raise ShapeError(f"{flag}: {exc}") from None


def check_calibration_images(source) -> None:
    """--calib opened (it exists, is readable, holds images) before TensorRT is looked for: on
    a machine without TensorRT a wrong path was reported only as missing TensorRT."""
    from engine.errors import SourceError
    from pipeline.sources import open_source

    try:
        open_source(str(source)).close()
    except SourceError as exc:
        raise SourceError(f"--calib: {exc}") from None


def calibration_source(folder, spec, count: int):
    """Images in `folder` -> preprocessed NCHW batches of the calibration shape."""
    from engine.errors import DbrtError
    from pipeline.preprocess import preprocess_batch
    from pipeline.sampling import read_images

    images = read_images(folder, count)  # a video's frames spread over it, as `dbrt export --calib`

    def batches(shape):
        n, _, h, w = shape
        if len(images) < n:
            raise DbrtError(f"calibration needs at least {n} images (the opt batch), found {len(images)}")
        for start in range(0, len(images) - n + 1, n):
            yield preprocess_batch(images[start:start + n], spec, (h, w))[0]

    return batches


def _options(args, profile, spec, backend, trt):
    from pathlib import Path

    from engine.tensorrt.cache import timing_cache_path
    from engine.tensorrt.build import BuildOptions

    if args.no_timing_cache:
        timing = None
    elif args.timing_cache:
        timing = Path(args.timing_cache)
    else:
        timing = timing_cache_path(trt.__version__, backend.device_info())
    return BuildOptions(
        precision=args.precision, profile=profile or _resize_profile(spec),
        workspace=args.workspace * (1 << 20) if args.workspace else None, opt_level=args.opt_level,
        timing_cache=timing, strongly_typed=args.strongly_typed,
        version_compatible=args.version_compatible, hardware_compatible=args.hardware_compatible,
        dla_core=args.dla_core,
        calibration=calibration_source(args.calib, spec, args.calib_count) if args.calib else None,
        calibration_cache=Path(args.calib_cache) if args.calib_cache else None)


def _resize_profile(spec):
    """The video profile of the model's resize rule (dbnet.spec.default_profile)."""
    from dbnet.spec import default_profile

    return default_profile(spec.resize.limit_side, spec.resize.limit_type, spec.resize.stride)


def engine_path(args):
    """-o, else the model's name with .engine; refused before the build where it is the model
    itself or cannot be written, and where the timing cache flags contradict each other."""
    from pathlib import Path

    from engine.errors import DbrtError

    if args.timing_cache and args.no_timing_cache:
        raise DbrtError("give --timing-cache FILE or --no-timing-cache, not both")
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".engine")
    if output.exists() and output.resolve() == Path(args.model).resolve():
        raise DbrtError(f"the engine would overwrite the model {args.model}; name it with -o")
    problem = None if args.output else output_file_problem(output)
    if problem:
        raise DbrtError(f"cannot write the engine next to the model: {problem}; name it with -o")
    return output


def run(args) -> int:
    import time

    from engine import cuda
    from engine.tensorrt import require_tensorrt
    from dbnet.model_check import check_spec_source
    from dbnet.spec import resolve_spec
    from engine.onnx_info import summarize_onnx
    from engine.tensorrt.progress import BuildProgress
    from engine.tensorrt.build import build_engine_file
    from engine.tensorrt.dla import dla_summary

    profile = profile_from_args(args)             # flag mistakes before TensorRT is looked for
    output = engine_path(args)
    if args.calib:
        check_calibration_images(args.calib)
    summary = summarize_onnx(args.model)          # clear error for a bad ONNX before TensorRT
    if args.calib or profile is None:  # the spec normalises the images / gives the profile
        check_spec_source(summary.metadata, args.preset, summary.inputs, summary.outputs)
    trt = require_tensorrt()
    backend = cuda.require_backend("dbrt build")
    options = _options(args, profile, resolve_spec(summary.metadata, args.preset), backend, trt)
    started = time.monotonic()
    progress = None if args.quiet else BuildProgress(label=f"building {output.name}")
    record = build_engine_file(args.model, output, options, progress, backend)
    size = output.stat().st_size / 1e6
    print(f"wrote {output} ({record.precision}{', strongly typed' if record.strongly_typed else ''}, "
          f"{size:.1f} MB, TensorRT {record.tensorrt_version}, {record.gpu_name}, "
          f"profile {record.profile.describe()}) in {time.monotonic() - started:.1f}s")
    dla = record.builder.get("dla")
    if dla:  # what the DLA could not take runs on the GPU, a copy at every change of device
        examples = ", ".join(dla["gpu_fallback_examples"])
        print(dla_summary(dla) + (f"; on the GPU: {examples}"
                                  f"{', ...' if dla['gpu_fallback_layers'] > 5 else ''}" if examples else ""))
    return 0
