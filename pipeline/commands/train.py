"""`dbrt train`: train a DBNet on synthetic text, real ICDAR / mask folders, or a weighted mix,
with validation hmean on a held-out dataset and resumable checkpoints."""
from __future__ import annotations

from ._validate import at_least, output_folder

NAME = "train"
HELP = "train DBNet on synthetic text, real ICDAR2015 / mask folders or a mix (needs torch)"
ORDER = 60
DESCRIPTION = """Train a DBNet detector. --data takes 'synth' (synthetic scenes made on the fly
from --seed), an ICDAR2015-format folder (img_N.jpg + gt_img_N.txt, '###' = do not care) or a
mask folder (NAME.jpg + NAME_mask.png, shrunk text regions); repeat it to mix sources, each with
an optional sampling weight: --data ic15=0.5 --data masks=0.3 --data synth=0.2. Real folders get
the DB paper's augmentation (rotation +-10 deg, crop, flip, scale 0.5-3). --val DATASET scores
the EMA weights every --val-every steps and at the end (ICDAR 2015 protocol) and keeps the best
as best.pt. Checkpoints go to --out (last.pt, best.pt, step_NNNNNN.pt); --resume continues
--out/last.pt with the same settings."""


def add_arguments(parser) -> None:
    from export.train.config import TrainConfig

    d = TrainConfig(out_dir="")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="folder for checkpoints, config.json, val.jsonl")
    parser.add_argument("--data", action="append", metavar="SOURCE[=WEIGHT]",
                        help="'synth', an ICDAR2015-format folder or a mask folder; repeat to mix "
                             "(default: synth)")
    parser.add_argument("--scene", default=d.scene, choices=("default", "street", "signs", "mixed"),
                        help="synthetic scene mix (street adds photo-like built scenes, signs "
                             "more large letter-spaced lettering, mixed 60%% default + 40%% signs)")
    parser.add_argument("--arch", default=d.arch, choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--width", type=at_least(0.0, float, strict=True), default=d.width,
                        help="backbone width multiplier")
    parser.add_argument("--steps", type=at_least(1), default=d.steps)
    parser.add_argument("--batch", type=at_least(1), default=d.batch)
    parser.add_argument("--crop", type=int, default=d.crop, help="square training crop, pixels")
    parser.add_argument("--lr", type=at_least(0.0, float, strict=True), default=d.lr,
                        help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=at_least(0), default=d.warmup)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=at_least(0), default=d.workers, help="data-loader processes")
    parser.add_argument("--threads", type=at_least(1), default=d.threads, help="torch CPU threads")
    parser.add_argument("--device", default=d.device, choices=("cpu", "cuda", "auto"),
                        help="where to train (auto: a CUDA GPU when torch sees one)")
    parser.add_argument("--init", help="start from these weights (fine-tuning)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    parser.add_argument("--val", metavar="DATASET",
                        help="validation dataset (ICDAR / Total-Text folder or gt.json), never the test set")
    parser.add_argument("--val-every", type=at_least(0), default=d.val_every,
                        help="validate every N steps (0: only at the end)")
    parser.add_argument("--val-images", type=at_least(0), default=0,
                        help="validate on the first N images (0: all)")
    parser.add_argument("--save-every", type=at_least(1), default=d.save_every)
    parser.add_argument("--log-every", type=at_least(1), default=d.log_every)
    parser.add_argument("--time-limit", type=at_least(0.0, float), default=0.0,
                        help="stop (and save) after this many seconds; 0 = run all steps")


def make_validator(dataset):
    """model -> {"precision", "recall", "hmean", "images"} on `dataset` through the same
    Detector (preprocessing, DB post-processing, frame mapping) that `dbrt run` uses."""
    from export.torch_runner import TorchRunner
    from pipeline.detector import Detector
    from pipeline.evaluate import evaluate_detector

    def validate(model) -> dict:
        runner_device = "cuda" if next(model.parameters()).is_cuda else "cpu"
        with Detector(model=TorchRunner(model, device=runner_device, half=False)) as detector:
            result = evaluate_detector(detector.detect, dataset)
        return {"precision": result.precision, "recall": result.recall, "hmean": result.hmean,
                "images": len(dataset)}

    return validate


def _check(args) -> None:
    from pathlib import Path

    from engine.errors import DbrtError
    from export.train.data import parse_source

    for spec in args.data:
        name, _ = parse_source(spec)
        if name != "synth" and not Path(name).is_dir():
            raise DbrtError(f"--data must be 'synth' or an existing folder, got {name!r}")
    if args.init and not Path(args.init).is_file():
        raise DbrtError(f"--init checkpoint not found: {args.init}")
    if args.crop <= 0 or args.crop % 32:
        raise DbrtError(f"--crop must be a positive multiple of 32, got {args.crop}")


def run(args) -> int:
    from engine.lazy import require

    require("torch")
    from export.train.config import TrainConfig
    from export.train.loop import train

    args.data = args.data or ["synth"]
    _check(args)
    validate = None
    if args.val:
        from pipeline.datasets import open_dataset

        dataset = open_dataset(args.val).head(args.val_images or None)
        validate = make_validator(dataset)
    cfg = TrainConfig(out_dir=args.out, data=args.data if len(args.data) > 1 else args.data[0],
                      scene=args.scene, arch=args.arch, width=args.width,
                      steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr,
                      warmup=min(args.warmup, args.steps), seed=args.seed, workers=args.workers,
                      threads=args.threads, init=args.init, resume=args.resume,
                      save_every=args.save_every, log_every=args.log_every,
                      time_limit=args.time_limit, device=args.device, val_every=args.val_every)
    path = train(cfg, validate=validate)
    print(f"checkpoint: {path}")
    return 0
