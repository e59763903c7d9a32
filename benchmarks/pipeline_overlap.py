"""Does the threaded pipeline keep up with its own inference stage?

On the same video, with the same detector and batch size:
  1. inference only: frames are decoded and preprocessed outside the clock; only
     `detector.infer` is timed; FPS = frames / summed inference time (the ceiling);
  2. the full pipeline (decode -> preprocess -> infer -> postprocess -> JSON lines, in threads);
     FPS = frames / wall time from the first frame requested to the last result written;
  3. the same with the annotated video sink as well (what `dbrt run` does by default).
Passes 1 and 2 alternate `--rounds` times and inference only runs once more at the end, so that
a shared machine's changing load hits both; each mode's FPS is pooled over its passes (frames /
summed seconds) and the ratio is pipeline (JSON lines) / inference only.
`infer_busy` (pipeline passes) is the inference stage's summed time / wall time: near 1.0 means
the other stages are fully hidden behind it, and any remaining gap to inference-only comes from
each engine call being slower while the other stages share the CPU.
Every pass must process every frame of the video (checked), so a speed can never come from
dropped frames. Target on CPU: pipeline >= 0.9 x inference only.

Watching the run: each round also has a pass with `--serve` and one viewer reading the MJPEG
stream the whole pass (in a process of its own), and one with `--mqtt` publishing one event per
frame to a local Mosquitto (where one is installed), next to the JSON-lines pass. Targets:
serve >= 0.95 x the JSON-lines FPS; MQTT < 1 % more wall time. On a shared machine each pass also
records the process's CPU time (all its threads; the viewer and the broker are other processes):
CPU per frame changes with the work done, far less with the neighbours' load than wall time.

    python -m benchmarks.pipeline_overlap [--video V] [--model M.onnx] [--max-side 512] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from benchmarks import common
from pipeline.commands._validate import at_least
from benchmarks.serve_overhead import rotated

VIDEO = common.SHARED_DATA / "video" / "pexels_lightbox_text_960x506.mp4"
TARGET = 0.9
SERVE_TARGET = 0.95  # --serve with one viewer, x the JSON-lines FPS
MQTT_TARGET = 0.01  # --mqtt: most extra wall time


def pick_model(path: Optional[str], workdir: Path):
    """(model path, description): --model, else the shipped model, else random weights."""
    from pipeline.shipped import ASSETS

    if path:
        return Path(path), f"{Path(path).name} (given)"
    shipped = ASSETS / "dbnet_default.onnx"
    if shipped.is_file():
        return shipped, "shipped pipeline/assets/dbnet_default.onnx"
    from export.model import DBNet
    from export.onnx_export import export_onnx

    model = DBNet("resnet18", width=0.5).eval()
    out = workdir / "random_resnet18_w0.5.onnx"
    export_onnx(model, out, parity_shapes=None)
    return out, "half-width ResNet-18 DBNet with RANDOM weights (no shipped model in this checkout)"


def inference_only(video: Path, detector, batch: int) -> dict:
    from pipeline.sources import VideoFileSource

    times: List[float] = []
    frames = 0
    pending: List[np.ndarray] = []

    def flush():
        array, _ = detector.prepare(pending)
        start = time.perf_counter()
        detector.infer(array)
        times.append(time.perf_counter() - start)

    for frame in VideoFileSource(video).open():
        pending.append(frame.image)
        frames += 1
        if len(pending) == batch:
            flush()
            pending = []
    if pending:
        flush()
    total = sum(times)
    stats = common.Stats.from_seconds(times)
    return dict(mode="inference only", frames=frames, seconds=round(total, 3),
                fps=round(frames / total, 3), infer_p50_ms=stats.median_ms, infer_mean_ms=stats.mean_ms)


JSONL, ANNOTATED, SERVE, MQTT = ("pipeline (JSON lines)", "pipeline + annotated video",
                             "pipeline + serve, 1 viewer", "pipeline + mqtt, 1 event per frame")


def full_pipeline(video: Path, detector, batch: int, workdir: Path, mode: str = JSONL,
                  broker_port: Optional[int] = None) -> dict:
    from pipeline.runner import Pipeline
    from pipeline.sinks import JsonlSink, VideoSink

    sinks = [JsonlSink(workdir / "detections.jsonl")]
    if mode == ANNOTATED:
        sinks.append(VideoSink(workdir / "annotated.mp4", fps=25))
    pipe = Pipeline([video], detector, batch=batch, sinks=sinks)
    watch = _watch(pipe, mode, broker_port)
    cpu = time.process_time()
    report = pipe.run()
    cpu = time.process_time() - cpu
    extra = watch()
    stages = report["stages"]
    row = dict(mode=mode, frames=report["frames"], seconds=report["wall_s"], fps=report["fps"],
               cpu_s=round(cpu, 3), cpu_ms_per_frame=round(cpu * 1e3 / max(1, report["frames"]), 2),
               infer_p50_ms=stages["infer"]["p50_ms"], **extra)
    row.update({f"{s}_p50_ms": stages[s]["p50_ms"] for s in ("decode", "preprocess", "postprocess", "sink")})
    # how busy the pipeline kept its inference stage: 1.0 = it never waited for the other stages
    infer = stages["infer"]
    row["infer_busy"] = round(infer["mean_ms"] * infer["count"] / 1e3 / report["wall_s"], 3)
    row["infer_mean_ms"] = infer["mean_ms"]
    row["prepared_queue_mean"] = report["queues"]["prepared"]["mean"]
    row["e2e_p50_ms"] = report["end_to_end"]["p50_ms"]
    row["e2e_p99_ms"] = report["end_to_end"]["p99_ms"]
    return row


def _watch(pipe, mode: str, broker_port: Optional[int]):
    """Add the serve / MQTT sink that `mode` asks for; returns what to call after the run
    (it stops the viewer and gives the row's extra columns)."""
    if mode == SERVE:
        from benchmarks.serve_overhead import ViewerProcess
        from pipeline.serve import ServeSink

        sink = ServeSink(pipe, port=0)
        pipe.sinks.append(sink)
        viewer = ViewerProcess(sink.server.port)
        return lambda: dict(mjpeg_parts=viewer.stop(), jpeg_encodes=sink.view.encodes)
    if mode == MQTT:
        from pipeline.mqtt import MqttSink

        mqtt = MqttSink(f"mqtt://127.0.0.1:{broker_port}/bench/events")
        pipe.sinks.append(mqtt)
        return lambda: dict(mqtt_acked=mqtt.counters()["acked_total"])
    return dict


def parse_args(argv):
    p = common.argument_parser("benchmarks.pipeline_overlap", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(VIDEO))
    p.add_argument("--model", help="ONNX model (default: shipped, else random weights)")
    p.add_argument("--max-side", type=int, default=512, help="cap the long side (CPU-friendly)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--batch", type=at_least(1), default=1)
    p.add_argument("--rounds", type=at_least(1), default=2, help="(inference only, pipeline) pairs")
    p.add_argument("--no-video-sink", action="store_true", help="skip the annotated-video pass")
    p.add_argument("--no-watch", action="store_true", help="skip the --serve and --mqtt passes")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    video = Path(args.video)
    if not video.is_file() and video != Path(VIDEO):
        print(f"pipeline_overlap: error: --video {video}: not found", file=sys.stderr)
        return 2
    if not video.is_file():
        print(f"pipeline_overlap: skipped: {video} not found (only dev machines have ../shared/data)")
        return common.SKIPPED
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector
    from pipeline.sources import VideoFileSource

    expected = VideoFileSource(video).open().total_frames
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, described = pick_model(args.model, workdir)
        described = f"{described}, sha256 {common.file_sha256(model)}"
        detector = Detector(model, lambda spec: spec.replace(limit_side=args.max_side, limit_type="max"),
                            device="cpu", options=RunnerOptions(threads=args.threads))
        warm, _ = detector.prepare([next(iter(VideoFileSource(video).open())).image])
        for _ in range(3):
            detector.infer(warm)
        broker, broker_port = (None, None)
        if not args.no_watch:
            from benchmarks.serve_overhead import start_mosquitto

            broker, broker_port = start_mosquitto(workdir)
        load_before = os.getloadavg()
        rows = []
        try:
            for run_pass in _passes(args, video, detector, workdir, broker_port):
                rows.append(run_pass())
                print(f"  {rows[-1]['mode']}: {rows[-1]['frames']} frames, {rows[-1]['fps']:.2f} "
                      f"FPS, {rows[-1].get('cpu_ms_per_frame', '-')} CPU ms/frame", flush=True)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=30)
        load_after = os.getloadavg()
        size = tuple(warm.shape[2:])
        detector.close()
    return write_results(args, rows, expected, described, size, load_before, load_after)


