"""The model flags shared by `dbrt run` and `dbrt eval`, turned into typed settings once: runner
options (engine.loader.RunnerOptions), the changes to the model's ModelSpec, and the Detector."""
from __future__ import annotations

from pipeline.reading.spec import RecSpec

from ._validate import MAX_CPU_THREADS

TRUST_ENGINE_HELP = ("let a version-compatible TensorRT .engine (dbrt build --version-compatible, "
                     "trtexec --versionCompatible) run the TensorRT runtime it carries: code from "
                     "the file runs in this process, so only for engines you trust")

DLA_HELP = ("Jetson AGX / NX: DLA core N runs the TensorRT engine's layers it can (the rest "
            "run on the GPU): an engine built from the .onnx (FP16 / INT8, one input shape: "
            "needs --input-size), or a DLA engine from dbrt build --dla-core, moved to core N")

THREADS_HELP = (f"CPU inference threads (0: backend default; at most {MAX_CPU_THREADS}, beyond "
                "the core count where more threads still pay)")

TRITON_FLAGS = {"triton_shm": "--triton-shm", "triton_inflight": "--triton-inflight",
                "triton_timeout": "--triton-timeout"}

REC_MARGIN_HELP = ("grow each text crop by this fraction of the text's height on every side before "
                   f"reading (default: {RecSpec.margin:g}, chosen on the validation split for the "
                   "shipped detector's boxes; implies reading)")


def add_direction_arguments(group) -> None:
    """--rec-cls / --rec-cls-model / --rec-cls-thresh: the text-direction classifier run on
    the crops before they are read (pipeline/reading/direction.py)."""
    from pipeline.reading.direction import DEFAULT_THRESH

    from ._validate import zero_to_one

    group.add_argument("--rec-cls", action="store_true",
                       help="turn upside-down text before reading it: PaddleOCR's 0/180 degree "
                            "text-direction classifier (from the rapidocr wheel) runs on every "
                            "crop, a small extra model call per batch (implies reading)")
    group.add_argument("--rec-cls-model", metavar="PATH",
                       help="the classifier .onnx, (N,3,48,192) -> (N,2) for labels 0 and 180 "
                            "(implies --rec-cls)")
    group.add_argument("--rec-cls-thresh", type=zero_to_one, metavar="P",
                       help=f"turn a crop when its '180' probability is above P (default "
                            f"{DEFAULT_THRESH:g}; implies --rec-cls)")


def add_ignore_argument(group) -> None:
    """--ignore X,Y,W,H (repeatable): zones whose detections are dropped (pipeline/ignore.py)."""
    from ._validate import ignore_zone

    group.add_argument("--ignore", type=ignore_zone, action="append", metavar="X,Y,W,H",
                       help="drop the detections lying mostly (half their area or more) inside "
                            "this zone, e.g. text the camera burns into every frame (its clock, "
                            "name or logo), before they are read, tracked or written; counted in "
                            "report.json (ignored_detections); repeat for more zones; written "
                            "as --roi is, in frame coordinates whatever --roi")


def check_ignore_zones(args, coded_size) -> None:
    """An --ignore zone no frame of a video meets (its coded size, upright or turned) is
    refused before the model loads, as a --roi is."""
    if getattr(args, "ignore", None) and coded_size:
        from pipeline.ignore import IgnoreZones

        IgnoreZones(args.ignore).check_coded_size(*coded_size)


def runner_options(args):
    """RunnerOptions from --threads / --sessions / --ort-spin / --trust-engine-code, and for a
    triton:// model the --triton-* flags and --reconnect / --reconnect-delay (flags a command
    lacks stay default)."""
    from engine.loader import RunnerOptions

    spin = getattr(args, "ort_spin", None)
    return RunnerOptions(threads=getattr(args, "threads", 0) or 0,
                         sessions=getattr(args, "sessions", 1) or 1,
                         spin=None if spin is None else spin == "on",
                         engine_host_code=getattr(args, "trust_engine_code", False),
                         dla_core=getattr(args, "dla_core", None),
                         triton=triton_options(args))


