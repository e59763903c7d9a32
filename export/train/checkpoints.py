"""A run's checkpoint files: last.pt, which --resume reads (the averaged and raw weights, the
optimiser state, the step and the config), and best.pt / the step snapshots, which hold the
averaged weights, the step and the config alone (what --init, shipping and exporting read).
Everything is tensors and plain values, so every load is `torch.load(weights_only=True)`."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from engine.errors import ModelError

from .config import TrainConfig
from .weights import read_checkpoint


def resumable_checkpoint(path: Path, cfg: TrainConfig) -> dict:
    """last.pt of the run `cfg` resumes; ModelError when `cfg` would change its recipe midway
    (a config built from defaults instead of the run's own settings)."""
    ck = read_checkpoint(path)
    run = TrainConfig.from_dict(ck.get("config") or {"out_dir": cfg.out_dir})
    differences = cfg.with_absolute_paths().recipe_differences(run.with_absolute_paths())
    if "config" in ck and differences:
        listed = ", ".join(f"{name} {ours!r} (the run: {theirs!r})" for name, ours, theirs in differences)
        raise ModelError(f"{path} belongs to a run with other settings: {listed}; resume it with its "
                         "own settings (dbrt train --out RUN --resume reads them from RUN/config.json)")
    return ck


def save_checkpoint(path: Path, ema, model, opt, step: int, cfg: TrainConfig, extra: Optional[dict] = None,
          resumable: bool = True) -> None:
    """`resumable`: also the raw weights and the optimiser's state, which only --resume reads
    (from last.pt): best.pt and the snapshots hold the averaged weights alone, a quarter of the
    size (12 against 50 MB at the default width)."""
    tmp = path.with_suffix(".tmp")
    cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
    state = {"raw": cpu(model), "optimizer": opt.state_dict()} if resumable else {}
    torch.save({"model": cpu(ema), **state, "step": step, "config": asdict(cfg), **(extra or {})},
               str(tmp))
    tmp.replace(path)
