"""MhLiao/DB parity: `dbrt export` of a checkpoint written by MhLiao/DB's own model reproduces that
model's eval-mode probability map.

    git clone https://github.com/MhLiao/DB ../MhLiao-DB       # their public repository, as is
    python -m benchmarks.mhliao_parity --snapshot ../MhLiao-DB  # or DBRT_MHLIAO_DB=../MhLiao-DB

Nothing of theirs is copied into dbrt: their `structure.model.SegDetectorModel` (ResNet backbone,
`SegDetector` decoder, DataParallel wrapper) is imported from the snapshot at run time and built
with the arguments of their experiment files (adaptive thresholds, k = 50). Their deformable
convolution is a compiled CUDA extension, so `benchmarks.mhliao_dcn_standin` stands in for it
with a pure-PyTorch transcription of the kernel. For resnet18 / deformable_resnet18 / resnet50 /
deformable_resnet50 the harness
1. gives the model random weights, BatchNorm affine parameters and offset convolutions, sets the
   BatchNorm statistics from calibration batches and then perturbs them (randomised, but the
   maps stay informative instead of saturating);
2. saves `state_dict()` exactly as their ModelSaver does (keys `model.module.*`, including their
   ResNet's unused `fc` / `smooth` tensors);
3. runs `dbrt export CKPT -o X.onnx` (the CLI, with its own ONNX-vs-PyTorch parity check);
4. compares the ONNX Runtime output of X.onnx with their model's eval-mode output on the same
   inputs (two shapes, batch 1 and 2): max abs difference must be <= 1e-4.
Without a snapshot it says so and exits 77 (skipped). Results: `results/<machine>/mhliao_parity.{json,md}`.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.common import (REPO, SKIPPED, argument_parser, machine_info, markdown_table,
                               results_dir, write_json, write_markdown)

CONFIGS: Dict[str, List[int]] = {  # backbone -> SegDetector in_channels, as in their experiments/
    "resnet18": [64, 128, 256, 512],
    "deformable_resnet18": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "deformable_resnet50": [256, 512, 1024, 2048],
}
SHAPES = ((1, 3, 256, 320), (2, 3, 224, 160))
ATOL = 1e-4
OFFSET_GAIN = 0.3  # std of the random offset convs' weights, times 1 / sqrt(fan in)
ENV = "DBRT_MHLIAO_DB"
DEFAULT_SNAPSHOT = REPO.parent / "shared" / "MhLiao-DB"
THEIR_FILES = ("backbones/resnet.py", "decoders/seg_detector.py", "structure/model.py",
               "assets/ops/dcn/functions/deform_conv.py", "assets/ops/dcn/modules/deform_conv.py",
               "assets/ops/dcn/src/deform_conv_cuda_kernel.cu")
NAME = "mhliao_parity"


def find_snapshot(given: Optional[str]) -> Path:
    return Path(given or os.environ.get(ENV) or DEFAULT_SNAPSHOT).expanduser().resolve()


def is_snapshot(path: Path) -> bool:
    return all((path / name).is_file() for name in THEIR_FILES[:4])


def snapshot_identity(path: Path) -> dict:
    """Their commit (when the snapshot is a git checkout) and hashes of the files the harness uses."""
    out = {"path": str(path), "files_sha256": {}}
    for name in THEIR_FILES:
        if (path / name).is_file():
            out["files_sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()[:16]
    try:
        out["commit"] = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["commit"] = None
    return out


def import_their_model(snapshot: Path):
    """Their SegDetectorModel class, imported from the snapshot with the DCN stand-in installed."""
    from benchmarks import mhliao_dcn_standin

    mhliao_dcn_standin.install()
    sys.path.insert(0, str(snapshot))
    from structure.model import SegDetectorModel  # noqa: E402  (their module)

    return SegDetectorModel


def build_their_model(model_class, backbone: str):
    import torch

    args = {"backbone": backbone, "backbone_args": {"pretrained": False}, "decoder": "SegDetector",
            "decoder_args": {"adaptive": True, "in_channels": CONFIGS[backbone], "k": 50},
            "loss_class": "L1BalanceCELoss"}
    return model_class(args, torch.device("cpu"))


def randomise(model, seed: int, calibration: Sequence[np.ndarray]) -> dict:
    """Random BN affine parameters and offset convs, BN statistics from data then perturbed, the
    final logit rescaled to a spread of ~2: a map with information in it, not 0 / 1 everywhere."""
    import torch
    from torch import nn

    from benchmarks.mhliao_dcn_standin import cpu_passes_their_cuda_guard

    gen = torch.Generator().manual_seed(seed)
    net = model.model.module  # their BasicModel inside DataParallel
    batchnorms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        # small residual branches, as in trained ResNets: with every gamma near 1 the random
        # network amplifies float32 rounding past 1e-4 (BatchNorm ResNets at initialisation do)
        branch_ends = _residual_branch_ends(net)
        for bn in batchnorms:
            low, high = (0.1, 0.4) if id(bn) in branch_ends else (0.5, 1.5)
            bn.weight.uniform_(low, high, generator=gen)
            bn.bias.normal_(0.0, 0.2, generator=gen)
            bn.momentum = None  # running stats = plain average over the calibration batches
            bn.reset_running_stats()
        offsets = [m for name, m in net.named_modules() if name.endswith("conv2_offset")]
        for conv in offsets:  # offsets of about a pixel, varying from place to place; much
            # steeper offset convs make even their float32 model differ from its float64 self
            fan_in = conv.weight[0].numel()
            conv.weight.normal_(0.0, OFFSET_GAIN / fan_in ** 0.5, generator=gen)
            conv.bias.normal_(0.0, 1.0, generator=gen)
        net.train()
        with cpu_passes_their_cuda_guard():
            for batch in calibration:
                net(torch.from_numpy(batch), training=True)
        net.eval()
        for bn in batchnorms:
            std = bn.running_var.sqrt()
            bn.running_mean += 0.2 * std * torch.randn(std.shape, generator=gen)
            bn.running_var *= torch.empty(std.shape).uniform_(0.6, 1.6, generator=gen)
        logit_scale = _rescale_final_logit(net, calibration[0])
    return {"batchnorms": len(batchnorms), "offset_convs": len(offsets), "logit_rescale": logit_scale}


def _residual_branch_ends(net) -> set:
    """ids of the BatchNorms closing a residual branch (bn2 of a BasicBlock, bn3 of a Bottleneck)."""
    from torch import nn

    ends = set()
    for name, block in net.backbone.named_modules():
        if name.count(".") == 1 and name.startswith("layer"):  # layerN.M: one block
            norms = [m for child, m in block.named_children()
                     if child.startswith("bn") and isinstance(m, nn.BatchNorm2d)]
            ends.add(id(norms[-1]))
    return ends


def _rescale_final_logit(net, batch: np.ndarray) -> float:
    import torch

    from benchmarks.mhliao_dcn_standin import cpu_passes_their_cuda_guard

    last = net.decoder.binarize[6]  # ConvTranspose2d(inner // 4, 1): the logit before Sigmoid
    seen = {}
    handle = last.register_forward_hook(lambda _m, _i, out: seen.setdefault("z", out.detach()))
    with cpu_passes_their_cuda_guard():
        net(torch.from_numpy(batch), training=False)
    handle.remove()
    mean, std = float(seen["z"].mean()), float(seen["z"].std())
    scale = 2.0 / max(std, 1e-6)
    last.weight.mul_(scale)
    last.bias.sub_(mean).mul_(scale)
    return scale


def their_prob(model, batch: np.ndarray) -> np.ndarray:
    import torch

    from benchmarks.mhliao_dcn_standin import cpu_passes_their_cuda_guard

    model.eval()
    with torch.no_grad(), cpu_passes_their_cuda_guard():
        return model(torch.from_numpy(batch), training=False).numpy()


def their_float64_prob(model, batch: np.ndarray) -> np.ndarray:
    """Their network in float64 (their SegDetectorModel casts inputs to float32, so the inner
    BasicModel is called): the float32 rounding noise of the model itself, for scale."""
    import torch

    from benchmarks.mhliao_dcn_standin import cpu_passes_their_cuda_guard

    net = model.model.double().eval()
    try:
        with torch.no_grad(), cpu_passes_their_cuda_guard():
            return net(torch.from_numpy(batch).double(), training=False).numpy()
    finally:
        net.float()


def offset_magnitudes(model, batch: np.ndarray) -> Optional[dict]:
    """Mean and max |offset| (pixels) their offset convs produce on `batch`; None without DCN."""
    import torch

    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out[:, :18].abs()))
             for name, m in model.named_modules() if name.endswith("conv2_offset")]
    if not hooks:
        return None
    their_prob(model, batch)
    for hook in hooks:
        hook.remove()
    return {"mean_abs_px": round(float(torch.cat([t.flatten() for t in seen]).mean()), 3),
            "max_abs_px": round(float(max(t.max() for t in seen)), 3)}


def dbrt_export(checkpoint: Path, onnx_path: Path) -> List[str]:
    """`dbrt export CHECKPOINT -o ONNX` through the CLI entry point; its output lines."""
    from pipeline.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        status = main(["export", str(checkpoint), "-o", str(onnx_path)])
    lines = buffer.getvalue().splitlines()
    if status != 0:
        raise RuntimeError(f"dbrt export exited {status}:\n" + "\n".join(lines))
    return lines


def onnx_prob(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(str(onnx_path), device="cpu", threads=1) as runner:
        return next(iter(runner.infer({"images": batch}).values()))


def dbrt_torch_prob(checkpoint: Path, batch: np.ndarray) -> np.ndarray:
    import torch

    from export.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def strided_offsets_prob(checkpoint: Path, batch: np.ndarray) -> Optional[np.ndarray]:
    """dbrt's model with the textbook reading of a stride-2 DCN (offsets from a stride-2 conv), to
    show what reproducing their kernel's reading is worth; None where no block has one."""
    import torch

    from export.checkpoint import model_from_checkpoint
    from export.model import Bottleneck

    model, _ = model_from_checkpoint(checkpoint)
    blocks = [m for m in model.modules()
              if isinstance(m, Bottleneck) and m.with_dcn and m.conv2.stride != (1, 1)]
    for block in blocks:  # offset map now (Ho, Wo): as_kernel_reads leaves it as it is
        block.conv2_offset.stride = block.conv2.stride
    if not blocks:
        return None
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def run_config(model_class, backbone: str, seed: int, workdir: Path) -> dict:
    import torch

    from dbnet.spec import ModelSpec
    from export.onnx_export import sample_inputs

    torch.manual_seed(seed)
    started = time.perf_counter()
    model = build_their_model(model_class, backbone)
    spec = ModelSpec()
    setup = randomise(model, seed, sample_inputs(spec, [(2, 3, 256, 256)] * 2, seed=seed + 100))
    checkpoint = workdir / f"{backbone}.pth"
    state = model.state_dict()
    torch.save(state, checkpoint)  # as their training/model_saver.py does
    onnx_path = workdir / f"{backbone}.onnx"
    lines = dbrt_export(checkpoint, onnx_path)
    rows = []
    for batch in sample_inputs(spec, SHAPES, seed=seed + 200):
        ref = their_prob(model, batch).astype(np.float64)
        got = onnx_prob(onnx_path, batch)
        if got.shape != ref.shape:
            raise RuntimeError(f"{backbone}: dbrt ONNX output {got.shape} vs theirs {ref.shape}")
        torch_diff = np.abs(dbrt_torch_prob(checkpoint, batch) - ref).max()
        rows.append({"shape": "x".join(map(str, batch.shape)),
                     "onnx_max_abs": float(np.abs(got - ref).max()),
                     "torch_max_abs": float(torch_diff),
                     "their_fp32_vs_fp64": float(np.abs(their_float64_prob(model, batch) - ref).max()),
                     "strided_offsets_max_abs": _max_abs(strided_offsets_prob(checkpoint, batch), ref),
                     "prob_std": float(ref.std()),
                     "prob_in_0.05_0.95": float(((ref > 0.05) & (ref < 0.95)).mean())})
    worst = max(r["onnx_max_abs"] for r in rows)
    return {"config": backbone, "max_abs": worst, "passed": bool(worst <= ATOL),
            "dbrt_torch_max_abs": max(r["torch_max_abs"] for r in rows),
            "their_fp32_vs_fp64": max(r["their_fp32_vs_fp64"] for r in rows),
            "strided_offsets_max_abs": max((r["strided_offsets_max_abs"] for r in rows), default=None,
                                           key=lambda v: -1 if v is None else v),
            "offsets": offset_magnitudes(model, batch),
            "checkpoint_tensors": len(state),
            "source_unused_keys": sorted(k for k in state if ".smooth." in k or ".fc." in k),
            "load_report": next((line.replace(f"{workdir}/", "") for line in lines
                                 if line.startswith("checkpoint ")), ""),
            "export_parity": next((line for line in lines if "max abs" in line), ""),
            "shapes": rows, "setup": setup, "seconds": round(time.perf_counter() - started, 1)}


