"""Reading text on video, three ways over the same decoded frames, side by side in one run:

- `pipeline`: dbrt's threaded pipeline with reading on (`Pipeline(..., Detector(read=True))`:
  preprocess, infer, post-process, read and sink stages overlapping);
- `calls alone`: the same Detector's calls one after the other, nothing overlapped
  (prepare + infer + postprocess, then the Recognizer on that frame's crops);
- `rapidocr`: RapidOCR's full pipeline, det + rec (its own PP-OCRv6 det small at its defaults,
  the same PP-OCRv6 rec small; the direction classifier off, as dbrt has none).

dbrt uses its shipped detector and PP-OCRv6 rec small from the rapidocr wheel. Frames are decoded
once beforehand (the same frames for all three; the pipeline takes them from memory, so decoding
is timed by none of them). On a shared machine the load moves, so each video's frames are cut into
chunks and the three ways take turns chunk by chunk, the order rotating; FPS = frames / summed
seconds. The load average is recorded around every video.

    python -m benchmarks.reading_throughput [--frames 150] [--chunks 3] [--demo-frames 50]
                                            [--ort-spin off]   # -> reading_throughput_ort_spin_off.*

Videos: the bundled demo (always) and the shared data's lightbox and street videos (skipped with
a message when ../shared/data is absent). Without rapidocr it says so and exits 0.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from pipeline.commands._validate import at_least  # noqa: E402
from engine.lazy import optional  # noqa: E402

SHARED_VIDEOS = ("pexels_lightbox_text_960x506.mp4", "pexels_street_captions_1080x1920.mp4")
WAYS = ("calls alone", "pipeline", "rapidocr")


def decoded_frames(path: Path, count: int) -> list:
    """The first `count` frames of a video (dbrt's decoder), as Frames."""
    from pipeline.sources.video import VideoFileSource

    frames = []
    with VideoFileSource(path) as source:
        for frame in source:
            if len(frames) >= count:
                break
            frames.append(frame)
    return frames


def memory_source(frames: Sequence, name: str):
    """A Source that yields frames decoded beforehand (read time stamped as they are taken)."""
    from pipeline.sources import Frame, Source

    class Decoded(Source):
        kind = "memory"

        def __iter__(self) -> Iterator[Frame]:
            for frame in frames:
                self.stats.add(read=1, delivered=1)
                yield Frame(frame.image, frame.index, frame.timestamp, self.name)

        @property
        def total_frames(self) -> Optional[int]:
            return len(frames)

    return Decoded(name)


def calls_alone(detector, images) -> int:
    """Detector calls frame after frame: prepare, infer, postprocess, then read the crops."""
    texts = 0
    for image in images:
        batch, letterboxes = detector.prepare([image])
        dets = detector.postprocess(detector.infer(batch), letterboxes)[0]
        texts += int(np.count_nonzero(detector.read(image, dets).texts))
    return texts


def pipeline_run(detector, frames, name: str) -> int:
    from pipeline.runner import Pipeline

    texts = 0
    with Pipeline([memory_source(frames, name)], detector) as pipe:
        for _, dets in pipe:
            texts += int(np.count_nonzero(dets.texts))
    return texts


def rapidocr_engine():
    from rapidocr import RapidOCR

    return RapidOCR(params={"Global.log_level": "error", "Global.use_cls": False})


def rapidocr_run(engine, images) -> int:
    texts = 0
    for image in images:
        out = engine(image)
        texts += 0 if out.txts is None else sum(1 for t in out.txts if t)
    return texts


def chunks(frames: list, count: int) -> List[list]:
    size = -(-len(frames) // max(count, 1))
    return [frames[i:i + size] for i in range(0, len(frames), size)]


def measure_video(path: Path, count: int, n_chunks: int, detector, engine) -> dict:
    frames = decoded_frames(path, count)
    images = [f.image for f in frames]
    calls_alone(detector, images[:1])  # warm-up: first shapes, first crops
    rapidocr_run(engine, images[:1])
    seconds = dict.fromkeys(WAYS, 0.0)
    texts = dict.fromkeys(WAYS, 0)
    per_chunk = {way: [] for way in WAYS}  # FPS per turn: how much the load moved
    ways = {"calls alone": lambda part: calls_alone(detector, [f.image for f in part]),
            "pipeline": lambda part: pipeline_run(detector, part, path.name),
            "rapidocr": lambda part: rapidocr_run(engine, [f.image for f in part])}
    load_before = os.getloadavg()[0]
    for k, part in enumerate(chunks(frames, n_chunks)):
        order = WAYS[k % 3:] + WAYS[:k % 3]  # each way goes first, second and third in turn
        for way in order:
            t0 = time.perf_counter()
            texts[way] += ways[way](part)
            took = time.perf_counter() - t0
            seconds[way] += took
            per_chunk[way].append(round(len(part) / took, 3))
    fps = {way: len(frames) / seconds[way] for way in WAYS}
    return {"video": path.name, "frame_size": list(images[0].shape[:2]), "frames": len(frames),
            "chunks": n_chunks, "fps_calls_alone": round(fps["calls alone"], 3),
            "fps_pipeline": round(fps["pipeline"], 3), "fps_rapidocr": round(fps["rapidocr"], 3),
            "pipeline_vs_rapidocr": round(fps["pipeline"] / fps["rapidocr"], 3),
            "pipeline_vs_calls_alone": round(fps["pipeline"] / fps["calls alone"], 3),
            "texts_read_dbrt": texts["pipeline"], "texts_read_rapidocr": texts["rapidocr"],
            "load_1min_before": round(load_before, 2),
            "load_1min_after": round(os.getloadavg()[0], 2),
            "fps_per_chunk": per_chunk}


def videos(frames: int, demo_frames: int, only: Optional[str] = None) -> list:
    from pipeline.shipped import DEMO_VIDEO

    out = [(Path(DEMO_VIDEO), demo_frames)] if demo_frames > 0 else []
    folder = common.SHARED_DATA / "video"
    for name in SHARED_VIDEOS:
        if only and only not in name:
            continue
        if (folder / name).is_file():
            out.append((folder / name, frames))
        else:
            print(f"reading_throughput: {folder / name} is absent; skipping it")
    return out


def write_results(rows: list, info: dict, args) -> Path:
    out = common.results_dir()
    stem = "reading_throughput" + (f"_ort_spin_{args.ort_spin}" if args.ort_spin else "")
    spin = f" (the detector's ONNX Runtime spin {args.ort_spin})" if args.ort_spin else ""
    common.write_json(out / f"{stem}.json", {"rows": rows, "machine": info,
                                                        "frames": args.frames, "chunks": args.chunks,
                                                        "ort_spin": args.ort_spin})
    note = (
        "All three over the same frames, decoded beforehand (decoding timed by none). "
        "`calls alone`: `Detector.prepare` + `infer` + `postprocess`, then `Detector.read` "
        "(the Recognizer on that frame's crops), frame after frame; `pipeline`: dbrt's threaded "
        "`Pipeline` with `Detector(read=True)`, batch 1, the frames taken from memory; `rapidocr`: "
        "`RapidOCR()` with `Global.use_cls: False` (det + rec: PP-OCRv6 det small at its "
        "defaults, PP-OCRv6 rec small), frame after frame. dbrt: the shipped detector and the same "
        "PP-OCRv6 rec small. The frames of each video are cut into chunks and the three take turns "
        "chunk by chunk (the order rotating); FPS = frames / summed seconds. Texts read = "
        "non-empty readings summed over the frames. `load_1min_*`: the machine's 1-minute load "
        "average (2 cores, shared with other jobs) before and after the video.\n")
    table = common.markdown_table(rows, [k for k in rows[0] if k != "fps_per_chunk"])
    common.write_markdown(out / f"{stem}.md",
                          f"Reading text on video: dbrt pipeline vs calls alone vs RapidOCR{spin}", [
                              ("FPS with reading on (same frames, same recognizer model)",
                               table + "\n" + note)], info)
    return out


def main(argv=None) -> int:
    parser = common.argument_parser("benchmarks.reading_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=at_least(1), default=150, help="first N frames of each shared video")
    parser.add_argument("--demo-frames", type=at_least(0), default=50, help="first N frames of the demo (0: skip)")
    parser.add_argument("--chunks", type=at_least(1), default=3, help="turns per video (the order rotates)")
    parser.add_argument("--only", help="only the shared videos whose name contains this")
    parser.add_argument("--ort-spin", choices=("on", "off"),
                        help="the detector's ONNX Runtime threads busy-wait (on) or sleep (off) "
                             "when idle (default: ONNX Runtime's, on)")
    args = parser.parse_args(argv)
    if optional("rapidocr") is None:
        print("reading_throughput: needs rapidocr (pip install 'dbrt[read]'); nothing written")
        return 0
    from pipeline.detector import Detector

    engine = rapidocr_engine()
    rows = []
    from engine.loader import RunnerOptions

    spin = None if args.ort_spin is None else args.ort_spin == "on"
    with Detector(read=True, device="cpu", options=RunnerOptions(spin=spin)) as detector:
        for path, count in videos(args.frames, args.demo_frames, args.only):
            rows.append(measure_video(path, count, args.chunks, detector, engine))
            print(rows[-1], flush=True)
    out = write_results(rows, common.machine_info(), args)
    print(f"wrote results under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
