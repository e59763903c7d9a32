"""Scaling out on Triton Inference Server: what the round trip costs, what several streams get
from one server, and whether the detections stay the same.

1. Round trip: one 736x1280 frame (batch 1) through `TritonRunner.infer` with system shared
   memory and with plain gRPC (tensors inside the messages), each divided by the same model
   called in this process with ONNX Runtime (same intra-op threads as the server's model).
   Modes alternate `--rounds` times so a shared machine's load hits all of them; medians over
   the pooled calls. Target: <= 1.1 with shared memory.
2. Streams: N = 1, 2, 4 pipelines (each its own Detector on triton://, the demo video, first
   `--stream-frames` frames, long side `--stream-side`) at once through one server: aggregate
   FPS (every frame of every stream / wall time) and the batch sizes the server's dynamic
   batcher formed (the difference of its statistics endpoint before and after).
3. Agreement: Triton's detections against the local model's on ../shared/data/realdev and on
   every 25th frame of each shared video (identical boxes and scores per image, and ICDAR-style
   box hmean with the local boxes as ground truth); skipped with a message where data is absent.
   `--only agreement` runs this part alone and merges its rows into the committed triton.json /
   triton.md, keeping the round-trip and streams tables measured before.

The server is the nvidia-pytriton wheel's tritonserver (Python backend running the shipped
ONNX with ONNX Runtime) from `--venv` (make triton-venv), on 127.0.0.1, on a repository that
`dbrt triton export` writes.

    python -m benchmarks.triton_bench [--rounds 3] [--repeats 4] [--stream-frames 40]
    python -m benchmarks.triton_bench --only agreement
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from benchmarks import common
from pipeline.commands._validate import at_least

TARGET_SHM = 1.1
REALDEV = common.SHARED_DATA / "realdev"
VIDEOS = [common.SHARED_DATA / "video" / name for name in (
    "pexels_lightbox_text_960x506.mp4", "pexels_street_captions_1080x1920.mp4")]
VIDEO_STEP = 25


def start_server(venv: str, repo: Path, threads: int):
    from engine.triton.server import TritonServer
    from pipeline.cli import main as dbrt

    if dbrt(["triton", "export", "-o", str(repo), "--threads", str(threads)]) != 0:
        raise SystemExit("dbrt triton export failed")
    return TritonServer(repo, venv=venv).start()


def _frame(size=(736, 1280)) -> np.ndarray:
    """One demo frame, normalised as the model wants, at the network size."""
    from dbnet.spec import PRESETS
    from pipeline.preprocess import preprocess_batch
    from pipeline.sampling import read_images
    from pipeline.shipped import DEMO_VIDEO

    image = read_images(DEMO_VIDEO, count=1)[0]
    batch, _ = preprocess_batch([image], PRESETS["db"], size, False)
    return np.ascontiguousarray(batch, np.float32)


def round_trip(url: str, threads: int, rounds: int, repeats: int) -> List[dict]:
    from engine.onnxruntime.runner import OnnxRuntimeRunner
    from engine.triton.options import TritonOptions
    from engine.triton.runner import TritonRunner
    from pipeline.shipped import default_model_path

    batch = _frame()
    runners = {"local ONNX Runtime": OnnxRuntimeRunner(default_model_path(), "cpu", threads=threads),
               "Triton, system shared memory": TritonRunner(url, TritonOptions(shm="system")),
               "Triton, plain gRPC": TritonRunner(url, TritonOptions(shm="none"))}
    samples = {name: [] for name in runners}
    reference = None
    try:
        for runner in runners.values():
            runner.activate()
            prob = runner.infer(batch)["prob"]  # warm-up, and the outputs must agree
            reference = prob if reference is None else reference
            assert np.array_equal(prob, reference), "Triton's map differs from the local one"
        for r in range(rounds):
            for name, runner in runners.items():
                stats = common.measure(lambda: runner.infer(batch), warmup=0, repeats=repeats)
                samples[name].append(stats)
                print(f"  round {r + 1}: {name}: median {stats.median_ms:.1f} ms", flush=True)
    finally:
        for runner in runners.values():
            runner.deactivate()
    return _round_trip_rows(samples)


def _round_trip_rows(samples) -> List[dict]:
    medians = {name: float(np.median([s.median_ms for s in stats])) for name, stats in samples.items()}
    local = medians["local ONNX Runtime"]
    return [dict(mode=name, calls=sum(s.n for s in samples[name]), median_ms=round(ms, 1),
                 per_round_ms=" / ".join(f"{s.median_ms:.0f}" for s in samples[name]),
                 ratio_to_local=round(ms / local, 3)) for name, ms in medians.items()]


def _server_batches(client, model: str) -> dict:
    stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"].get("count", 0))
            for b in stats.get("batch_stats", [])}


def streams(url: str, grpc_address: str, counts: Sequence[int], frames: int, side: int) -> List[dict]:
    import tritonclient.grpc as grpcclient

    from pipeline.detector import Detector
    from pipeline.runner import Pipeline
    from pipeline.shipped import DEMO_VIDEO

    client = grpcclient.InferenceServerClient(grpc_address)
    rows = []
    for n in counts:
        detectors = [Detector(url, lambda s: s.replace(limit_side=side, limit_type="max"))
                     for _ in range(n)]
        pipes = [Pipeline([str(DEMO_VIDEO)], d, close_detector=True, max_frames=frames)
                 for d in detectors]
        before = _server_batches(client, "dbnet")
        reports = [None] * n
        threads = [threading.Thread(target=lambda i=i: reports.__setitem__(i, pipes[i].run()))
                   for i in range(n)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        after = _server_batches(client, "dbnet")
        formed = {b: after.get(b, 0) - before.get(b, 0) for b in sorted(after)
                  if after.get(b, 0) - before.get(b, 0)}
        done = sum(r["frames"] for r in reports)
        failed = sum(r["failed"] for r in reports)
        executions = sum(formed.values())
        rows.append(dict(streams=n, frames=done, failed=failed, wall_s=round(wall, 2),
                         aggregate_fps=round(done / wall, 2),
                         per_stream_fps=round(done / wall / n, 2),
                         server_executions=executions,
                         mean_server_batch=round(sum(b * c for b, c in formed.items()) / executions, 2)
                         if executions else 0.0,
                         server_batches=" ".join(f"{b}x{c}" for b, c in formed.items())))
        print(f"  {n} stream(s): {rows[-1]['aggregate_fps']} FPS, server batches {formed}", flush=True)
        if done != n * frames or failed:
            raise SystemExit(f"{n} streams: {done} of {n * frames} frames written, {failed} failed")
    client.close()
    return rows


def agreement(url: str, video_frames: int) -> List[dict]:
    from pipeline.detector import Detector
    from pipeline.evaluate import evaluate_image
    from pipeline.sampling import read_images

    sets = []
    if (REALDEV / "images").is_dir():
        sets.append(("realdev (13 photos)", read_images(REALDEV / "images")))
    else:
        print(f"  skipped realdev: {REALDEV} is absent", flush=True)
    for video in VIDEOS:
        if video.is_file():
            sets.append((f"{video.name}, every {VIDEO_STEP}th frame",
                         _every(video, VIDEO_STEP, video_frames)))
        else:
            print(f"  skipped a video: {video} is absent", flush=True)
    rows = []
    with Detector(url) as remote, Detector(None, device="cpu") as local:
        for name, images in sets:
            same = boxes = matched = 0
            theirs = 0
            for image in images:
                there, here = remote.detect(image), local.detect(image)
                same += int(np.array_equal(there.polygons, here.polygons)
                            and np.array_equal(there.scores, here.scores))
                result = evaluate_image(here.polygons, [False] * len(here), there.polygons)
                boxes, theirs, matched = boxes + result.gt_care, theirs + result.det_care, \
                    matched + result.matched
            p = matched / theirs if theirs else 1.0
            r = matched / boxes if boxes else 1.0
            rows.append(dict(images=name, count=len(images), identical=same, local_boxes=boxes,
                             triton_boxes=theirs, box_hmean=round(2 * p * r / (p + r), 4) if p + r else 0.0))
            print(f"  {name}: {same}/{len(images)} identical, hmean {rows[-1]['box_hmean']}", flush=True)
    return rows


def _every(video: Path, step: int, count: int) -> List[np.ndarray]:
    from pipeline.sources import open_sources

    (source,) = open_sources([str(video)])
    frames = []
    try:
        for frame in source:
            if frame.index % step == 0:
                frames.append(frame.image)
            if len(frames) == count:
                break
    finally:
        source.close()
    return frames


def _spread(row: dict) -> float:
    """(max - min) / median of a mode's per-round medians, in percent."""
    values = [float(v) for v in row["per_round_ms"].split(" / ")]
    return 100.0 * (max(values) - min(values)) / row["median_ms"]