def _passes(args, video, detector, workdir, broker_port) -> list:
    """Interleaved (load drifts hit every mode): per round inference only, then JSON lines and
    the watched modes in a rotated order; the annotated-video pass and a last inference-only
    pass at the end."""
    def pipeline(mode):
        return lambda: full_pipeline(video, detector, args.batch, workdir, mode, broker_port)

    watched = [] if args.no_watch else [SERVE] + ([MQTT] if broker_port else [])
    infer = lambda: inference_only(video, detector, args.batch)  # noqa: E731
    passes = []
    for round_ in range(args.rounds):
        passes += [infer] + [pipeline(m) for m in rotated([JSONL] + watched, round_)]
    return passes + ([] if args.no_video_sink else [pipeline(ANNOTATED)]) + [infer]


def _pooled_fps(rows, mode: str) -> float:
    """frames / seconds summed over every pass of one mode."""
    chosen = [r for r in rows if r["mode"] == mode]
    return sum(r["frames"] for r in chosen) / sum(r["seconds"] for r in chosen)


def _watch_results(rows) -> dict:
    """Serve / MQTT against the JSON-lines passes: pooled FPS and CPU per frame, and the spread
    (min..max) of each pass against the JSON-lines pass of its own round."""
    out = {}
    base = [r for r in rows if r["mode"] == JSONL]
    for key, mode in (("serve", SERVE), ("mqtt", MQTT)):
        chosen = [r for r in rows if r["mode"] == mode]
        if not chosen:
            continue
        fps_ratio = _pooled_fps(rows, mode) / _pooled_fps(rows, JSONL)
        cpu_ratio = _cpu_per_frame(chosen) / _cpu_per_frame(base)
        paired = [w["fps"] / b["fps"] for w, b in zip(chosen, base)]
        paired_cpu = [w["cpu_ms_per_frame"] / b["cpu_ms_per_frame"] for w, b in zip(chosen, base)]
        out[key] = dict(fps_ratio=round(fps_ratio, 3), extra_wall_time=round(1 / fps_ratio - 1, 4),
                        cpu_per_frame_ratio=round(cpu_ratio, 3),
                        paired_fps_ratio_range=[round(min(paired), 3), round(max(paired), 3)],
                        paired_cpu_ratio_range=[round(min(paired_cpu), 3), round(max(paired_cpu), 3)])
    fps = [r["fps"] for r in base]
    out["jsonl_fps_spread"] = round((max(fps) - min(fps)) / (sum(fps) / len(fps)), 3)
    return out


