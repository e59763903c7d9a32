"""`dbrt bench`: the benchmarks of benchmarks/ (model-only, pipeline, post-processing, all)."""
from __future__ import annotations

import argparse

NAME = "bench"
HELP = "benchmark the model alone, the full pipeline, the post-processing or accuracy (results/<machine>/)"
ORDER = 40
DESCRIPTION = """Run a benchmark and write JSON + markdown + PNG plots under
benchmarks/results/<machine>/ (benchmarks/README.md says what each timed region contains).
'model' sweeps backend x precision x batch x input size with PyTorch beside ONNX Runtime;
'pipeline' runs the threaded pipeline on a video (per-stage times, ratio to inference alone);
'postprocess' compares the DB post-processing with the reference on the same maps; 'accuracy'
scores the shipped model on ../shared/data/realdev; 'peer' runs the PP-OCR det model of the
rapidocr package by RapidOCR and by dbrt side by side (needs `pip install rapidocr`); 'all'
runs accuracy, model, pipeline, postprocess and the peer accuracy comparison (the shipped model
against RapidOCR's own detector, benchmarks.peer_accuracy), each in its own process, and writes
an index.md. Arguments after WHICH go to
the benchmark itself, e.g. `dbrt bench model --sizes 320 640 --batches 1 8` or `dbrt bench all --quick`;
`dbrt bench model --help` lists them."""

MODULES = {
    "accuracy": "benchmarks.accuracy",
    "model": "benchmarks.model_bench",
    "pipeline": "benchmarks.pipeline_overlap",
    "postprocess": "benchmarks.postprocess_bench",
    "peer": "benchmarks.peer_rapidocr",
    "all": "benchmarks.run_all",
}


def add_arguments(parser) -> None:
    parser.add_argument("which", nargs="?", choices=list(MODULES), help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for that benchmark")


def run(args) -> int:
    import importlib

    from engine.errors import DbrtError

    if args.which is None:
        raise DbrtError(f"name a benchmark: {', '.join(MODULES)} (dbrt bench --help)")
    name = MODULES[args.which]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == "benchmarks":
            raise DbrtError("`dbrt bench` runs from a dbrt source checkout: the benchmarks/ folder "
                            "is not part of the installed package") from None
        if exc.name == name:
            raise DbrtError(f"{name.replace('.', '/')}.py is not in this checkout") from None
        raise
    common = importlib.import_module("benchmarks.common")
    common.invoked_as[name] = f"dbrt bench {args.which}"   # its usage and errors name this command
    try:
        return int(module.main(list(args.args)) or 0)
    finally:
        common.invoked_as.pop(name, None)
