"""`dbrt synth`: write a synthetic scene-text dataset and/or the demo video."""
from __future__ import annotations

from pathlib import Path

from ._validate import at_least, output_file, output_folder, seed

NAME = "synth"
HELP = "write a synthetic scene-text dataset (images + gt.json) and/or the demo video"
ORDER = 65
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
# upper bounds that catch a mistyped value (an extra zero) before hours of writing
MAX_COUNT = 100_000    # about 15 GB of 1280x720 images
MAX_SECONDS = 3600.0   # an hour of demo video
DESCRIPTION = """Synthetic scene text made from a seed (same seed, same output). --dataset DIR
writes DIR/images/*.jpg and DIR/gt.json (realdev layout, readable by `dbrt eval` and
`dbrt train --data DIR`) into a new or empty folder, or over a synthetic dataset (DIR/synth.json
marks one), never over another dataset's files; --video PATH writes the demo video (H.264 MP4)."""


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", metavar="DIR", type=output_folder,
                        help="write a dataset of --count images here")
    parser.add_argument("--count", type=at_least(1, at_most=MAX_COUNT), default=100,
                        help=f"number of dataset images (at most {MAX_COUNT:,})")
    parser.add_argument("--size", default="1280x720", help="dataset image size WxH")
    parser.add_argument("--seed", type=seed, default=10_000,
                        help="dataset seed, 0 to 2**32 - 1 (training uses seed 0; keep evaluation "
                             "sets apart)")
    parser.add_argument("--video", metavar="PATH", type=output_file,
                        help="write the demo video here (.mp4)")
    parser.add_argument("--video-seed", type=seed, default=2024, help="demo video seed, 0 to 2**32 - 1")
    parser.add_argument("--seconds", type=at_least(0.0, float, strict=True, at_most=MAX_SECONDS),
                        default=10.0, help=f"demo video length, seconds (at most {MAX_SECONDS:g})")


def _parse_size(text: str):
    from engine.errors import DbrtError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DbrtError(f"--size must look like 1280x720, got {text!r}") from None
    if not (64 <= w <= 8192 and 64 <= h <= 8192):
        raise DbrtError(f"--size must be between 64x64 and 8192x8192, got {text!r}")
    return w, h


def _shipped(path) -> bool:
    """Whether `path` is one of the files in the package's assets (the demo video a run
    without sources plays: overwritten, it is not what the README's numbers came from)."""
    import pipeline

    assets = (Path(pipeline.__file__).resolve().parent / "assets")
    target = Path(path).resolve()
    return target.parent == assets and target.exists()


def run(args) -> int:
    from engine.errors import DbrtError

    if not args.dataset and not args.video:
        raise DbrtError("nothing to do: give --dataset DIR and/or --video PATH")
    if args.video and Path(args.video).suffix.lower() not in VIDEO_SUFFIXES:
        raise DbrtError(f"--video {args.video}: the demo video is H.264 in "
                        f"{' / '.join(VIDEO_SUFFIXES)}; name the file with one of those")
    if args.video and _shipped(args.video):
        raise DbrtError(f"--video {args.video} is a file dbrt ships (the bundled demo video "
                        "that `dbrt run` plays by default); write the new video elsewhere")
    w, h = _parse_size(args.size)
    if args.dataset:
        from export.synth.dataset import write_dataset

        gt = write_dataset(args.dataset, args.count, seed=args.seed, height=h, width=w)
        print(f"dataset: {args.count} images, ground truth {gt}")
    if args.video:
        from export.synth.video import write_demo_video

        path = write_demo_video(args.video, seed=args.video_seed, seconds=args.seconds)
        print(f"video: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
