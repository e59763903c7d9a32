"""`dbrt train`: train a DBNet on synthetic text, real ICDAR / mask folders, or a weighted mix,
with validation hmean on a held-out dataset and resumable checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from dbnet.spec import MAX_INPUT_SIDE

from ._validate import (MAX_CPU_THREADS, MAX_WIDTH, MIN_INPUT_SIDE, at_least, between,
                        output_folder, seed, side_length, width_multiplier)

NAME = "train"
HELP = "train DBNet on synthetic text, real ICDAR2015 / mask folders or a mix (needs torch)"
ORDER = 60
# upper bounds that catch a mistyped value (an extra zero) before it starts a run
MAX_WORKERS = 128   # data-loader processes, each holding its own copy of the dataset
DESCRIPTION = """Train a DBNet detector. --data takes 'synth' (synthetic scenes made on the fly
from --seed), an ICDAR2015-format folder (img_N.jpg + gt_img_N.txt, '###' = do not care) or a
mask folder (NAME.jpg + NAME_mask.png, shrunk text regions); repeat it to mix sources, each with
an optional sampling weight: --data ic15=0.5 --data masks=0.3 --data synth=0.2. Real folders get
the DB paper's augmentation (rotation +-10 deg, crop, flip, scale 0.5-3; --scale changes
the range). --teacher CHECKPOINT distils a larger model trained first into this one (its
probability maps as soft targets, weighted by --distill; --teacher-scale lets it read each crop
larger). --val DATASET scores
the EMA weights every --val-every steps and at the end (ICDAR 2015 protocol) and keeps the best
as best.pt. Checkpoints go to --out (last.pt, best.pt, and step_NNNNNN.pt every 2,000 steps
before the last, whose checkpoint is last.pt); --resume continues
--out/last.pt with the run's own settings (--out/config.json): only --workers, --threads,
--device, --amp, --time-limit, --log-every, --save-every and the --val flags may be given anew;
a new run refuses an --out holding an earlier run's last.pt, val.jsonl, best.pt or step_*.pt, and
removes the --out it made when it fails before writing anything.
--val-tune scores each validation at its best post-processing thresholds (what a model ships
with after `dbrt eval --tune`), and `python -m export.train.ship` takes the ones best.pt records."""


class _Given(argparse.Action):
    """Store the value and remember that the flag was typed: --resume must tell a flag given
    anew from a default, which would otherwise override the resumed run's own setting."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = namespace.given | {self.dest}  # parser default: frozenset()


