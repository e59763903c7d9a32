"""The targets of the model-only benchmark (benchmarks/model_bench.py): one (backend, device,
precision) each, whose `prepare(batch)` gives the timed call and a fetch of its probability map.

PyTorch (CPU; CUDA fp32 / fp16 on a GPU) and ONNX Runtime (CPU, its precision variants; its
CUDA provider when onnxruntime-gpu is installed) everywhere. Where TensorRT and a CUDA GPU are
usable, one TensorRT target per precision it can build: FP32 and FP16 (the builder flag on
8.6 / 10.x, the FP16 ONNX on 11.x, which builds strongly typed networks only) and INT8 from the
Q/DQ ONNX when `--precisions int8` made one.
Each input size gets an engine of its own whose profile is that size, batch 1..max, tuned for
the largest batch (as `trtexec --shapes` would time it), built once through dbrt's engine cache
(`~/.cache/dbrt/engines`), so a rerun times without rebuilding. The timed region is
`TensorRTRunner.infer` on an input already on the GPU, outputs left there, stream synchronised
(ONNX Runtime's CUDA provider, by contrast, is given host arrays: its rows include that copy).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from engine.lazy import optional


# -- ONNX Runtime and PyTorch ---------------------------------------------

@dataclass
class Target:
    backend: str
    device: str
    precision: str
    # prepare(batch_np) -> (run, fetch): run() is timed, fetch() -> NumPy prob map of the last run
    prepare: Callable[[np.ndarray], Tuple[Callable[[], object], Callable[[], np.ndarray]]]
    sync: Optional[Callable[[], None]] = None
    close: Optional[Callable[[], None]] = None
    sizes: Optional[Sequence[Tuple[int, int]]] = None  # the sweep's sizes it runs (None: all)

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.device}/{self.precision}"


def onnxruntime_target(path: Path, device: str = "cpu", precision: str = "fp32", threads: int = 0) -> Target:
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, device=device, threads=threads).activate()
    holder = {}

    def prepare(batch):
        feed = {runner.input_names[0]: batch}

        def run():
            holder["out"] = runner.infer(feed)
        return run, lambda: np.asarray(holder["out"][runner.output_names[0]], np.float32)

    return Target("onnxruntime", device, precision, prepare, close=runner.deactivate)


def pytorch_target(net, device: str = "cpu", precision: str = "fp32") -> Target:
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "fp16":
        from export.torch_runner import fold_batchnorm

        net = fold_batchnorm(net)
    module = net.to(device=device, dtype=dtype).eval()
    holder = {}

    def prepare(batch):
        x = torch.from_numpy(batch).to(device=device, dtype=dtype)

        def run():
            with torch.inference_mode():
                holder["out"] = module(x)
        return run, lambda: holder["out"].float().cpu().numpy()

    sync = torch.cuda.synchronize if device == "cuda" else None
    return Target("pytorch", device, precision, prepare, sync=sync,
                  close=lambda: module.to(device="cpu", dtype=torch.float32))


def default_targets(mut, threads: int = 0, variants: Optional[Dict[str, Path]] = None,
                    batches: Sequence[int] = (1,), log: Callable[[str], None] = print,
                    tensorrt_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                    dla_core: Optional[int] = None) -> List[Target]:
    """Everything this machine can run: PyTorch CPU fp32 (the baseline), ORT CPU fp32 and any
    extra ORT precision variants (fp16 / int8 ONNX files); on CUDA also PyTorch fp32 / fp16 and
    ORT's CUDA provider when onnxruntime-gpu is installed; TensorRT (and a DLA core) last."""
    from engine.onnxruntime.runner import available_providers

    torch = optional("torch")
    targets = []
    if mut.torch_model is not None:
        if threads:
            torch.set_num_threads(threads)
        targets.append(pytorch_target(mut.torch_model, "cpu", "fp32"))
    targets.append(onnxruntime_target(mut.onnx, "cpu", "fp32", threads))
    for precision, path in (variants or {}).items():
        targets.append(onnxruntime_target(Path(path), "cpu", precision, threads))
    if torch is not None and mut.torch_model is not None and torch.cuda.is_available():
        import copy

        for precision in ("fp32", "fp16"):
            targets.append(pytorch_target(copy.deepcopy(mut.torch_model), "cuda", precision))
    if "CUDAExecutionProvider" in available_providers():
        targets.append(onnxruntime_target(mut.onnx, "cuda", "fp32"))
    return targets + tensorrt_targets(mut.onnx, variants or {}, batches, log, tensorrt_sizes,
                                      dla_core)


