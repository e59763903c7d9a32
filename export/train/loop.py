"""The DB training loop: AdamW, linear warm-up then poly decay, weight EMA, checkpoints, progress,
validation.

    from export.train.loop import TrainConfig, train
    train(TrainConfig(out_dir="runs/db", steps=8000))              # synthetic data
    train(TrainConfig(out_dir="runs/ft", init="runs/db/last.pt",    # real + synthetic mix
                      data=["ic15_train=0.5", "masks/train=0.3", "synth=0.2"],
                      lr=1e-3, steps=4000, crop=640, device="auto"),
          validate=my_callback)                                     # model -> {"hmean": ...}

Checkpoints (`last.pt`, `step_NNNNNN.pt` every `keep_every` steps before the last, whose
snapshot is last.pt itself, `best.pt` = best validation hmean) hold the EMA
weights under "model", the step and the config, and last.pt, which --resume reads, also the raw
weights and the optimiser state, all as
tensors and plain values, so every load is `torch.load(weights_only=True)`. Validation results
go to `val.jsonl`, one line per validation.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from dbnet.files import folder_removed_if_left_empty, write_text_whole
from engine.errors import DbrtError, ModelError
from engine.signal_watch import restore_handlers
from engine.signals import ignored

from ..checkpoint import shipping_post
from .checkpoints import resumable_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import MixedDataset, open_source, parse_source
from .losses import training_loss
from .progress import Progress
from .weights import (load_teacher, load_weights, read_checkpoint, read_validation_log,
                      teacher_probability)

Validate = Callable[[torch.nn.Module], dict]


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (1 - min(frac, 1.0)) ** cfg.power


def make_dataset(cfg: TrainConfig):
    n = cfg.steps * cfg.batch
    parsed = [parse_source(s) for s in cfg.sources]
    sources = [open_source(name, n, cfg.crop, cfg.seed, cfg.scene, cfg.scale, cfg.shrink_ratio)
               for name, _ in parsed]
    if len(sources) == 1:
        return sources[0]
    return MixedDataset(sources, [w for _, w in parsed], n, seed=cfg.seed)


def model_batch(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """A loader batch of compact samples (export.train.data) -> float32 tensors on `device`:
    the uint8 BGR images normalised as `export.train.data.normalise` does (minus the DB mean,
    times 1/255, NCHW), the targets as float32. Moving uint8 and converting on the device
    carries a quarter of the bytes of float32 maps through the loader and the host-to-GPU copy."""
    from dbnet.spec import DB_MEAN_BGR

    out = {k: v.to(device, non_blocking=True).float() for k, v in batch.items() if k != "image"}
    image = batch["image"].to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.tensor(DB_MEAN_BGR, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    image = (image - mean) * (1 / 255.0)  # a Python scalar: multiplied in float32, no tensor to copy
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out["image"] = image.contiguous(memory_format=fmt)
    return out


def _worker_init(_):
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def start_workers(loader):
    """iter(loader), its worker processes forked while OpenCV's thread pool is down to one
    thread: the pool does not survive a fork, and a worker's first OpenCV threading call then
    waits forever when this process had used cv2 in parallel before (validation, an earlier run
    in the same process, a notebook's image work)."""
    if not loader.num_workers:
        return iter(loader)
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)


class _Ema:
    """ema = decay * ema + (1 - decay) * model over every floating weight and buffer, in two
    fused calls per step (one kernel launch per tensor each on a GPU otherwise); integer
    buffers (BatchNorm's batch counter) are copied."""

    def __init__(self, ema, model):
        pairs = list(zip(ema.state_dict().values(), model.state_dict().values()))
        self.floats = [[e for e, _ in pairs if e.dtype.is_floating_point],
                       [m for e, m in pairs if e.dtype.is_floating_point]]
        self.others = [(e, m) for e, m in pairs if not e.dtype.is_floating_point]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_mul_(self.floats[0], decay)
        torch._foreach_add_(self.floats[0], self.floats[1], alpha=1 - decay)
        for e, m in self.others:
            e.copy_(m)