class _GivenFlag(_Given):
    """A switch (no value) that _Given remembers as typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, True, option_string)


def add_arguments(parser) -> None:
    from export.train.config import TrainConfig

    d = TrainConfig(out_dir="")
    parser.set_defaults(given=frozenset())

    def setting(*names, **kw):
        parser.add_argument(*names, action=_Given, **kw)

    parser.add_argument("--out", required=True, type=output_folder,
                        help="folder for checkpoints, config.json, val.jsonl")
    parser.add_argument("--data", action="append", metavar="SOURCE[=WEIGHT]",
                        help="'synth', an ICDAR2015-format folder or a mask folder; repeat to mix "
                             "(default: synth)")
    setting("--scene", default=d.scene, choices=("default", "street", "signs", "mixed"),
            help="synthetic scene mix (street adds photo-like built scenes, signs "
                 "more large letter-spaced lettering, mixed 60%% default + 40%% signs)")
    setting("--arch", default=d.arch, choices=("resnet18", "resnet34", "resnet50"))
    setting("--width", type=width_multiplier, default=d.width,
            help=f"backbone width multiplier (1: the standard ResNet; at most {MAX_WIDTH:g})")
    setting("--steps", type=at_least(1), default=d.steps, help="optimiser steps of the whole run")
    setting("--batch", type=at_least(1), default=d.batch, help="crops per step")
    setting("--crop", type=crop_side, default=d.crop,
            help=f"square training crop, pixels: a multiple of {MIN_INPUT_SIDE} up to {MAX_INPUT_SIDE}")
    setting("--scale", type=scale_range, default=d.scale, metavar="LO,HI",
            help="real folders: random size change, log-uniform in [LO, HI] (the DB paper's "
                 "0.5,3; a lower range trains on smaller text)")
    setting("--shrink-ratio", type=between(0.0, 1.0, float, open_ends=True), default=d.shrink_ratio,
            metavar="R", help="DB's shrink ratio for ICDAR and synthetic word polygons: the "
                              "probability target is each word shrunk by area x (1 - R^2) / perimeter "
                              "(the paper's 0.4; a smaller R parts neighbouring words more widely; "
                              "mask folders come shrunk at about 0.4 and are used as they are)")
    setting("--lr", type=at_least(0.0, float, strict=True), default=d.lr,
            help="peak AdamW learning rate")
    setting("--warmup", type=at_least(0), default=d.warmup,
            help=f"steps of linear warm-up to --lr (default: {d.warmup}, at most a tenth of --steps)")
    setting("--seed", type=seed, default=d.seed, help="random seed, 0 to 2**32 - 1")
    setting("--workers", type=at_least(0, at_most=MAX_WORKERS), default=d.workers,
            help=f"data-loader processes (at most {MAX_WORKERS})")
    setting("--threads", type=at_least(1, at_most=MAX_CPU_THREADS), default=d.threads,
            help=f"torch CPU threads (at most {MAX_CPU_THREADS})")
    setting("--device", default=d.device, choices=("cpu", "cuda", "auto"),
            help="where to train (auto: a CUDA GPU when torch sees one)")
    parser.add_argument("--amp", action=_GivenFlag, nargs=0, default=d.amp,
            help="mixed precision: the forward pass under bfloat16 autocast (loss and weights "
                 "stay float32); for NVIDIA Ampere or later GPUs and CPUs with AVX512-BF16 or "
                 "AMX (2x the steps per second on a 2-core AMD EPYC Zen 4); elsewhere bfloat16 is "
                 "emulated, many times slower, so the run says so and trains in float32")
    setting("--init", help="start from these weights (fine-tuning)")
    setting("--teacher", metavar="CHECKPOINT",
            help="distil from this model: a larger one trained first (e.g. --width 1.0); the "
                 "student also learns its probability maps (knowledge distillation)")
    setting("--distill", type=at_least(0.0, float, strict=True), default=d.distill,
            help="weight of the distillation loss against the DB loss (with --teacher)")
    setting("--teacher-scale", type=at_least(0.0, float, strict=True), default=d.teacher_scale,
            help="the teacher reads each crop this much larger and its map is scaled back "
                 "(with --teacher; e.g. 1.5 with the model itself as teacher: scale "
                 "distillation, its better reading of small words at a larger input taught "
                 "at the default size)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    setting("--val", metavar="DATASET",
            help="validation dataset (ICDAR / Total-Text folder or gt.json), never the test set")
    setting("--val-every", type=at_least(0), default=d.val_every,
            help="validate every N steps (0: only at the end)")
    setting("--val-images", type=at_least(0), default=0,
            help="validate on the first N images (0: all)")
    parser.add_argument("--val-tune", action=_GivenFlag, nargs=0, default=d.val_tune,
                        help="score each validation at the thresh / box_thresh / unclip_ratio "
                             "that do best on it (the `dbrt eval --tune` grid; the network runs "
                             "once): best.pt is then the best checkpoint at its best thresholds, "
                             "which it records for `export.train.ship`")
    setting("--save-every", type=at_least(1), default=d.save_every, help="steps between last.pt saves")
    setting("--log-every", type=at_least(1), default=d.log_every, help="steps between progress lines")
    setting("--time-limit", type=at_least(0.0, float), default=0.0,
            help="stop (and save) after this many seconds; 0 = run all steps")


def crop_side(text: str) -> int:
    """--crop: an input side (32 to the maximum) that is a multiple of the network stride."""
    try:
        value = side_length(text)
    except argparse.ArgumentTypeError:
        value = None
    if value is None or value % MIN_INPUT_SIDE:
        raise argparse.ArgumentTypeError(f"must be a multiple of {MIN_INPUT_SIDE} from "
                                         f"{MIN_INPUT_SIDE} to {MAX_INPUT_SIDE}, got {text!r}")
    return value


def scale_range(text: str) -> tuple:
    """'LO,HI' -> (LO, HI), 0 < LO <= HI."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers LO,HI, got {text!r}") from None
    if not 0 < low <= high < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 < LO <= HI, got {text!r}")
    return low, high