# -- TensorRT

def engine_plans(weak_typing: bool, onnx: Path, variants: Mapping[str, Path]) -> List[Tuple[str, Path, str]]:
    """(precision, ONNX to build from, build precision) for each engine this TensorRT can make."""
    plans = [("fp32", Path(onnx), "fp32")]
    if weak_typing:
        plans.append(("fp16", Path(onnx), "fp16"))          # trtexec --fp16
    elif "fp16" in variants:
        plans.append(("fp16", Path(variants["fp16"]), "auto"))
    if "int8" in variants:
        plans.append(("int8", Path(variants["int8"]), "auto"))  # explicit Q/DQ: its own scales
    return plans


def tensorrt_target(onnx: Path, precision: str, build_precision: str, max_batch: int,
                    log: Callable[[str], None] = print, sizes=None, dla_core: Optional[int] = None):
    """A model_bench Target whose engines (one per input size, batch 1..max_batch; on a DLA
    core, which runs one shape, one per size and batch) are built on first use."""
    from engine.shapes import ShapeProfile
    from engine.tensorrt.cache import cached_engine_path, cached_engine_runner
    from engine.tensorrt.build import BuildOptions

    runners: Dict[Tuple[int, ...], object] = {}  # the current shape's (one engine held at a time)
    failed: Dict[Tuple[int, ...], Exception] = {}  # a build that failed is not tried again
    holder = {}

    def runner_for(shape: Tuple[int, ...]):
        key = tuple(shape) if dla_core is not None else tuple(shape[2:])
        if key in failed:
            raise failed[key]
        if key not in runners:
            close()  # the sweep is done with the previous size: free its engine and buffers
            size = tuple(shape[2:])
            if dla_core is None:
                profile, what = ShapeProfile.from_hw(size, size, size, batch=(1, max_batch, max_batch)), \
                    f"batch 1..{max_batch}"
            else:
                profile, what = ShapeProfile.static(shape), f"batch {shape[0]} on DLA core {dla_core}"
            options = dict(precision=build_precision, profile=profile, dla_core=dla_core)
            if not cached_engine_path(onnx, BuildOptions(**options)).is_file():
                log(f"  building the TensorRT {precision} engine for {size[0]}x{size[1]}, "
                    f"{what} (once: cached)")
            try:
                runners[key] = cached_engine_runner(onnx, **options).activate()
            except Exception as exc:  # noqa: BLE001 - reported as this shape's rows, once
                failed[key] = exc
                raise
        return runners[key]

    def prepare(batch: np.ndarray):
        runner = runner_for(batch.shape)
        backend = runner.backend
        device_batch = backend.empty(batch.shape, np.float32)
        stream = backend.stream()
        backend.copy_into(device_batch, batch, stream)
        backend.synchronize(stream)
        feed = {runner.input_names[0]: device_batch}

        def run():
            holder["out"] = runner.infer(feed)  # synchronised: outputs complete on return
        return run, lambda: np.asarray(backend.to_host(holder["out"][runner.output_names[0]]),
                                       np.float32)

    def close():
        for runner in runners.values():
            runner.deactivate()
        runners.clear()

    device = "cuda" if dla_core is None else f"dla{dla_core}"
    return Target("tensorrt", device, precision, prepare, close=close, sizes=sizes)


def tensorrt_targets(onnx: Path, variants: Mapping[str, Path], batches: Sequence[int],
                     log: Callable[[str], None] = print,
                     sizes: Optional[Sequence[Tuple[int, int]]] = None,
                     dla_core: Optional[int] = None) -> List[Target]:
    """The TensorRT targets this machine can run (none without TensorRT and a usable GPU, or
    when `sizes` is empty; None: every size of the sweep); with `dla_core`, also the FP16 /
    INT8 engines on that Jetson DLA core."""
    from engine.loader import tensorrt_usable
    from engine.tensorrt import require_tensorrt
    from engine.tensorrt.build import has_weak_typing

    if (sizes is not None and not sizes) or not tensorrt_usable():
        return []
    trt = require_tensorrt()
    plans = engine_plans(has_weak_typing(trt), onnx, variants)
    targets = [tensorrt_target(path, precision, build, max(batches), log, sizes)
               for precision, path, build in plans]
    if dla_core is not None:  # the DLA computes in FP16 / INT8 only
        targets += [tensorrt_target(path, precision, build, max(batches), log, sizes, dla_core)
                    for precision, path, build in plans if precision != "fp32"]
    return targets