def _cpu_per_frame(rows) -> float:
    return sum(r["cpu_s"] for r in rows) / sum(r["frames"] for r in rows)


def _watch_summary(watch: dict) -> str:
    if "serve" not in watch:
        return ""
    serve, text = watch["serve"], []
    text.append(f" Watching the run, against the JSON-lines passes: with --serve and one viewer "
                f"**{serve['fps_ratio']:.3f}** x the FPS (target {SERVE_TARGET}: "
                f"{'met' if serve['fps_ratio'] >= SERVE_TARGET else 'NOT met'}; pass by pass "
                f"{serve['paired_fps_ratio_range'][0]:.2f}..{serve['paired_fps_ratio_range'][1]:.2f}) "
                f"and {serve['cpu_per_frame_ratio']:.3f} x the process CPU time per frame "
                f"({serve['paired_cpu_ratio_range'][0]:.2f}..{serve['paired_cpu_ratio_range'][1]:.2f})")
    mqtt = watch.get("mqtt")
    if mqtt:
        text.append(f"; with --mqtt (one event per frame, QoS 1, local Mosquitto) "
                    f"**{mqtt['extra_wall_time']:+.1%}** wall time (target < {MQTT_TARGET:.0%}: "
                    f"{'met' if mqtt['extra_wall_time'] < MQTT_TARGET else 'NOT met'}; pass by pass "
                    f"FPS {mqtt['paired_fps_ratio_range'][0]:.2f}..{mqtt['paired_fps_ratio_range'][1]:.2f} x) "
                    f"and {mqtt['cpu_per_frame_ratio'] - 1:+.1%} CPU time per frame "
                    f"({mqtt['paired_cpu_ratio_range'][0]:.2f}..{mqtt['paired_cpu_ratio_range'][1]:.2f} x)")
    text.append(f". The JSON-lines passes themselves spread over {watch['jsonl_fps_spread']:.0%} of "
                "their FPS: a difference smaller than that is the machine's load, not a cost.")
    return "".join(text)