def write_results(args, rt_rows, stream_rows, agree_rows, load, info=None,
                  agreement_run: Optional[dict] = None) -> int:
    """`agreement_run` (command, load_average_before, date_utc) when only the agreement rows are
    new: the other tables, `args`, `load` and `info` are the earlier run's."""
    out = common.results_dir()
    info = info or common.machine_info()
    shm = next(r for r in rt_rows if "shared memory" in r["mode"])["ratio_to_local"]
    local = next(r for r in rt_rows if r["mode"].startswith("local"))
    payload = dict(benchmark="triton", args=vars(args), target_shm_ratio=TARGET_SHM,
                   shm_ratio=shm, round_trip=rt_rows, streams=stream_rows, agreement=agree_rows,
                   load_average_before=load, machine=info)
    if agreement_run:
        payload["agreement_run"] = agreement_run
    common.write_json(out / "triton.json", payload)
    common.plot_lines({"aggregate FPS": [(r["streams"], r["aggregate_fps"]) for r in stream_rows],
                       "mean batch the server formed": [(r["streams"], r["mean_server_batch"])
                                                         for r in stream_rows]},
                      out / "triton_streams.png", "N streams through one Triton server "
                      f"(long side {args.stream_side}, {args.stream_frames} frames each)",
                      "concurrent streams", "FPS / frames per server batch")
    verdict = "meets" if shm <= TARGET_SHM else "misses"
    sections = [
        ("Round trip vs the local model call (736x1280, batch 1)",
         f"Triton with system shared memory: **{shm:.3f}x** the local call ({verdict} the "
         f"<= {TARGET_SHM} target). Medians of {args.rounds} alternating rounds of "
         f"{args.repeats} calls; the server's model runs ONNX Runtime with {args.threads} "
         "intra-op threads, as the local one. The local call's own round medians spread by "
         f"{_spread(local):.0f} % on this shared machine, more than the transport costs, so read "
         "the ratios as 'adds little', not as exact sizes.\n\n" + common.markdown_table(rt_rows)),
        ("N streams through one server",
         "Each stream is a dbrt Pipeline with its own Triton client (2 requests in flight); "
         "`server_batches` is `size x executions` from the server's statistics endpoint. "
         "The server's two cores are the limit, so more streams share the same FPS, in larger "
         "batches.\n\n"
         + common.markdown_table(stream_rows) + "\n![streams](triton_streams.png)\n"),
        ("Same detections through Triton as locally",
         common.markdown_table(agree_rows) if agree_rows else "_skipped: no shared data_\n"),
        ("Command", _command_text(args, load, agreement_run)),
    ]
    common.write_markdown(out / "triton.md", "Triton Inference Server: round trip, streams, "
                          "agreement", sections, info)
    print(f"wrote {out / 'triton.md'}, triton.json, triton_streams.png")
    return 0


