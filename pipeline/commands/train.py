"""`dbrt train`: train a DBNet on synthetic scene text, or fine-tune on an ICDAR2015 folder."""
from __future__ import annotations

NAME = "train"
HELP = "train DBNet on synthetic text or fine-tune on an ICDAR2015-format folder (needs torch)"
ORDER = 60
DESCRIPTION = """Train a DBNet detector. With --data synth (default) every sample is a synthetic
scene made on the fly from --seed, so a run is reproducible; with --data FOLDER it reads an
ICDAR2015-format folder (img_N.jpg + gt_img_N.txt, '###' = do not care) and usually starts from
weights given with --init. Checkpoints go to --out (last.pt, step_NNNNNN.pt)."""


def add_arguments(parser) -> None:
    from export.train.config import TrainConfig

    d = TrainConfig(out_dir="")
    parser.add_argument("--out", required=True, help="folder for checkpoints and config.json")
    parser.add_argument("--data", default=d.data, help="'synth' or an ICDAR2015-format folder")
    parser.add_argument("--scene", default=d.scene, choices=("default", "street", "signs", "mixed"),
                        help="synthetic scene mix (street adds photo-like built scenes, signs "
                             "more large letter-spaced lettering, mixed 60%% default + 40%% signs)")
    parser.add_argument("--arch", default=d.arch, choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--width", type=float, default=d.width, help="backbone width multiplier")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--crop", type=int, default=d.crop, help="square training crop, pixels")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=d.warmup)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=int, default=d.workers, help="data-loader processes")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--init", help="start from these weights (fine-tuning)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    parser.add_argument("--save-every", type=int, default=d.save_every)
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="stop (and save) after this many seconds; 0 = run all steps")


def run(args) -> int:
    from pathlib import Path

    from engine.errors import DbrtError
    from engine.lazy import require

    require("torch")
    from export.train.config import TrainConfig
    from export.train.loop import train

    if args.data != "synth" and not Path(args.data).is_dir():
        raise DbrtError(f"--data must be 'synth' or an existing folder, got {args.data!r}")
    if args.init and not Path(args.init).is_file():
        raise DbrtError(f"--init checkpoint not found: {args.init}")
    if args.steps <= 0 or args.batch <= 0 or args.crop % 32:
        raise DbrtError("--steps and --batch must be positive and --crop a multiple of 32")
    cfg = TrainConfig(out_dir=args.out, data=args.data, scene=args.scene, arch=args.arch, width=args.width,
                      steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr,
                      warmup=min(args.warmup, args.steps), seed=args.seed, workers=args.workers,
                      threads=args.threads, init=args.init, resume=args.resume,
                      save_every=args.save_every, log_every=args.log_every, time_limit=args.time_limit)
    path = train(cfg)
    print(f"checkpoint: {path}")
    return 0