def write_results(args, rows, expected, described, size, load_before, load_after) -> int:
    ceiling = _pooled_fps(rows, "inference only")
    for row in rows:
        row["ratio_to_inference"] = round(row["fps"] / ceiling, 3)
    complete = all(r["frames"] == expected for r in rows)
    ratio = round(_pooled_fps(rows, JSONL) / ceiling, 3)
    busy = [r["infer_busy"] for r in rows if r["mode"] == JSONL]
    pipeline_row = dict(ratio_to_inference=ratio, infer_busy=round(float(np.mean(busy)), 3))
    verdict = ratio >= TARGET
    watch = _watch_results(rows)
    info = common.machine_info()
    payload = dict(benchmark="pipeline_overlap", video=Path(args.video).name, frames_expected=expected,
                   every_frame_processed=complete, model=described,
                   input_size=list(size), threads=args.threads, batch=args.batch, target_ratio=TARGET,
                   meets_target=verdict, inference_only_fps=round(ceiling, 3),
                   pipeline_ratio=ratio, watch=watch, serve_target=SERVE_TARGET,
                   mqtt_target=MQTT_TARGET,
                   load_average_before=load_before, load_average_after=load_after, rows=rows, machine=info)
    out = common.results_dir()
    common.write_json(out / "pipeline_overlap.json", payload)
    from benchmarks.run_all import plot_pipeline_stages  # drawn only by run_all, it showed an older run

    plot_pipeline_stages(out)
    summary = (f"Video `{Path(args.video).name}` ({expected} frames), model: {described}, input "
               f"{size[0]}x{size[1]}, ONNX Runtime CPU with {args.threads} intra-op thread(s), batch "
               f"{args.batch}. Every pass processed every frame: **{complete}**. Pipeline / inference "
               f"only = **{pipeline_row['ratio_to_inference']:.3f}** (target {TARGET}: "
               f"{'met' if verdict else 'NOT met'}); the inference stage was busy "
               f"{pipeline_row['infer_busy']:.1%} of the pipeline's wall time. 1-minute load average {load_before[0]:.1f} before, "
               f"{load_after[0]:.1f} after (the machine is shared: passes alternate, FPS pooled per mode)."
               + _watch_summary(watch))
    columns = ["mode", "frames", "seconds", "fps", "cpu_ms_per_frame", "infer_p50_ms",
               "infer_mean_ms", "ratio_to_inference", "mjpeg_parts", "mqtt_acked"]
    common.write_markdown(out / "pipeline_overlap.md", "Pipeline overlap: full pipeline vs inference alone",
                          [("Result", summary),
                           ("Passes (in the order run)", common.markdown_table(rows, columns))], info)
    print(summary)
    print(common.markdown_table(rows, columns))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