def check_trust_engine_code(args) -> None:
    """--trust-engine-code with a model that is not a prebuilt engine (an ONNX, the shipped
    model, a triton:// one) is an error naming the flag, not an option name or nothing."""
    if not getattr(args, "trust_engine_code", False):
        return
    from pathlib import Path

    from engine.errors import ModelError
    from engine.loader import ENGINE_FILE_KINDS, ENGINE_SUFFIXES

    model = getattr(args, "model", None)
    if model is None or Path(str(model)).suffix.lower() not in ENGINE_SUFFIXES:
        raise ModelError(f"--trust-engine-code applies to a prebuilt TensorRT {ENGINE_FILE_KINDS} "
                         f"only; {model or 'the shipped model'} is not one: drop the flag")


def check_dla_flag(args) -> None:
    """--dla-core where no TensorRT engine runs locally, or with an .onnx and no fixed input
    size, is an error naming the flags (not an option name, or a build that fails)."""
    core = getattr(args, "dla_core", None)
    if core is None:
        return
    from engine.errors import ModelError
    from engine.triton.options import is_triton_url

    model = getattr(args, "model", None)
    if args.backend == "onnxruntime" or args.device == "cpu":
        given = "--backend onnxruntime" if args.backend == "onnxruntime" else "--device cpu"
        raise ModelError(f"--dla-core runs a TensorRT engine; drop it, or {given}")
    if is_triton_url(model):
        raise ModelError("--dla-core applies to a model run here; a Triton server's model "
                         "configuration places its own model")
    if not str(model or ".onnx").lower().endswith(".onnx"):
        return  # a prebuilt engine: its shape is its own
    if getattr(args, "input_size", None) is None:
        raise ModelError("--dla-core builds an engine for one input shape: give --input-size HxW")
    if (getattr(args, "batch", 0) or 0) > 1:  # refused by the run only after a build of minutes
        raise ModelError(f"--dla-core builds an engine for one input shape, one frame a call: "
                         f"drop --batch {args.batch}")
    from engine.loader import tensorrt_usable

    if args.backend == "auto" and not tensorrt_usable():  # auto would pick ONNX Runtime
        raise ModelError("--dla-core runs a TensorRT engine, and TensorRT with a CUDA GPU (CuPy) "
                         "is not usable here: drop --dla-core, or run where it is")


# what a failed request costs: a run counts its frames and goes on, an evaluation ends
IN_A_RUN = ("costs its frames (counted in report.json) and the server is probed with the "
            "--reconnect back-off")
ENDS_THE_COMMAND = "ends the command with its error"


def add_triton_arguments(parser, failed_request: str = IN_A_RUN):
    """The --triton-* flags of a command that takes a triton:// --model, in a group it returns;
    `failed_request`: what a request that fails does in this command."""
    from ._validate import at_least

    tr = parser.add_argument_group("Triton Inference Server (--model triton://...)")
    tr.add_argument("--triton-shm", choices=("auto", "system", "cuda", "none"),
                    help="how tensors reach the server: system / CUDA shared memory (server on "
                         "this machine) or inside the gRPC messages; default auto: system "
                         "shared memory for 127.0.0.1 / localhost (if the server can map it), "
                         "else none")
    tr.add_argument("--triton-inflight", type=at_least(1),
                    help="requests in flight at once (default 2): the next batch is sent "
                         "while one is on its way")
    tr.add_argument("--triton-timeout", type=at_least(0.0, float, strict=True),
                    help=f"seconds allowed per request (default 60); a request that fails or "
                         f"times out {failed_request}")
    return tr


RECONNECT_DELAY_HELP = ("first back-off delay in seconds (doubles up to 8 s; 0: the first attempt "
                        "at once, then 0.2 s, 0.4 s, ...)")