def _log(msg: str) -> None:
    print(msg, flush=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA GPU")
    if name == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CPU with AVX512-BF16 or AMX (oneDNN's
    check), an NVIDIA GPU from Ampere on. Elsewhere autocast emulates it, several times slower
    than float32 (7.7x for a training step on two AMD EPYC Zen 3 cores)."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3 has no emulation to leave out
            return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """--amp where it pays; on hardware that would emulate bfloat16 one line says so and the
    run trains in float32 (a resumed --amp run may land on such a machine)."""
    if cfg.amp and not native_bfloat16(device):
        _log(f"--amp: this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bfloat16 "
             "(a CPU needs AVX512-BF16 or AMX, an NVIDIA GPU Ampere or later), where autocast "
             "runs several times slower than float32: training in float32")
        return False
    return cfg.amp


class _Validator:
    """Runs the callback on the EMA model, keeps best.pt, logs to val.jsonl. Scores count
    against each other only on the same validation (folder, images, tuning): a resumed run
    that validates on another starts best.pt over. The best so far is best.pt's own (written
    before val.jsonl, so a run killed between the two still resumes with the best it has)."""

    def __init__(self, out: Path, validate: Optional[Validate], cfg: TrainConfig):
        self.out, self.validate, self.best, self.seconds = out, validate, -1.0, 0.0
        self.on = {"val": cfg.val, "val_images": cfg.val_images, "val_tune": cfg.val_tune}
        ours = [r for r in read_validation_log(out / "val.jsonl") if r.get("on", self.on) == self.on]
        self.done = {r["step"] for r in ours}
        kept = out / "best.pt"
        best = (read_checkpoint(kept).get("validation") if validate and kept.exists() else None) or {}
        if best.get("on", self.on) == self.on:
            self.best = float(best.get("hmean", -1))
        elif validate is not None:
            _log("validation differs from the one best.pt was chosen on: best.pt starts over")

    def __call__(self, step: int, ema, save_best: Callable[[dict], None]) -> None:
        if self.validate is None:
            return
        t = time.time()
        try:
            result = dict(self.validate(ema.eval()), step=step, on=self.on)
        except Exception as exc:  # noqa: BLE001 - last.pt holds this step: --resume redoes it
            raise DbrtError(f"validation at step {step} failed: {exc}") from exc
        self.seconds = time.time() - t
        result["seconds"] = round(self.seconds, 1)
        hmean = float(result.get("hmean", -1))
        if hmean > self.best:
            self.best = hmean
            save_best(result)
        with open(self.out / "val.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        self.done.add(step)
        _log("validation step {step}: ".format(step=step) + " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
            if k not in ("step", "on")))

    def owed(self, step: int, cfg: TrainConfig) -> bool:
        """Whether `step` (where a run resumes) was due a validation that did not happen."""
        due = step == cfg.steps or (cfg.val_every and step % cfg.val_every == 0)
        return bool(self.validate is not None and step and due and step not in self.done)


def _interrupt(signum: int) -> KeyboardInterrupt:
    interrupt = KeyboardInterrupt()
    interrupt.signum = signum  # the command line's exit status: 130 or 143
    return interrupt


class _StopRequest:
    """SIGINT / SIGTERM during training: the step in progress finishes, last.pt is saved, then
    KeyboardInterrupt; a second signal interrupts at once. A signal that is ignored stays so.
    Only in the main thread (Linux)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self) -> "_StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if not ignored(sig):  # a background job's SIGINT: `dbrt train ... &` in a script
                    self._previous[sig] = signal.signal(sig, self._handle)
            # torch's SIGCHLD handler raised a dead loader worker's error anywhere in the step;
            # without it torch finds the death where the next batch is fetched: last.pt is saved
            self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise _interrupt(signum)
        self.signum = signum
        _log("stopping after this step (again to stop at once) ...")

    def __exit__(self, *exc) -> None:
        previous, self._previous = self._previous, {}
        restore_handlers(previous)  # one installed from C (None) as the default


def _next_batch(batches):
    """The loader's next batch (None at the end); a worker's error as one line, without the
    worker's traceback that torch appends to its message."""
    try:
        return next(batches, None)
    except Exception as exc:  # noqa: BLE001 - torch re-raises a worker's error with its type
        if isinstance(exc, DbrtError) and "Original Traceback" in str(exc):
            raise type(exc)(str(exc).strip().splitlines()[-1].split(": ", 1)[-1]) from None
        # torch's word for a worker that died, or the pipe it was writing a batch to breaking
        if (isinstance(exc, RuntimeError) and str(exc).startswith("DataLoader worker")
                or isinstance(exc, (ConnectionError, EOFError))):
            raise DbrtError(f"a data-loader worker stopped ({exc}): killed for lack of memory? "
                            "(each of the --workers holds a copy of the data)") from None
        raise


def _check_out(out: Path, cfg: TrainConfig) -> None:
    """A new run never shares its folder with an earlier run's files (a best.pt it did not
    write was the score to beat, and was replaced by a model of another run)."""
    if not cfg.resume and ((out / "last.pt").exists() or (out / "val.jsonl").exists()):
        raise ModelError(f"{out} holds a run already: continue it with --resume, or train into "
                         "a new --out")
    earlier = sorted(p.name for p in [out / "best.pt", *out.glob("step_*.pt")] if p.exists())
    if earlier and not cfg.resume:
        raise ModelError(f"{out} holds {', '.join(earlier[:3])} of an earlier run: train into a "
                         "new --out, or move them away")


def train(cfg: TrainConfig, validate: Optional[Validate] = None) -> Path:
    """Train; returns the path of the final checkpoint (out_dir/last.pt). `validate(model)` ->
    {"hmean": ...} runs every `cfg.val_every` steps and at the end; the best goes to best.pt.
    SIGINT / SIGTERM save last.pt after the step in progress (resumable), then interrupt."""
    out = Path(cfg.out_dir)
    _check_out(out, cfg)
    with folder_removed_if_left_empty(out):  # a run that fails before writing leaves none made
        return _train(cfg, validate, out)


def _train(cfg: TrainConfig, validate: Optional[Validate], out: Path) -> Path:
    from ..model import DBNet

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    if cfg.post is None and not cfg.resume:  # kept in the run: its --init may go or change later
        cfg = replace(cfg, post=shipping_post(cfg.init) if cfg.init else {})
    ck = resumable_checkpoint(out / "last.pt", cfg) if cfg.resume and (out / "last.pt").exists() else None
    model = DBNet(cfg.arch, width=cfg.width)
    if cfg.init and ck is None:  # a resumed run's weights come from last.pt
        load_weights(model, cfg.init)
    # NHWC: cuDNN's and oneDNN's faster layout for these convolutions, on a CPU too (two Zen 4
    # cores, 8 crops of 512 px, --amp: the model's step 1.55x as fast, a real-data run 1.25x)
    model.to(device, memory_format=torch.channels_last)
    teacher = load_teacher(cfg.teacher, device) if cfg.teacher else None
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if ck is not None:
        model.load_state_dict(ck["raw"])
        ema.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = int(ck["step"])
    validator = _Validator(out, validate, cfg)
    step, validated = start, -1
    save = lambda path, resumable=True, **extra: save_checkpoint(path, ema, model, opt, step, cfg, extra,  # noqa: E731
                                                       resumable)
    save_best = lambda result: save(out / "best.pt", False, validation=result)  # noqa: E731
    if validator.owed(start, cfg):  # stopped during it, or it failed: last.pt holds the step
        validator(start, ema, save_best)
        validated = start
    if ck is not None and start >= cfg.steps:  # its settings as resumed, its data not needed
        write_text_whole(out / "config.json", json.dumps(asdict(cfg), indent=2))
        _log(f"{out} finished at step {start} of {cfg.steps}: nothing to resume")
        return out / "last.pt"
    loader = torch.utils.data.DataLoader(
        make_dataset(cfg), batch_size=cfg.batch, sampler=range(start * cfg.batch, cfg.steps * cfg.batch),
        num_workers=cfg.workers, worker_init_fn=_worker_init if cfg.workers else None,
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None,
        pin_memory=device.type == "cuda")
    write_text_whole(out / "config.json", json.dumps(asdict(cfg), indent=2))  # all could be set up
    if ck is not None:
        _log(f"resumed from step {start}")
    model.train()
    amp = _use_amp(cfg, device)
    averager, progress, terms = _Ema(ema, model), Progress(cfg, start, validator.seconds), None
    batches = start_workers(loader)
    with _StopRequest() as stop:
        while True:
            before = time.time()
            try:
                batch = _next_batch(batches)
            except Exception:  # noqa: BLE001 - the steps done are whole: keep them for --resume
                if step > start:
                    save(out / "last.pt")
                    _log(f"saved {out / 'last.pt'} at step {step} (continue with --resume)")
                raise
            if batch is None:
                break
            waited = time.time() - before  # the loader's share of the step time: input-bound?
            batch = model_batch(batch, device, channels_last=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                pred = model(batch["image"])
                with torch.no_grad():
                    taught = (None if teacher is None
                              else teacher_probability(teacher, batch["image"], cfg.teacher_scale))
            terms = training_loss(pred, batch, taught, cfg.distill)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            averager.update(min(cfg.ema, (1 + step) / (10 + step)))
            step += 1
            progress.add(terms, waited)
            progress.maybe_log(step, lr_at(cfg, step - 1))
            paused = time.time()
            validating = cfg.val_every and step % cfg.val_every == 0 and step != cfg.steps
            if step % cfg.save_every == 0 or step == cfg.steps or validating:
                save(out / "last.pt")  # before validating: a run stopped there redoes only that
            if step % cfg.keep_every == 0 and step != cfg.steps:  # the last step's is last.pt
                save(out / f"step_{step:06d}.pt", False)
            if validating:
                validator(step, ema, save_best)
                validated, progress.validation_seconds = step, validator.seconds
            progress.pause(time.time() - paused)
            if stop.signum is not None:
                save(out / "last.pt")
                _log(f"interrupted at step {step}; saved {out / 'last.pt'} (continue with --resume)")
                raise _interrupt(stop.signum)
            if cfg.time_limit and time.time() - progress.t0 > cfg.time_limit:
                _log(f"time limit reached at step {step}; saving and stopping")
                save(out / "last.pt")
                break
    if validated != step:
        validator(step, ema, save_best)
    if terms is not None and not math.isfinite(float(terms["loss"].detach())):
        print("warning: final loss is not finite", file=sys.stderr)
    return out / "last.pt"