def make_validator(dataset, tune: bool = False, post: Optional[dict] = None):
    """model -> {"precision", "recall", "hmean", "images"} on `dataset` through the same
    Detector (preprocessing, DB post-processing, frame mapping) that `dbrt run` uses, at the
    thresh / box_thresh / unclip_ratio of `post` (those the model will ship with: its --init's
    as the run recorded them when it started; default: DB's). With `tune`, at the grid's best settings on these maps (recorded in the
    result, with the hmean at `post`'s as "untuned_hmean", and "on_grid_edge" when one of them
    is the grid's lowest or highest)."""
    from dataclasses import replace

    from export.torch_runner import TorchRunner
    from pipeline.detector import Detector
    from pipeline.postprocess import DBPostprocessor
    from pipeline.tune import grid_edges, probability_maps, score, tune_on_maps

    def validate(model) -> dict:
        runner_device = "cuda" if next(model.parameters()).is_cuda else "cpu"
        with Detector(model=TorchRunner(model, device=runner_device, half=False)) as detector:
            maps = probability_maps(detector, dataset)
        config = replace(detector.post.config, **(post or {}))
        rows = tune_on_maps(maps, config) if tune else []
        default = (config.thresh, config.box_thresh, config.unclip_ratio)
        # the grid holds the default settings: their row is the untuned score
        untuned = next((r for r in rows if (r["thresh"], r["box_thresh"], r["unclip_ratio"]) == default), None)
        if untuned is None:
            result = score(maps, DBPostprocessor(config, "cpu"))
            untuned = {"precision": result.precision, "recall": result.recall, "hmean": result.hmean}
        if not tune:
            return {**untuned, **dict(zip(("thresh", "box_thresh", "unclip_ratio"), default)),
                    "images": len(dataset)}
        edges = grid_edges(rows[0])  # a wider grid (dbrt eval --tune-thresh ...) may do better
        return {**rows[0], "untuned_hmean": untuned["hmean"], "images": len(dataset),
                **({"on_grid_edge": "; ".join(edges)} if edges else {})}

    return validate


def _shipping_post(cfg) -> dict:
    """The thresholds a checkpoint of this run ships with unless tuned: those the run recorded
    when it started, else (a run before they were recorded) its --init's
    (export.checkpoint.shipping_post); {} (DB's defaults) when it says none."""
    if cfg.post is not None:
        return dict(cfg.post)
    if not cfg.init or not Path(cfg.init).is_file():
        return {}
    from export.checkpoint import shipping_post

    return shipping_post(cfg.init)


def _check(cfg) -> None:
    from engine.errors import DbrtError
    from export.train.data import parse_source

    for spec in cfg.sources:
        name, _ = parse_source(spec)
        if name != "synth" and not Path(name).is_dir():
            raise DbrtError(f"--data must be 'synth' or an existing folder, got {name!r}")
    if cfg.init and not cfg.resume and not Path(cfg.init).exists():
        raise DbrtError(f"--init checkpoint not found: {cfg.init}")
    if cfg.teacher and not Path(cfg.teacher).exists():
        raise DbrtError(f"--teacher checkpoint not found: {cfg.teacher}")
    for flag, path in (("--init", None if cfg.resume else cfg.init), ("--teacher", cfg.teacher)):
        _check_checkpoint(flag, path)
    if cfg.crop <= 0 or cfg.crop % 32:
        raise DbrtError(f"--crop must be a positive multiple of 32, got {cfg.crop}")