def _command_text(args, load, agreement_run: Optional[dict]) -> str:
    text = (f"`python -m benchmarks.triton_bench {' '.join(args.argv)}`; 1-minute load average "
            f"{load[0]:.1f} before the run.\n")
    if agreement_run:
        text += (f"\nThe agreement table alone was measured again later with `{agreement_run['command']}` "
                 f"({agreement_run['date_utc']}, 1-minute load average "
                 f"{agreement_run['load_average_before'][0]:.1f} before it); the round-trip and "
                 "streams tables are the earlier run's.\n")
    return text


def previous_results() -> dict:
    """The committed triton.json that `--only agreement` merges into."""
    path = common.results_dir() / "triton.json"
    try:
        previous = json.loads(path.read_text())
        previous["round_trip"], previous["streams"], previous["args"]  # noqa: B018 - must be there
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"--only agreement: no earlier full run to merge into ({path}: {exc}); "
                         "run without --only first")
    return previous


def merge_agreement(previous: dict, agree_rows: List[dict], argv: Sequence[str], load) -> int:
    args = argparse.Namespace(**previous["args"])
    run = dict(command=" ".join(["python -m benchmarks.triton_bench", *argv]),
               load_average_before=[round(x, 2) for x in load],
               date_utc=common.machine_info()["date_utc"])
    return write_results(args, previous["round_trip"], previous["streams"], agree_rows,
                         previous["load_average_before"], previous["machine"], agreement_run=run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = common.argument_parser("benchmarks.triton_bench", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", default=".venv-triton", help="virtual environment with tritonserver")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads on both sides")
    p.add_argument("--rounds", type=at_least(1), default=3)
    p.add_argument("--repeats", type=at_least(1), default=4)
    p.add_argument("--streams", type=at_least(1), nargs="+", default=[1, 2, 4])
    p.add_argument("--stream-frames", type=at_least(1), default=40)
    p.add_argument("--stream-side", type=int, default=640)
    p.add_argument("--video-frames", type=at_least(1), default=12, help="sampled frames of each video")
    p.add_argument("--only", choices=["agreement"],
                   help="run this part alone and merge it into the committed results")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else []
    from engine.triton.server import TritonInstall, TritonServerError

    try:  # a machine without the server measures nothing: one line, before any work
        TritonInstall.find(args.venv)
    except TritonServerError as exc:
        print(f"triton_bench: skipped: {exc}")
        return common.SKIPPED
    load = os.getloadavg()
    previous = previous_results() if args.only else None
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(args.venv, Path(tmp) / "repo", args.threads)
        try:
            url = f"triton://{server.grpc_url}/dbnet"
            if args.only == "agreement":
                print("agreement:", flush=True)
                return merge_agreement(previous, agreement(url, args.video_frames), args.argv, load)
            print("round trip:", flush=True)
            rt_rows = round_trip(url, args.threads, args.rounds, args.repeats)
            print("streams:", flush=True)
            stream_rows = streams(url, server.grpc_url, args.streams, args.stream_frames,
                                  args.stream_side)
            print("agreement:", flush=True)
            agree_rows = agreement(url, args.video_frames)
        finally:
            server.close()
    return write_results(args, rt_rows, stream_rows, agree_rows, load)


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    raise SystemExit(main(args))
