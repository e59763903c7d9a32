"""The training loop's progress line: losses, speed, the loader's share and the time left."""
from __future__ import annotations

import time

from .config import TrainConfig


def validations_left(cfg: TrainConfig, step: int) -> int:
    """How many validations a run has still to do when the progress line of `step` is printed
    (before that step's own): one every `val_every` steps and the final one."""
    every = (cfg.steps - 1) // cfg.val_every - (step - 1) // cfg.val_every if cfg.val_every else 0
    return max(every, 0) + 1


class Progress:
    """The progress line every `log_every` steps: mean losses, s/it and the loader's share of
    the steps since the last line, and the time left (to the last step, or to `time_limit`).
    Time spent validating and saving is left out of s/it; the validations still to come are
    added at `validation_seconds` each (the latest one's: 100 photos tuned take minutes)."""

    def __init__(self, cfg: TrainConfig, start: int, validation_seconds: float = 0.0):
        self.cfg, self.t0, self.validation_seconds = cfg, time.time(), validation_seconds
        self.last, self.tick, self.paused, self.waited, self.sums = start, time.time(), 0.0, 0.0, {}

    def add(self, terms: dict, waited: float) -> None:
        self.waited += waited
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach()

    def pause(self, seconds: float) -> None:
        self.paused += seconds

    def maybe_log(self, step: int, lr: float) -> None:
        cfg = self.cfg
        if step % cfg.log_every and step != cfg.steps:
            return
        n = max(1, step - self.last)
        per = max(time.time() - self.tick - self.paused, 1e-9) / n
        left = per * (cfg.steps - step) + self.validation_seconds * validations_left(cfg, step)
        if cfg.time_limit:
            left = max(0.0, min(left, cfg.time_limit - (time.time() - self.t0)))
        parts = " ".join(f"{k} {float(v) / n:.4f}" for k, v in self.sums.items())
        print(f"step {step}/{cfg.steps} {parts} lr {lr:.2e} {per:.3g} s/it "
              f"data {100 * self.waited / (per * n):.0f}% eta {left / 60:.1f} min", flush=True)
        self.last, self.tick, self.paused, self.waited, self.sums = step, time.time(), 0.0, 0.0, {}
