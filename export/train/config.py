"""Training settings (torch-free, so the CLI can show defaults without importing torch)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import List, Optional, Tuple, Union


@dataclass
class TrainConfig:
    out_dir: str
    # "synth", an ICDAR2015-format folder or a mask folder, each optionally "=WEIGHT"; a list
    # mixes them with those sampling weights (export.train.data.MixedDataset)
    data: Union[str, List[str]] = "synth"
    scene: str = "default"         # synthetic scene mix (export.synth.scene.SCENE_PRESETS)
    arch: str = "resnet18"
    width: float = 0.5
    steps: int = 8000
    batch: int = 8
    crop: int = 320
    # real folders: the augmentation's log-uniform size change (the DB paper's 0.5-3; a lower
    # range trains on smaller text, e.g. for far-away signs or small words at the default size)
    scale: Tuple[float, float] = (0.5, 3.0)
    # DB's shrink ratio r for polygon labels (ICDAR, synthetic): the probability target is each
    # word shrunk by A (1 - r^2) / L; a smaller r parts neighbouring words more widely
    shrink_ratio: float = 0.4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 300
    power: float = 0.9
    ema: float = 0.999
    seed: int = 0
    workers: int = 1
    threads: int = 2
    init: Optional[str] = None      # start from these weights (fine-tuning)
    resume: bool = False            # continue out_dir/last.pt (weights, optimiser, step)
    save_every: int = 500
    keep_every: int = 2000          # also keep step_NNNNNN.pt snapshots this often (the last: last.pt)
    log_every: int = 20
    time_limit: float = 0.0         # seconds; stop early (and save) when exceeded, 0 = none
    device: str = "cpu"             # "cpu", "cuda" or "auto" (cuda when torch sees a GPU)
    amp: bool = False               # the forward pass under bfloat16 autocast (loss, weights: float32)
    val_every: int = 0              # run the validation callback every N steps (0 = only at the end)
    val: Optional[str] = None       # validation dataset of `dbrt train --val` (kept for --resume)
    val_images: int = 0             # validate on its first N images (0: all)
    val_tune: bool = False          # validate at the thresholds tuned on the validation maps
    # knowledge distillation: a larger model trained first (any width or depth) whose
    # probability maps the student also learns, weighted by `distill` (export.train.losses)
    teacher: Optional[str] = None
    distill: float = 1.0
    # the teacher sees each crop this much larger (its map scaled back): a model reads small
    # words better at a larger input, so it can teach itself at its own size (scale distillation)
    teacher_scale: float = 1.0
    # thresh / box_thresh / unclip_ratio this run's checkpoints ship with unless validation tunes
    # them: its --init's when the run started ({}: DB's defaults), kept here so that moving or
    # replacing the --init file later changes nothing; None: not recorded (an older run)
    post: Optional[dict] = None

    # what may differ when a run is resumed: where and how fast it runs, how often it reports and
    # saves, and what it is scored on; everything else is the run's training recipe
    RESUMABLE_CHANGES = ("workers", "threads", "device", "amp", "time_limit", "log_every", "save_every",
                         "keep_every", "val", "val_every", "val_images", "val_tune")
    NOT_RECIPE = RESUMABLE_CHANGES + ("out_dir", "init", "resume", "post")

    def recipe_differences(self, run: "TrainConfig", names=None) -> List[Tuple[str, object, object]]:
        """(setting, ours, the run's) for each training-recipe setting (of `names`, default all)
        that differs from `run`'s: what a resumed run may not change midway."""
        names = [f.name for f in fields(self)] if names is None else names
        return [(n, getattr(self, n), getattr(run, n)) for n in names
                if n not in self.NOT_RECIPE and getattr(self, n) != getattr(run, n)]

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainConfig":
        """A config written by an earlier run (config.json); keys of other versions are ignored."""
        if not isinstance(saved, dict):
            raise TypeError(f"expected a JSON object, not {type(saved).__name__}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        if "scale" in values:  # JSON keeps the pair as a list
            values["scale"] = tuple(values["scale"])
        return cls(**values)

    def with_absolute_paths(self) -> "TrainConfig":
        """The config with its data folders (`DIR=WEIGHT` kept), `val`, `init` and `teacher` absolute, as
        config.json stores them: a run then resumes from any working folder."""
        def source(spec: str) -> str:
            head, sep, tail = spec.rpartition("=")
            name = head if sep else tail
            return spec if name == "synth" else str(Path(name).resolve()) + sep + (tail if sep else "")

        data = source(self.data) if isinstance(self.data, str) else [source(d) for d in self.data]
        paths = {k: str(Path(getattr(self, k)).resolve()) for k in ("val", "init", "teacher")
                 if getattr(self, k)}
        return replace(self, data=data, **paths)

    @property
    def sources(self) -> List[str]:
        return [self.data] if isinstance(self.data, str) else list(self.data)