def _check_checkpoint(flag: str, path) -> None:
    """A folder, an ONNX model or an image passed as a checkpoint: one error naming the flag,
    before anything is read from it (its record's shrink ratio was said first)."""
    from engine.errors import DbrtError, ModelError
    from export.checkpoint import check_checkpoint_file

    try:
        if path:
            check_checkpoint_file(path)
    except ModelError as exc:
        raise DbrtError(f"{flag}: {exc}") from None


# flags that only mean something with another one: (flag's setting, the setting it needs)
_NEEDS = (("distill", "teacher"), ("teacher_scale", "teacher"), ("val_every", "val"),
          ("val_tune", "val"), ("val_images", "val"))


def _check_dependent_flags(cfg, given) -> None:
    """A flag typed without the one it works with was ignored without a word (--distill with
    no --teacher trained no distillation); a resumed run may have the other in its config."""
    from engine.errors import DbrtError

    for name, needed in _NEEDS:
        if name in given and not getattr(cfg, needed):
            flag, other = "--" + name.replace("_", "-"), "--" + needed
            metavar = "CHECKPOINT" if needed == "teacher" else "DATASET"
            raise DbrtError(f"{flag} needs {other} {metavar} (it has no effect without it)")


def _with_init_target(cfg, args):
    """A fine-tune keeps the training target its --init model learnt (DB's shrink ratio, in the
    model's record) unless --shrink-ratio is given: another one changes what the map means."""
    import dataclasses
    import sys

    if "shrink_ratio" in args.given or not cfg.init or not Path(cfg.init).is_file():
        return cfg
    from export.checkpoint import trained_shrink_ratio

    ratio = trained_shrink_ratio(cfg.init)
    if ratio is None or ratio == cfg.shrink_ratio:
        return cfg
    print(f"dbrt train: --shrink-ratio {ratio:g}, as {Path(cfg.init).name} was trained "
          "(its record or training config); give --shrink-ratio to choose another", file=sys.stderr)
    return dataclasses.replace(cfg, shrink_ratio=ratio)


