"""The GPU proof's Triton step: a TensorRT repository served by a real GPU Triton.

It runs only where a `tritonserver` with the TensorRT backend is installed (the NGC
`tritonserver` image: /opt/tritonserver/bin/tritonserver and backends/tensorrt/); the
nvidia-pytriton wheel the CPU tests use has the Python backend only. Then it
1. writes a repository with `dbrt triton export --backend tensorrt` (the plan built on this GPU,
   with this machine's TensorRT: it must be the TensorRT of that Triton release),
2. serves it with that tritonserver on 127.0.0.1,
3. compares `triton://.../dbnet` with the same plan run in this process (TensorRTRunner):
   identical boxes and scores per frame, box hmean, and detect() per frame through Triton
   (system shared memory) divided by the local call.
Anywhere else it is skipped with a line saying why.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .gpu_checks import Skip

SEARCHED = ("PATH", "/opt/tritonserver")
NO_SERVER = "no tritonserver with the TensorRT backend on this machine (looked in PATH and /opt/tritonserver)"


@dataclass(frozen=True)
class SystemTriton:
    """An installed tritonserver (not the pytriton wheel's), in TritonServer's `install` role."""

    executable: Path
    backends: Path

    def environment(self) -> dict:
        return dict(os.environ)

    def backends_dir(self, where: Path) -> Path:
        return self.backends


def find_tritonserver(which=shutil.which, roots: Sequence[Path] = (Path("/opt/tritonserver"),)
                      ) -> Optional[SystemTriton]:
    """A tritonserver whose backends folder has tensorrt/, or None."""
    candidates = [Path(p) for p in (which("tritonserver"),) if p]
    candidates += [root / "bin" / "tritonserver" for root in roots]
    for binary in candidates:
        backends = binary.resolve().parent.parent / "backends"
        if binary.is_file() and (backends / "tensorrt").is_dir():
            return SystemTriton(binary, backends)
    return None


def export_command(repo: Path) -> List[str]:
    """The `dbrt triton export` arguments of the step (the shipped model, a TensorRT plan)."""
    return ["triton", "export", "-o", str(repo), "--backend", "tensorrt"]


def triton_step(frames: Sequence[np.ndarray], install: Optional[SystemTriton] = None,
                repeats: int = 20) -> dict:
    """The step's result (see the module docstring); raises Skip where it cannot run."""
    install = install or find_tritonserver()
    if install is None:
        raise Skip(NO_SERVER)
    if not frames:
        raise Skip("no video frames to compare on")
    from engine.lazy import optional

    for module in ("tensorrt", "tritonclient.grpc"):
        if optional(module) is None:
            raise Skip(f"{install.executable} found, but Python module {module} is not installed")
    from engine.triton.server import TritonServer
    from pipeline.cli import main as dbrt

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        command = export_command(repo)
        if dbrt(command) != 0:
            raise RuntimeError(f"dbrt {' '.join(command)} failed")
        with TritonServer(repo, install=install, ready_timeout=300) as server:
            result = compare(f"triton://{server.grpc_url}/dbnet", repo / "dbnet" / "1" / "model.plan",
                             frames, repeats)
    return {"tritonserver": str(install.executable), "export": "dbrt " + " ".join(command), **result}


def compare(url: str, plan: Path, frames: Sequence[np.ndarray], repeats: int) -> dict:
    from pipeline.detector import Detector
    from pipeline.evaluate import evaluate_image

    with Detector(url) as remote, Detector(str(plan), spec=remote.spec, backend="tensorrt",
                                           device="cuda") as local:
        same = boxes = theirs = matched = 0
        for image in frames:
            there, here = remote.detect(image), local.detect(image)
            same += int(np.array_equal(there.polygons, here.polygons)
                        and np.array_equal(there.scores, here.scores))
            r = evaluate_image(here.polygons, [False] * len(here), there.polygons)
            boxes, theirs, matched = boxes + r.gt_care, theirs + r.det_care, matched + r.matched
        p, rc = (matched / theirs if theirs else 1.0), (matched / boxes if boxes else 1.0)
        local_ms, triton_ms = (_median_ms(d, frames[0], repeats) for d in (local, remote))
    return {"frames": len(frames), "identical": same, "local_boxes": boxes, "triton_boxes": theirs,
            "box_hmean": round(2 * p * rc / (p + rc), 4) if p + rc else 0.0,
            "local_detect_ms": local_ms, "triton_detect_ms": triton_ms,
            "ratio_to_local": round(triton_ms / local_ms, 3)}


def _median_ms(detector, image: np.ndarray, repeats: int) -> float:
    detector.detect(image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect(image)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)