def add_reconnect_arguments(group, reconnect_help: str, defaults: bool = True) -> None:
    """--reconnect N / --reconnect-delay S: the back-off of network streams and of a triton://
    model's server (dbrt run), or of the server alone (dbrt eval, whose flags stay None unless
    given, so that one given without a triton:// model is refused: check_model_reconnect)."""
    from engine.triton.options import TritonOptions

    from ._validate import at_least

    group.add_argument("--reconnect", type=at_least(-1),
                       default=TritonOptions.retries if defaults else None,
                       help=f"{reconnect_help} (default {TritonOptions.retries})")
    group.add_argument("--reconnect-delay", type=at_least(0.0, float),
                       default=TritonOptions.delay if defaults else None,
                       help=f"{RECONNECT_DELAY_HELP} (default {TritonOptions.delay:g})")


def check_model_reconnect(args) -> None:
    """--reconnect / --reconnect-delay of a command whose only reconnecting is the model
    server's: refused without a triton:// --model (rather than ignored)."""
    from engine.errors import ModelError
    from engine.triton.options import is_triton_url

    if is_triton_url(getattr(args, "model", None)):
        return
    for flag, value in (("--reconnect", args.reconnect), ("--reconnect-delay", args.reconnect_delay)):
        if value is not None:
            raise ModelError(f"{flag} applies to a triton://HOST:PORT/NAME --model only (the "
                             "wait for its server)")


def triton_options(args):
    """TritonOptions for a triton:// --model (None otherwise; a --triton-* flag without one is
    an error naming the flag). `args.stopping`, where a command sets it (StartSignals.stopping),
    is the Event that ends the wait for a server not up yet."""
    from engine.errors import ModelError
    from engine.triton.options import TritonOptions, is_triton_url

    asked = {name: getattr(args, name, None) for name in TRITON_FLAGS}
    asked = {name: value for name, value in asked.items() if value is not None}
    if not is_triton_url(getattr(args, "model", None)):
        if asked:
            flag = TRITON_FLAGS[sorted(asked)[0]]
            raise ModelError(f"{flag} applies to a triton://HOST:PORT/NAME --model only")
        return None
    settings = dict(shm=asked.get("triton_shm", "auto"),
                    inflight=asked.get("triton_inflight", TritonOptions.inflight),
                    timeout=asked.get("triton_timeout", TritonOptions.timeout),
                    stop=getattr(args, "stopping", None))
    retries = getattr(args, "reconnect", None)
    if retries is not None:  # dbrt run: the live sources' reconnect policy serves the server too
        settings.update(retries=None if retries < 0 else retries)
    if getattr(args, "reconnect_delay", None) is not None:
        settings.update(delay=args.reconnect_delay)
    return TritonOptions(**settings)


def spec_changes(args) -> dict:
    """The ModelSpec fields the flags set: resize rule and post-processing (None: keep)."""
    from engine.errors import ModelError

    names = ("limit_side", "limit_type", "thresh", "box_thresh", "unclip_ratio", "box_type")
    changes = {name: getattr(args, name, None) for name in names}
    _check_resize_flags(args, changes)
    if getattr(args, "max_side", None):
        for name in ("limit_side", "limit_type"):
            if changes[name] is not None:
                raise ModelError(f"--max-side N is --limit-side N --limit-type max: give one "
                                 f"or the other, not --max-side with --{name.replace('_', '-')}")
        changes.update(limit_side=args.max_side, limit_type="max")
    if getattr(args, "keep_aspect", False):
        changes["keep_aspect"] = True
    return {k: v for k, v in changes.items() if v is not None}


def _check_resize_flags(args, changes: dict) -> None:
    """--input-size fixes the network input for every frame, so the resize rule (--max-side,
    --limit-side, --limit-type) would be ignored: refused instead."""
    from engine.errors import ModelError

    if getattr(args, "input_size", None) is None:
        return
    rule = [flag for flag, given in (("--max-side", getattr(args, "max_side", None)),
                                     ("--limit-side", changes["limit_side"]),
                                     ("--limit-type", changes["limit_type"])) if given is not None]
    if rule:
        raise ModelError(f"--input-size fixes every frame's network input, so the resize rule "
                         f"of {rule[0]} would be ignored: give --input-size or {rule[0]}, not both")


