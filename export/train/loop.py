"""The DB training loop: AdamW, linear warm-up then poly decay, weight EMA, checkpoints, progress.

    from export.train.loop import TrainConfig, train
    train(TrainConfig(out_dir="runs/db", steps=8000))              # synthetic data
    train(TrainConfig(out_dir="runs/ft", data="my_icdar_folder",    # fine-tune
                      init="runs/db/last.pt", lr=5e-4, steps=2000, crop=640))

Checkpoints (`last.pt`, `step_NNNNNN.pt`) hold the EMA weights under "model", the raw weights,
the optimiser, the step and the config; `load_checkpoint`-style loaders read "model".
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
import torch

from ..synth.scene import scene_sampler
from .config import TrainConfig
from .data import IcdarDataset, SynthDataset
from .losses import db_loss


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (1 - min(frac, 1.0)) ** cfg.power


def _dataset(cfg: TrainConfig):
    n = cfg.steps * cfg.batch
    if cfg.data == "synth":
        return SynthDataset(n, crop=cfg.crop, seed=cfg.seed, scene=scene_sampler(cfg.scene))
    return IcdarDataset(cfg.data, n, crop=cfg.crop, seed=cfg.seed)


def _worker_init(_):
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_weights(model, path) -> None:
    """Load "model" (EMA) weights of one of our checkpoints, or a bare state dict."""
    data = torch.load(str(path), map_location="cpu", weights_only=False)
    state = data.get("model", data) if isinstance(data, dict) else data
    model.load_state_dict({k: v.float() for k, v in state.items()})


def _save(path: Path, ema, model, opt, step: int, cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": ema.state_dict(), "raw": model.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "config": asdict(cfg)}, str(tmp))
    tmp.replace(path)


@torch.no_grad()
def _ema_update(ema, model, decay: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)


def _log(msg: str) -> None:
    print(msg, flush=True)


def train(cfg: TrainConfig) -> Path:
    """Train; returns the path of the final checkpoint (out_dir/last.pt)."""
    from ..model import DBNet

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    model = DBNet(cfg.arch, width=cfg.width)
    if cfg.init:
        load_weights(model, cfg.init)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if cfg.resume and (out / "last.pt").exists():
        ck = torch.load(str(out / "last.pt"), map_location="cpu", weights_only=False)
        model.load_state_dict(ck["raw"])
        ema.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = int(ck["step"])
        _log(f"resumed from step {start}")
    loader = torch.utils.data.DataLoader(
        _dataset(cfg), batch_size=cfg.batch, sampler=range(start * cfg.batch, cfg.steps * cfg.batch),
        num_workers=cfg.workers, worker_init_fn=_worker_init if cfg.workers else None,
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    model.train()
    t0, tick, step = time.time(), time.time(), start
    sums = {}
    for batch in loader:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        terms = db_loss(model(batch["image"]), batch)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        _ema_update(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
        step += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            per = (time.time() - tick) / n
            parts = " ".join(f"{k} {v / n:.4f}" for k, v in sums.items())
            _log(f"step {step}/{cfg.steps} {parts} lr {lr_at(cfg, step - 1):.2e} "
                 f"{per:.2f} s/it eta {per * (cfg.steps - step) / 60:.1f} min")
            sums, tick = {}, time.time()
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save(out / "last.pt", ema, model, opt, step, cfg)
            if step % cfg.keep_every == 0:
                _save(out / f"step_{step:06d}.pt", ema, model, opt, step, cfg)
        if cfg.time_limit and time.time() - t0 > cfg.time_limit:
            _log(f"time limit reached at step {step}; saving and stopping")
            _save(out / "last.pt", ema, model, opt, step, cfg)
            break
    if not math.isfinite(float(terms["loss"].detach())):
        print("warning: final loss is not finite", file=sys.stderr)
    return out / "last.pt"
