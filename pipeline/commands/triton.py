"""`dbrt triton`: serve detection from NVIDIA Triton Inference Server.

`dbrt triton export` writes a model repository (the network, optionally chained with DB
post-processing); `dbrt triton serve` starts the pip wheel's server on one for a CPU trial.
"""
from __future__ import annotations

from ._validate import at_least, between

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
    serve = sub.add_parser("serve", help="start tritonserver (pip wheel) on a repository",
                           formatter_class=parser.formatter_class)
    _serve_arguments(serve)


def _serve_arguments(parser) -> None:
    parser.add_argument("repository", help="model repository folder (dbrt triton export -o)")
    parser.add_argument("--venv", default=".venv-triton",
                        help="virtual environment with nvidia-pytriton (make triton-venv)")
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
    return _serve(args)


def _serve(args) -> int:
    """Start the server, print its addresses and wait; Ctrl-C or SIGTERM stops it (exit 130 /
    143), and so does the server dying (one error line with its last error)."""
    import signal
    import time

    from engine.triton.server import TritonServer, TritonServerError
    from pipeline.interrupts import Interrupted

    server = TritonServer(args.repository, venv=args.venv, host=args.host,
                          http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, models=args.models,
                          ready_timeout=args.ready_timeout, verbose=args.verbose)

    def terminate(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with server:
            print(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}, "
                  f"metrics {server.metrics_url}; log {server.log_path} (Ctrl-C stops it)",
                  flush=True)
            while server.process.poll() is None:
                time.sleep(0.5)
            raise TritonServerError(f"tritonserver exited with code {server.process.returncode}: "
                                    f"{server.log_tail()}")
    finally:
        signal.signal(signal.SIGTERM, previous)