def build_detector(args):
    """The Detector the flags describe: --model / --backend / --device / --preset / --input-size,
    runner options and the changes to the model's own ModelSpec."""
    from pipeline.detector import Detector

    changes = spec_changes(args)
    return Detector(args.model, (lambda spec: spec.replace(**changes)) if changes else None,
                    preset=args.preset, input_size=getattr(args, "input_size", None),
                    backend=args.backend, device=args.device, options=runner_options(args),
                    read=build_recognizer(args), roi=getattr(args, "roi", None),
                    ignore=getattr(args, "ignore", None))


def build_recognizer(args):
    """The Recognizer of --read / --rec-model / --rec-dict / --rec-margin and the --rec-cls
    flags (each implies --read); None when the command does not read."""
    model, charset = getattr(args, "rec_model", None), getattr(args, "rec_dict", None)
    margin = getattr(args, "rec_margin", None)
    if not (getattr(args, "read", False) or model or charset or margin is not None
            or direction_asked(args)):
        return None
    from pipeline.reading import Recognizer
    from pipeline.reading.spec import preset

    _check_reading_files(model, charset, getattr(args, "rec_cls_model", None))
    spec = None if margin is None else preset("ppocr").replace(margin=margin)
    device = args.device if args.device in ("cpu", "cuda") else "auto"
    options = _recognizer_options(args)
    direction = _direction_classifier(args, device, options)
    try:
        return Recognizer(model, charset, spec=spec, backend=args.backend, device=device,
                          options=options, direction=direction)
    except BaseException:
        if direction is not None:
            direction.close()
        raise


def direction_asked(args) -> bool:
    """Whether any of --rec-cls / --rec-cls-model / --rec-cls-thresh was given."""
    return bool(getattr(args, "rec_cls", False) or getattr(args, "rec_cls_model", None)
                or getattr(args, "rec_cls_thresh", None) is not None)


def _direction_classifier(args, device: str, options):
    """The DirectionClassifier of the --rec-cls flags (None without them); a model that is
    not a 0/180 classifier is an error naming --rec-cls-model."""
    if not direction_asked(args):
        return None
    from engine.errors import ModelError
    from pipeline.reading.direction import DEFAULT_THRESH, DirectionClassifier

    model, thresh = getattr(args, "rec_cls_model", None), getattr(args, "rec_cls_thresh", None)
    try:
        return DirectionClassifier(model, thresh=DEFAULT_THRESH if thresh is None else thresh,
                                   backend=args.backend, device=device, options=options)
    except ModelError as error:
        if model is None:
            raise
        raise ModelError(f"--rec-cls-model {model}: {error}") from None


def _recognizer_options(args):
    """--threads / --ort-spin for the recognizer's ONNX Runtime session too: it took ONNX
    Runtime's default threads (every core) whatever --threads said. None when neither is given:
    the Recognizer's defaults (idle threads sleep beside the detector's session)."""
    threads, spin = getattr(args, "threads", 0) or 0, getattr(args, "ort_spin", None)
    if not threads and spin is None:
        return None
    from engine.loader import RunnerOptions

    return RunnerOptions(threads=threads, spin=False if spin is None else spin == "on")


def _check_reading_files(model, charset, cls_model=None) -> None:
    """--rec-model / --rec-dict / --rec-cls-model named in the error: the loader's 'model file
    not found' did not say which of the run's models, and a folder was said to be 'not found'."""
    from pathlib import Path

    from engine.errors import DbrtError
    from engine.triton.options import is_triton_url

    for flag, path in (("--rec-model", model), ("--rec-dict", charset),
                       ("--rec-cls-model", cls_model)):
        if path is None or is_triton_url(path):
            continue
        if Path(path).is_dir():
            raise DbrtError(f"{flag} {path} is a folder, expected a file")
        if not Path(path).is_file():
            raise DbrtError(f"{flag} {path}: file not found")
