"""A real-data training run on a GPU in one go (issue 17): pack the training data small enough
to carry to a GPU machine, train there within a time budget, bring the run back.

    python -m benchmarks.gpu_train pack --out .cache/train_pack          # here, from data/real
    bash benchmarks/gpu_proof.sh train --pack .cache/train_pack --minutes 6   # on the GPU machine

`pack` writes WebP copies of the ICDAR 2015 training split (full size, ground truth as is), the
validation split and, with `--masks DIR`, as many masked photos (long side <= 640, masks resized
nearest) as fit the size budget, plus the pyclipper wheel the GPU image lacks, and a MANIFEST.json.

`run` continues the shipped model with the recipe that made it (the model card's stage 11: ICDAR
2015 train and synthetic scenes, DB shrink ratio 0.3; masked photos join the mix when the pack
has them) with `dbrt train --device cuda --amp`; a short
calibration run measures the step time first, so the schedule (warm-up, poly decay to zero)
ends inside the budget instead of being cut off mid-way. It validates on the packed validation
split during the run (best.pt = best validation hmean) and writes, under --out, a tarball with
the EMA weights of best and last (slim checkpoints that `python -m export.train.ship` reads),
val.jsonl, config.json, the log and the step rate. Choosing and shipping happen back on the
development machine, on the original (not re-encoded) validation images.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import common

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "export" / "assets" / "dbnet_default.pt"
WEBP_TRAIN, WEBP_VAL = 75, 90   # WebP quality: training copies, validation copies
MASK_SIDE = 640                 # masked photos: long side at most this (as the first GPU stage)


# -- pack ---------------------------------------------------------------------------------------
def _webp(image: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise SystemExit("this OpenCV cannot write WebP")
    return data.tobytes()


def pack_icdar(src: Path, dst: Path, quality: int) -> int:
    """WebP copies of an ICDAR 2015-format folder, same size, ground truth copied; bytes."""
    import cv2

    from export.train.data import icdar_gt_path, read_icdar_folder

    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for path, _, _ in read_icdar_folder(src):
        data = _webp(cv2.imread(str(path), cv2.IMREAD_COLOR), quality)
        (dst / f"{path.stem}.webp").write_bytes(data)
        gt = icdar_gt_path(src, path).read_bytes()
        (dst / f"gt_{path.stem}.txt").write_bytes(gt)
        total += len(data) + len(gt)
    return total


def pack_masks(src: Path, dst: Path, budget: int, quality: int) -> tuple:
    """Masked photos, evenly spaced over the folder, reduced, until `budget` bytes are used;
    (count, bytes)."""
    import cv2

    from export.train.data import read_mask_folder

    pairs = read_mask_folder(src)
    dst.mkdir(parents=True, exist_ok=True)
    used = count = 0
    spread = np.argsort([(i * 0.6180339887) % 1 for i in range(len(pairs))])  # any prefix: even
    for index in spread.tolist():
        image_path, mask_path = pairs[index]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        scale = MASK_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        data = _webp(image, quality)
        png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1]
        if used + len(data) + len(png) > budget:
            break
        (dst / f"{image_path.stem}.webp").write_bytes(data)
        (dst / f"{image_path.stem}_mask.png").write_bytes(png.tobytes())
        used, count = used + len(data) + len(png), count + 1
    return count, used


def pack(args) -> int:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    budget = int(args.budget_mib * 2 ** 20)
    wheels = sorted(Path(args.wheels).glob("pyclipper-*.whl"))
    if not wheels:
        raise SystemExit(f"no pyclipper wheel in {args.wheels} (the GPU image lacks pyclipper): "
                         "run `bash benchmarks/gpu_proof.sh prepare` first")
    (out / "wheels").mkdir(parents=True)
    shutil.copy(wheels[-1], out / "wheels")
    used = wheels[-1].stat().st_size
    used += pack_icdar(Path(args.icdar), out / "ic15_train", WEBP_TRAIN)
    used += pack_icdar(Path(args.val), out / "ic15_val", WEBP_VAL)
    if used > budget:
        raise SystemExit(f"--budget-mib {args.budget_mib}: the ICDAR splits alone take {used / 2**20:.1f} MiB")
    count, mask_bytes = (pack_masks(Path(args.masks), out / "masks", budget - used, WEBP_TRAIN)
                         if args.masks else (0, 0))
    manifest = {"icdar": str(args.icdar), "val": str(args.val), "masks": args.masks or None,
                "masks_packed": count, "mib": round((used + mask_bytes) / 2 ** 20, 1),
                "webp_quality": {"train": WEBP_TRAIN, "val": WEBP_VAL}, "mask_long_side": MASK_SIDE}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps(manifest))
    return 0


# -- run ----------------------------------------------------------------------------------------
def train_args(pack_dir: Path, out: Path, steps: int, batch: int, workers: int, amp: bool,
               time_limit: float, val_every: int) -> List[str]:
    """`dbrt train` flags of the GPU run (the model card's stage 11 recipe, scaled to the GPU:
    larger crops and batches, so a peak rate above stage 11's 2e-4 / 3e-4 at batch 8); a pack
    with masked photos mixes them in (their masks are shrunk at about 0.4 already)."""
    masks = pack_dir / "masks"
    real = ([f"{pack_dir / 'ic15_train'}=0.6", f"{masks}=0.2"] if masks.is_dir()
            else [f"{pack_dir / 'ic15_train'}=0.8"])
    return ["train", "--device", "cuda", *(["--amp"] if amp else []),
            *(flag for source in real for flag in ("--data", source)), "--data", "synth=0.2",
            "--scene", "mixed",
            "--shrink-ratio", "0.3", "--init", str(SHIPPED),
            "--crop", "640", "--batch", str(batch), "--steps", str(steps), "--lr", "5e-4",
            "--warmup", str(max(20, steps // 20)), "--seed", "41", "--workers", str(workers),
            "--threads", "4", "--val", str(pack_dir / "ic15_val"), "--val-every", str(val_every),
            "--val-tune",
            "--save-every", "100", "--log-every", "20", "--time-limit", str(int(time_limit)),
            "--out", str(out)]


class _Tee:
    """A text stream that writes to several (the console and a log file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> None:
        for stream in self.streams:
            stream.write(text)
            stream.flush()

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _dbrt(argv: List[str], log: Path) -> int:
    """`dbrt ARGV` in this process, its output also appended to `log`."""
    from pipeline.cli import main

    with open(log, "a") as f, contextlib.redirect_stdout(_Tee(sys.stdout, f)):
        return main(argv)


def step_seconds(log: Path) -> Optional[float]:
    """The median 's/it' of a training log's progress lines after the first (warm-up)."""
    rates = [float(line.split(" s/it")[0].rsplit(" ", 1)[1]) for line in log.read_text().splitlines()
             if line.startswith("step ") and " s/it" in line]
    return float(np.median(rates[1:])) if len(rates) > 1 else None


def loader_share(log: Path) -> Optional[float]:
    """The median 'data N%' (the loader's share of the step time) of a training log's progress
    lines after the first: near 100 the run is input-bound, more loader workers or cheaper
    samples would speed it up; near 0 the GPU is the limit."""
    shares = [float(line.split(" data ")[1].split("%")[0]) for line in log.read_text().splitlines()
              if line.startswith("step ") and " data " in line]
    return float(np.median(shares[1:])) if len(shares) > 1 else None


def calibrate(pack_dir: Path, out: Path, batch: int, workers: int) -> tuple:
    """(seconds per step, amp) from a 120-step run; with --amp first, without it if that fails."""
    for amp in (True, False):
        run = out / f"calibrate_amp{int(amp)}"
        log = out / f"calibrate_amp{int(amp)}.log"
        try:
            code = _dbrt(train_args(pack_dir, run, 120, batch, workers, amp, 0, 0) + ["--val-images", "1"], log)
        except Exception as error:  # an autocast or driver failure: try without amp
            print(f"calibration with amp={amp} failed: {error!r}", flush=True)
            continue
        seconds = step_seconds(log) if code == 0 else None
        if seconds:
            return seconds, amp
    raise SystemExit("calibration failed with and without --amp (see calibrate_*.log)")


def slim_checkpoint(src: Path, dst: Path) -> None:
    """EMA weights, step, config and validation of a checkpoint: what shipping needs."""
    import torch

    ck = torch.load(str(src), weights_only=True)
    torch.save({k: ck[k] for k in ("model", "step", "config", "validation") if k in ck}, str(dst))


def run(args) -> int:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_train run: torch sees no CUDA GPU")
    start = time.time()
    budget = args.minutes * 60
    pack_dir, out = Path(args.pack).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds, amp = calibrate(pack_dir, out, args.batch, args.workers)
    left = budget - (time.time() - start) - 90  # final validation, saving, packing
    steps = max(100, int(left / (seconds * 1.08)))  # 8%: the validations inside the run
    print(f"calibrated: {seconds:.3f} s/step (amp {amp}); {steps} steps in {left:.0f} s", flush=True)
    run_dir, log = out / "run", out / "train.log"
    code = _dbrt(train_args(pack_dir, run_dir, steps, args.batch, args.workers, amp, left + 30,
                            max(100, steps // 4)), log)
    summary = {"machine": common.machine_info(), "steps_planned": steps, "seconds_per_step": seconds,
               "amp": amp, "batch": args.batch, "workers": args.workers,
               "loader_share_pct": loader_share(log), "exit_code": code, "wall_s": round(time.time() - start, 1),
               "manifest": json.loads((pack_dir / "MANIFEST.json").read_text())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    with tarfile.open(out / f"gpu_train_{common.machine_name()}.tar.gz", "w:gz") as tar:
        for name in ("best.pt", "last.pt"):
            if (run_dir / name).exists():
                slim_checkpoint(run_dir / name, out / f"{name[:-3]}_slim.pt")
                tar.add(out / f"{name[:-3]}_slim.pt", arcname=f"{name[:-3]}_slim.pt")
        for path in (run_dir / "val.jsonl", run_dir / "config.json", log, out / "summary.json",
                     *sorted(out.glob("calibrate_*.log"))):
            if path.exists():
                tar.add(path, arcname=path.name)
    return code


def main(argv=None) -> int:
    parser = common.argument_parser("benchmarks.gpu_train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack the training data (run where the data is)")
    p.add_argument("--out", default=str(REPO / ".cache" / "train_pack"))
    p.add_argument("--icdar", default="data/real/ic15_tr", help="ICDAR 2015 training split")
    p.add_argument("--val", default="data/real/ic15_val", help="validation split")
    p.add_argument("--masks", default="", help="masked photos to pack too (default: none, as the "
                   "run's stage 11 recipe)")
    p.add_argument("--budget-mib", type=float, default=44.0, help="size of the whole pack")
    p.add_argument("--wheels", default=str(REPO / ".whl"), help="where the pyclipper wheel is")
    r = sub.add_parser("run", help="train on a GPU machine")
    r.add_argument("--pack", default=str(REPO / ".cache" / "train_pack"))
    r.add_argument("--out", default=str(REPO / "out" / "gpu_train"))
    r.add_argument("--minutes", type=float, default=6.0, help="the whole run, calibration included")
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--workers", type=int, default=14)
    args = parser.parse_args(argv)
    return pack(args) if args.command == "pack" else run(args)


if __name__ == "__main__":
    sys.exit(main())
