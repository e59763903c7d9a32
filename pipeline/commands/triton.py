"""`dbrt triton`: serve detection from NVIDIA Triton Inference Server.

`dbrt triton export` writes a model repository (the network, optionally chained with DB
post-processing); `dbrt triton serve` starts the pip wheel's server on one for a CPU trial.
"""
from __future__ import annotations

from ._validate import at_least, between, input_size, output_folder, side_length, zero_to_one

NAME = "triton"
HELP = "export a Triton model repository, or serve one locally for a CPU trial"
ORDER = 45
DESCRIPTION = """Scale out on Triton Inference Server. `dbrt triton export` writes a model
repository for a DBNet (--backend onnx: ONNX Runtime in a Python-backend model, any host;
--backend tensorrt: a TensorRT plan, GPUs), with dynamic batching and dbrt's model metadata in the
config parameters; --with-postprocess adds an ensemble that returns polygons and scores.
`dbrt triton serve` runs the tritonserver of the nvidia-pytriton wheel (Python backend only, a
virtual environment of its own: `make triton-venv`) on a repository, on loopback ports."""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="triton_command", metavar="ACTION")
    sub.required = True
    export = sub.add_parser("export", help="write a Triton model repository for a DBNet",
                            formatter_class=parser.formatter_class)
    _export_arguments(export)
    serve = sub.add_parser("serve", help="start tritonserver (pip wheel) on a repository",
                           formatter_class=parser.formatter_class)
    _serve_arguments(serve)


def _export_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", help="ONNX model; default: the shipped model")
    parser.add_argument("-o", "--output", required=True, type=output_folder, metavar="REPO",
                        help="model repository folder (created; models of the same names replaced)")
    parser.add_argument("--name", default="dbnet", help="model name in the repository")
    parser.add_argument("--backend", choices=("onnx", "tensorrt"), default="onnx",
                        help="onnx: ONNX Runtime in a Python-backend model (CPU, any server); "
                             "tensorrt: build a TensorRT plan on this GPU")
    parser.add_argument("--preset", help="pre/post-processing preset for foreign models")
    batching = parser.add_argument_group("batching and instances")
    batching.add_argument("--max-batch", type=between(1, 1024), default=8,
                          help="largest batch the server forms")
    batching.add_argument("--preferred-batch", type=at_least(1), nargs="+", metavar="N",
                          help="batch sizes the dynamic batcher aims for (none given: --max-batch)")
    batching.add_argument("--queue-delay-us", type=at_least(0), default=2000,
                          help="how long a request may wait for others (microseconds)")
    batching.add_argument("--instances", type=at_least(1), default=1,
                          help="model instances (CPU: processes; GPU: engine copies)")
    batching.add_argument("--threads", type=at_least(0), default=0,
                          help="ONNX Runtime threads per instance (0: its default)")
    model = parser.add_argument_group("model options stored in the config (default: the model's)")
    model.add_argument("--input-size", type=input_size,
                       help="tensorrt: fix the engine's input HxW (enables CUDA graphs)")
    model.add_argument("--limit-side", type=side_length, help="the resize rule's side length")
    model.add_argument("--thresh", type=zero_to_one, help="binarisation threshold")
    model.add_argument("--box-thresh", type=zero_to_one, help="minimum mean probability of a box")
    model.add_argument("--unclip-ratio", type=at_least(0.0, float), help="box expansion ratio")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="add DB post-processing and an ensemble NAME_detect returning "
                             "polygons and scores")


def _serve_arguments(parser) -> None:
    parser.add_argument("repository", help="model repository folder (dbrt triton export -o)")
    parser.add_argument("--venv",
                        help="virtual environment with nvidia-pytriton (default: .venv-triton here, "
                             "else the one make triton-venv made in dbrt's checkout)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface)")
    for name, port in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        parser.add_argument(f"--{name}-port", type=between(0, 65535), default=port,
                            help=f"{name} port (0: a free one)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="load only this model (repeatable); default: every model")
    parser.add_argument("--ready-timeout", type=at_least(1.0, float), default=120.0,
                        help="seconds to wait for the server to be ready")
    parser.add_argument("--verbose", type=at_least(0), default=0, help="tritonserver --log-verbose")


def run(args) -> int:
    return _serve(args) if args.triton_command == "serve" else _export(args)


def _export(args) -> int:
    from dbnet.spec import resolve_spec
    from engine.errors import DbrtError
    from engine.onnx_info import summarize_onnx
    from engine.triton.repository import Scheduling
    from pipeline.shipped import default_model_path
    from pipeline.triton.repository import TritonExport, export_repository

    from ._model import spec_changes

    if args.input_size and args.backend != "tensorrt":
        raise DbrtError("--input-size fixes a TensorRT engine's shape; it needs --backend tensorrt")
    if args.threads and args.backend != "onnx":
        raise DbrtError("--threads sets ONNX Runtime's threads; TensorRT (--backend tensorrt) has none")
    model = args.model or default_model_path()
    if not str(model).endswith(".onnx"):
        raise DbrtError(f"{model}: expected an ONNX model (.onnx); the TensorRT plan is built "
                        "from it with --backend tensorrt")
    summary = summarize_onnx(model)
    spec = resolve_spec(summary.metadata, args.preset)
    changes = spec_changes(args)
    spec = spec.replace(**changes) if changes else spec
    scheduling = Scheduling(args.max_batch, tuple(args.preferred_batch or (args.max_batch,)),
                            args.queue_delay_us, args.instances,
                            "KIND_GPU" if args.backend == "tensorrt" else "KIND_CPU")
    export = TritonExport(args.name, args.backend, scheduling, args.threads,
                          args.with_postprocess, args.input_size)
    for folder in export_repository(args.output, summary, spec, export):
        print(f"{folder}")
    print(f"repository {args.output}: serve it with tritonserver --model-repository=... "
          f"(or dbrt triton serve {args.output}); clients use triton://HOST:8001/{args.name}")
    return 0


def _ended(code: int, log_tail: str) -> str:
    """How the server ended: a signal from outside (its log says nothing of it), or its code
    and its last error."""
    import signal

    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"tritonserver was killed by {name} (not by this command)"
    return f"tritonserver exited with code {code}: {log_tail}"


def _serve(args) -> int:
    """Start the server, print its addresses and wait; Ctrl-C or SIGTERM stops it (exit 130 /
    143), and so does the server dying (one error line with its last error)."""
    import signal
    import time

    from engine.signals import ignored
    from engine.triton.server import TritonServer, TritonServerError
    from pipeline.interrupts import Interrupted

    server = TritonServer(args.repository, venv=args.venv, host=args.host,
                          http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, models=args.models,
                          ready_timeout=args.ready_timeout, verbose=args.verbose)

    def terminate(signum, frame):
        raise Interrupted(signum)

    # an ignored SIGTERM (`trap '' TERM`, a wrapper) was asked for: it stays so
    kept = ignored(signal.SIGTERM)
    previous = None if kept else signal.signal(signal.SIGTERM, terminate)
    try:
        with server:
            where = "" if server.grpc_url.startswith(f"{args.host}:") else f" (listening on {args.host})"
            print(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}, "
                  f"metrics {server.metrics_url}{where}; log {server.log_path} (Ctrl-C stops it)",
                  flush=True)
            while server.process.poll() is None:
                time.sleep(0.5)
            raise TritonServerError(_ended(server.process.returncode, server.log_tail()))
    finally:
        if not kept:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