def _max_abs(got: Optional[np.ndarray], ref: np.ndarray) -> Optional[float]:
    return None if got is None else float(np.abs(got - ref).max())


def _markdown(results: List[dict], snapshot: dict) -> list:
    table = markdown_table([{
        "config": r["config"], "max abs: dbrt export ONNX vs MhLiao/DB": r["max_abs"],
        "within 1e-4": "yes" if r["passed"] else "NO",
        "dbrt PyTorch vs MhLiao/DB": r["dbrt_torch_max_abs"],
        "MhLiao/DB fp32 vs its fp64": r["their_fp32_vs_fp64"],
        "strided offset map vs MhLiao/DB": r["strided_offsets_max_abs"],
        "prob map std": min(s["prob_std"] for s in r["shapes"]),
        "mean / max abs offset (px)": (f"{r['offsets']['mean_abs_px']} / {r['offsets']['max_abs_px']}"
                                       if r["offsets"] else "no DCN"),
        "checkpoint tensors": r["checkpoint_tensors"]} for r in results])
    commit = snapshot.get("commit") or "unknown (not a git checkout)"
    shapes = ", ".join("x".join(map(str, shape)) for shape in SHAPES)
    how = (f"MhLiao/DB snapshot: commit `{commit}`. Their `SegDetectorModel` was built from the "
           "snapshot (their DCN CUDA extension stood in by `benchmarks/mhliao_dcn_standin.py`, a "
           "transcription of the kernel), given random weights, BatchNorm affine parameters and "
           "offset convolutions, BatchNorm statistics from two calibration batches then perturbed "
           "(mean +- 0.2 std, variance x 0.6-1.6), saved as their trainer saves it, exported with "
           "`dbrt export`, and the ONNX Runtime output compared with their eval-mode probability "
           f"map on inputs of shape {shapes}.\n\n"
           "The residual branches end with a small BatchNorm gamma (0.1-0.4) and the offset convs "
           f"have weights of std {OFFSET_GAIN} / sqrt(fan in): with larger ones the random network "
           "amplifies float32 rounding so much that their own model in float32 differs from itself "
           "in float64 by more than 1e-4 (the column 'MhLiao/DB fp32 vs its fp64' is that noise "
           "floor for the model measured).\n\n"
           "Their deformable Bottleneck computes the offsets with a stride-1 convolution while the "
           "deformable convolution has stride 2 (first block of stages 2-4); their kernel then reads "
           "the first Ho x Wo x 18 offset and Ho x Wo x 9 mask values of each sample as if they were "
           "the (18, Ho, Wo) / (9, Ho, Wo) maps. dbrt reproduces that (`export.dcn.as_kernel_reads`); "
           "the column 'strided offset map vs MhLiao/DB' shows dbrt's model with the textbook "
           "reading (offsets from a stride-2 conv) instead.\n")
    reports = "\n".join(f"- {r['config']}: `{r['load_report']}`" for r in results) + "\n"
    return [("Max abs difference per configuration", table), ("How", how),
            ("Checkpoint load reports (dbrt export)", reports)]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argument_parser("benchmarks.mhliao_parity", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshot", help=f"MhLiao/DB checkout (default: ${ENV} or {DEFAULT_SNAPSHOT})")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; write no result files")
    args = parser.parse_args(argv)
    snapshot = find_snapshot(args.snapshot)
    if not is_snapshot(snapshot):
        print(f"{NAME}: skipped: no MhLiao/DB snapshot at {snapshot} (clone "
              f"https://github.com/MhLiao/DB and pass --snapshot DIR or set {ENV})")
        return SKIPPED
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # their DataParallel would move the model to a GPU
    import torch

    torch.set_num_threads(1)
    model_class = import_their_model(snapshot)
    results = []
    with tempfile.TemporaryDirectory(prefix="mhliao_parity_") as tmp:
        for offset, backbone in enumerate(args.configs):
            result = run_config(model_class, backbone, args.seed + offset, Path(tmp))
            results.append(result)
            print(f"{backbone:22s} max abs {result['max_abs']:.2e} "
                  f"({'ok' if result['passed'] else 'ABOVE 1e-4'}; dbrt PyTorch "
                  f"{result['dbrt_torch_max_abs']:.2e}; {result['seconds']} s)", flush=True)
    identity = snapshot_identity(snapshot)
    if not args.no_write:
        info = machine_info()
        out = results_dir()
        payload = {"atol": ATOL, "shapes": SHAPES, "snapshot": identity, "results": results,
                   "machine": info}
        write_json(out / f"{NAME}.json", payload)
        write_markdown(out / f"{NAME}.md", "MhLiao/DB checkpoints: dbrt export vs their own model",
                       _markdown(results, identity), info)
        print(f"wrote {out / NAME}.json / .md")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