def _warmup(args) -> int:
    """--warmup as given (said when it covers the whole run: the rate never decays), else the
    default up to a tenth of --steps (300 steps of warm-up took all of a 40-step run)."""
    import sys

    if "warmup" not in args.given:
        return min(args.warmup, args.steps // 10)
    if args.warmup >= args.steps > 1:
        print(f"dbrt train: --warmup {args.warmup} covers all {args.steps} steps: the learning "
              "rate rises to --lr and never decays", file=sys.stderr)
    return min(args.warmup, args.steps)


def _new_config(args):
    from export.train.config import TrainConfig

    data = args.data or ["synth"]
    return (TrainConfig(out_dir=args.out, data=data if len(data) > 1 else data[0],
                       scene=args.scene, arch=args.arch, width=args.width,
                       steps=args.steps, batch=args.batch, crop=args.crop, scale=args.scale,
                       shrink_ratio=args.shrink_ratio, lr=args.lr,
                       warmup=_warmup(args), seed=args.seed, workers=args.workers,
                       threads=args.threads, init=args.init, teacher=args.teacher,
                       distill=args.distill, teacher_scale=args.teacher_scale, save_every=args.save_every,
                       log_every=args.log_every, time_limit=args.time_limit, device=args.device,
                       amp=args.amp, val_every=args.val_every, val=args.val, val_images=args.val_images,
                       val_tune=args.val_tune)).with_absolute_paths()


def _as_typed(value) -> str:
    """A setting as its flag takes it (a pair as LO,HI)."""
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def _resumed_config(args):
    """The run's own settings from OUT/config.json, with the flags that may change applied; a
    flag that would change the training recipe midway is one clear error."""
    import dataclasses
    import json

    from engine.errors import DbrtError
    from export.train.config import TrainConfig

    out = Path(args.out)
    saved_path = out / "config.json"
    if not (out / "last.pt").is_file() or not saved_path.is_file():
        raise DbrtError(f"--resume: {out} holds no run to continue (needs last.pt and config.json); "
                        "drop --resume to start one")
    try:  # a run written before paths were stored absolute: relative to this folder, as then
        cfg = TrainConfig.from_dict(json.loads(saved_path.read_text())).with_absolute_paths()
    except (ValueError, TypeError) as e:
        raise DbrtError(f"--resume: {saved_path} is not a dbrt training config ({e})") from None
    cfg = _checked_like_the_flags(cfg, saved_path)
    given, names = _new_config(args), set(args.given) | ({"data"} if args.data else set())
    for name, value, saved in given.recipe_differences(cfg, sorted(names))[:1]:
        flag = "--" + name.replace("_", "-")
        value, saved = _as_typed(value), _as_typed(saved)
        raise DbrtError(f"{flag} {value}: --resume continues the run in {out} with its own "
                        f"settings ({flag} {saved}); drop the flag, or train into a new --out "
                        f"with --init {out / 'last.pt'}")
    if "init" in names and given.init != cfg.init:  # not a recipe setting, but not applied either
        raise DbrtError(f"--init {args.init}: --resume continues the run in {out} from its "
                        f"last.pt (started from {cfg.init or 'new weights'}); drop --init, or "
                        f"train into a new --out")
    changes = {n: getattr(given, n) for n in names if n in TrainConfig.RESUMABLE_CHANGES}
    return dataclasses.replace(cfg, **changes, out_dir=args.out, resume=True)


# the recipe's settings that config.json holds and no flag sets, with their bounds
_UNFLAGGED = {"weight_decay": at_least(0.0, float), "power": at_least(0.0, float, strict=True),
              "ema": between(0.0, 1.0, float, open_ends=True), "keep_every": at_least(1)}


def _checked_like_the_flags(cfg, saved_path: Path):
    """`cfg` (read from `saved_path`) with each setting that has a flag put through that flag's
    check: a hand-edited config.json (seed -1, lr Infinity) is one error naming the file and
    the key, not a failure deep in training or a run on a nonsense setting."""
    import dataclasses

    from engine.errors import DbrtError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name, check in _UNFLAGGED.items():  # settings no flag sets: checked all the same
        parser.add_argument(f"--{name}", type=check)
    checked = {}
    for action in parser._actions:  # the flags, with their own checks and choices
        value = getattr(cfg, action.dest, None)
        if value is None or (action.type is None and action.choices is None):
            continue
        try:
            value = action.type(_as_typed(value)) if action.type else value
        except argparse.ArgumentTypeError as exc:
            raise DbrtError(f"--resume: {saved_path}: \"{action.dest}\" {exc}") from None
        if action.choices is not None and value not in action.choices:
            raise DbrtError(f"--resume: {saved_path}: \"{action.dest}\" must be one of "
                            f"{', '.join(action.choices)}, got {value!r}")
        checked[action.dest] = value
    post = cfg.post  # no flag sets it: the thresholds the run started with
    if post is not None and not (isinstance(post, dict) and set(post) <= {"thresh", "box_thresh", "unclip_ratio"}
                                 and all(type(v) in (int, float) for v in post.values())):
        raise DbrtError(f"--resume: {saved_path}: \"post\" must map thresh / box_thresh / "
                        f"unclip_ratio to numbers, got {post!r}")
    return dataclasses.replace(cfg, **checked)


def run(args) -> int:
    import dataclasses

    from engine.lazy import require

    require("torch")
    from export.train.loop import train

    cfg = _resumed_config(args) if args.resume else _new_config(args)
    _check_dependent_flags(cfg, args.given)
    _check(cfg)
    cfg = cfg if args.resume else _with_init_target(cfg, args)
    cfg = dataclasses.replace(cfg, post=_shipping_post(cfg))  # recorded in config.json
    validate = None
    if cfg.val:
        from pipeline.datasets import open_dataset

        dataset = open_dataset(cfg.val).head(cfg.val_images or None)
        for sample in dataset:  # an unreadable image fails now, not at the first validation
            sample.read_image()
        validate = make_validator(dataset, tune=cfg.val_tune, post=cfg.post)
    path = train(cfg, validate=validate)
    print(f"checkpoint: {path}")
    return 0
