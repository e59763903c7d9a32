"""The FPS ceiling of the host side: what the pipeline gives when the model costs nothing.

On a GPU server or a Jetson the TensorRT engine takes a few ms per frame, so decoding,
preprocessing, post-processing, the sinks and reading / tracking decide the FPS a user gets.
Here the model is replaced by a runner that returns the shipped model's own probability maps,
computed beforehand (untimed) on one frame in `--map-every` of the same video and replayed for
the frames after it, so post-processing, drawing and reading do the work they do on real
maps, and the engine call costs nothing. Per video (the bundled demo, and the lightbox and
street videos of ../shared/data when present), in turns for `--rounds`:

  decode only        the video's frames read from the source, nothing else (the floor);
  JSON lines         the threaded Pipeline as `dbrt run --no-video` builds it;
  + annotated video  as `dbrt run` builds it (JSON lines and the annotated MP4);
  + read + track     as `dbrt run --read --track --no-video` (JSON lines and events.jsonl),
                     when the recognizer (the rapidocr wheel's PP-OCR rec) is installed.

Each pass records its FPS (frames / wall time from the first frame asked for to the last one
written), the process's CPU time per frame (all threads; on a shared machine it moves far
less with the neighbours' load than wall time) and the per-stage p50 / mean wall time from the
pipeline's own report. A last pass per video runs the same steps one after the other in one
thread and charges each step the process's CPU time while it runs (an encoder's own threads
included) and that thread's own: the CPU time per frame of every stage. FPS are pooled per mode
(frames / summed seconds) and given as ratios to decode only. Every pass must process every
frame (checked). A shared video that is not there is skipped with a message; the demo, in the
package, is always measured. The machine's load average is recorded before and after.

    python -m benchmarks.host_ceiling [--video V] [--rounds 2] [--map-every 25] [--frames N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks import common
from engine.base import Runner

SHARED_VIDEOS = ("pexels_lightbox_text_960x506.mp4", "pexels_street_captions_1080x1920.mp4")
DECODE, JSONL, VIDEO, READ = "decode only", "JSON lines", "+ annotated video", "+ read + track"
RUN_FLAGS = {JSONL: ["--no-video"], VIDEO: [], READ: ["--read", "--track", "--no-video"]}


class ReplayRunner(Runner):
    """The shipped model's outputs, replayed: the k-th frame it is given (one source, in
    order) gets the map computed for frame k - k % every. Costs no more than a list lookup."""

    name = "replay"

    def __init__(self, model: Runner, maps: Sequence[np.ndarray], every: int):
        super().__init__()
        self._inputs, self._outputs = model.inputs, model.outputs
        self._metadata = dict(model.metadata)
        self._maps, self._every, self.frames = list(maps), every, 0

    @property
    def metadata(self) -> Dict[str, str]:
        return self._metadata

    def _activate(self) -> None:
        self.frames = 0

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed):
        count = len(next(iter(feed.values())))
        picked = [self._maps[min((self.frames + i) // self._every, len(self._maps) - 1)]
                  for i in range(count)]
        self.frames += count
        return {self._outputs[0].name: picked[0] if count == 1 else np.concatenate(picked)}


def model_maps(video: Path, every: int, frames: Optional[int]):
    """(the shipped model's runner, its raw output for frames 0, every, 2 * every, ...)."""
    from pipeline.detector import Detector
    from pipeline.sources import VideoFileSource

    detector = Detector(device="cpu")
    maps = []
    for index, frame in enumerate(VideoFileSource(video).open()):
        if frames is not None and index >= frames:
            break
        if index % every == 0:
            array, _ = detector.prepare([frame.image])
            maps.append(detector.runner.infer(array)[detector.output_name])
    return detector, maps


def decode_only(video: Path, frames: Optional[int]) -> dict:
    from pipeline.sources import VideoFileSource

    count, wall, cpu = 0, time.perf_counter(), time.process_time()
    for _ in VideoFileSource(video).open():
        count += 1
        if frames is not None and count >= frames:
            break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return dict(mode=DECODE, frames=count, seconds=round(wall, 3), fps=round(count / wall, 2),
                cpu_ms_per_frame=round(cpu * 1e3 / count, 2))


def run_args(video: Path, out: Path, mode: str, frames: Optional[int]):
    """`dbrt run`'s parsed flags for `mode`."""
    from pipeline.cli import build_parser

    limit = [] if frames is None else ["--max-frames", str(frames)]
    return build_parser().parse_args(["run", str(video), "-o", str(out), "--quiet",
                                      *RUN_FLAGS[mode], *limit])


def replay_detector(source, maps, every: int, read: bool):
    from pipeline.detector import Detector

    return Detector(ReplayRunner(source.runner, maps, every), source.spec, read=read or None)


def pipeline_pass(video: Path, source, maps, every: int, mode: str, workdir: Path,
                  frames: Optional[int]) -> dict:
    """One pass of the threaded pipeline with `dbrt run`'s sinks for `mode`."""
    from pipeline.commands.run import _sinks
    from pipeline.runner import Pipeline

    args = run_args(video, workdir / "out", mode, frames)
    detector = replay_detector(source, maps, every, args.read)
    pipe = Pipeline([str(video)], detector, close_detector=True, batch=args.batch,
                    batch_timeout=args.batch_timeout_ms / 1e3, queue_size=args.queue_size,
                    max_frames=args.max_frames, track=args.track,
                    source_options=dict(decode_threads=args.decode_threads))
    pipe.sinks.extend(_sinks(pipe, Path(args.output), args))
    cpu = time.process_time()
    report = pipe.run()
    cpu = time.process_time() - cpu
    row = dict(mode=mode, frames=report["frames"], seconds=report["wall_s"], fps=report["fps"],
               cpu_ms_per_frame=round(cpu * 1e3 / max(1, report["frames"]), 2))
    for stage, summary in report["stages"].items():
        if summary.get("count"):
            row[f"{stage}_p50_ms"], row[f"{stage}_mean_ms"] = summary["p50_ms"], summary["mean_ms"]
    return row


def serial_costs(video: Path, source, maps, every: int, read: bool, workdir: Path,
                 frames: Optional[int]) -> dict:
    """Every step one after the other in this thread: CPU ms per frame of each, the process's
    while the step runs (an encoder's or decoder's own threads count towards it) and this
    thread's alone (what the stage's thread spends, the rest can run on other cores)."""
    from pipeline.detections import FrameResult
    from pipeline.draw import PolygonAnnotator, annotate
    from pipeline.reading.tracking import TextTracker
    from pipeline.sinks import VideoSink
    from pipeline.sources import VideoFileSource

    detector = replay_detector(source, maps, every, read)
    sink = VideoSink(workdir / "serial.mp4", fps_by_stream={0: 25.0}, annotators=[PolygonAnnotator()])
    tracker = TextTracker() if read else None
    cpu: Dict[str, List[float]] = {}

    def step(name, fn, *a):
        start, own = time.process_time(), time.thread_time()
        out = fn(*a)
        spent = cpu.setdefault(name, [0.0, 0.0])
        spent[0] += time.process_time() - start
        spent[1] += time.thread_time() - own
        return out

    count, items = 0, iter(VideoFileSource(video).open())
    try:
        while frames is None or count < frames:
            frame = step("decode", next, items, None)
            if frame is None:
                break
            frame.stream, count = 0, count + 1
            array, boxes = step("preprocess", detector.prepare, [frame.image])
            prob = step("infer (replayed)", detector.infer, array)
            dets = step("postprocess", detector.postprocess, prob, boxes)[0]
            if read:
                dets = step("read", detector.read, frame.image, dets)
                dets = step("track", tracker, frame, dets)
            step("JSON line", lambda: FrameResult(frame, dets).to_json(2))
            step("draw", annotate, frame.image, dets, [PolygonAnnotator()])
            step("draw + encode", sink.write, frame, dets)
    finally:
        step("draw + encode", sink.close)
        detector.close()
    return dict(frames=count, steps=[dict(step=name, process_cpu_ms=round(p * 1e3 / max(1, count), 3),
                                          thread_cpu_ms=round(t * 1e3 / max(1, count), 3))
                                     for name, (p, t) in cpu.items()])


def parse_args(argv):
    p = common.argument_parser("benchmarks.host_ceiling", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", action="append", help="a video to measure (repeatable; default: "
                   "the bundled demo and the two shared videos)")
    p.add_argument("--rounds", type=int, default=2, help="passes of each mode, taking turns")
    p.add_argument("--map-every", type=int, default=25, help="run the model on one frame in N")
    p.add_argument("--frames", type=int, help="at most this many frames of each video")
    p.add_argument("--no-read", action="store_true", help="leave out the read + track passes")
    args = p.parse_args(argv)
    for flag, value in (("--rounds", args.rounds), ("--map-every", args.map_every),
                        ("--frames", args.frames)):
        if value is not None and value < 1:
            p.error(f"argument {flag}: must be an integer >= 1, got {value}")
    return args


def videos(args) -> List[Path]:
    from pipeline.shipped import DEMO_VIDEO

    if args.video:
        return [Path(v) for v in args.video]
    found = [Path(DEMO_VIDEO)]
    for name in SHARED_VIDEOS:
        path = common.SHARED_DATA / "video" / name
        if path.is_file():
            found.append(path)
        else:
            print(f"host_ceiling: skipped {name}: not found in {path.parent} (only dev machines "
                  "have ../shared/data)")
    return found


def recognizer_note(args) -> Optional[str]:
    """Why the read + track passes are left out (None: they run)."""
    if args.no_read:
        return "left out (--no-read)"
    import importlib.util

    if importlib.util.find_spec("rapidocr") is None:
        return "not measured: the recognizer (the rapidocr wheel's PP-OCR rec) is not installed"
    return None


def measure_video(video: Path, args, read: bool) -> dict:
    from pipeline.sources import VideoFileSource

    total = VideoFileSource(video).open().total_frames
    expected = total if args.frames is None else min(total, args.frames)
    source, maps = model_maps(video, args.map_every, args.frames)
    modes = [JSONL, VIDEO] + [READ] * read
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            passes = [lambda: decode_only(video, args.frames)] + [
                (lambda m=m: pipeline_pass(video, source, maps, args.map_every, m, Path(tmp), args.frames))
                for m in modes[round_ % len(modes):] + modes[:round_ % len(modes)]]
            for run_pass in passes:
                rows.append(dict(run_pass(), round=round_ + 1))
                print(f"  {video.name} {rows[-1]['mode']}: {rows[-1]['frames']} frames, "
                      f"{rows[-1]['fps']:.1f} FPS, {rows[-1]['cpu_ms_per_frame']} CPU ms/frame", flush=True)
        serial = serial_costs(video, source, maps, args.map_every, read, Path(tmp), args.frames)
    source.close()
    return summarise(video, expected, maps, rows, serial, [DECODE] + modes)


def summarise(video: Path, expected: int, maps, rows, serial, modes) -> dict:
    decode_fps = _pooled(rows, DECODE)
    summary = []
    for mode in modes:
        chosen = [r for r in rows if r["mode"] == mode]
        fps = _pooled(rows, mode)
        line = dict(mode=mode, fps=round(fps, 2), fps_over_decode=round(fps / decode_fps, 3),
                    cpu_ms_per_frame=round(sum(r["cpu_ms_per_frame"] * r["frames"] for r in chosen)
                                           / sum(r["frames"] for r in chosen), 2))
        for key in sorted({k for r in chosen for k in r if k.endswith(("_p50_ms", "_mean_ms"))}):
            line[key] = round(float(np.median([r[key] for r in chosen if key in r])), 3)
        summary.append(line)
    return dict(video=video.name, frames_expected=expected, map_size=list(maps[0].shape[2:]),
                maps=len(maps), every_frame_processed=all(r["frames"] == expected for r in rows)
                and serial["frames"] == expected, summary=summary, serial_cpu_ms_per_frame=serial,
                passes=rows)


def _pooled(rows, mode: str) -> float:
    chosen = [r for r in rows if r["mode"] == mode]
    return sum(r["frames"] for r in chosen) / sum(r["seconds"] for r in chosen)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    chosen = videos(args)
    missing = [str(v) for v in chosen if not v.is_file()]
    if missing:
        print(f"host_ceiling: error: --video {missing[0]}: not found", file=sys.stderr)
        return 2
    note = recognizer_note(args)
    load_before = os.getloadavg()
    results = [measure_video(video, args, read=note is None) for video in chosen]
    load_after = os.getloadavg()
    return write_results(args, results, note, load_before, load_after, argv)


def write_results(args, results, note, load_before, load_after, argv) -> int:
    from pipeline.shipped import default_model_path

    complete = all(r["every_frame_processed"] for r in results)
    payload = dict(benchmark="host_ceiling", command=common.command_line(
                       "benchmarks.host_ceiling", list(argv if argv is not None else sys.argv[1:])),
                   model=f"replayed maps of the shipped model, sha256 "
                         f"{common.file_sha256(default_model_path())}",
                   rounds=args.rounds, map_every=args.map_every, read_track=note or "measured",
                   every_frame_processed=complete, load_average_before=load_before,
                   load_average_after=load_after, videos=results)
    sections = [("Result", _result_text(args, results, note, complete, load_before, load_after))]
    for video in results:
        sections.append((f"{video['video']} ({video['frames_expected']} frames, model input "
                         f"{video['map_size'][0]}x{video['map_size'][1]})", _video_tables(video)))
    common.write_report("host_ceiling", "Host-side FPS ceiling: the pipeline with a free model",
                        payload, sections)
    print(sections[0][1])
    return 0 if complete else 1


def _result_text(args, results, note, complete, load_before, load_after) -> str:
    lines = [f"The shipped model's maps replayed (one model call per {args.map_every} frames, "
             f"untimed), `dbrt run`'s pipeline and sinks, {args.rounds} rounds with the modes "
             f"taking turns. Every pass processed every frame: **{complete}**. Read + track: "
             f"{note or 'measured'}. 1-minute load average {load_before[0]:.1f} before, "
             f"{load_after[0]:.1f} after (2 shared cores: trust the CPU ms per frame and the "
             "ratios of one run over the FPS).\n"]
    for video in results:
        fps = ", ".join(f"{s['mode']} **{s['fps']:.1f}** ({s['fps_over_decode']:.2f}x decode, "
                        f"{s['cpu_ms_per_frame']:.1f} CPU ms)" for s in video["summary"])
        lines.append(f"- `{video['video']}`: {fps}")
    return "\n".join(lines) + "\n"


def _video_tables(video) -> str:
    summary = common.markdown_table(video["summary"], ["mode", "fps", "fps_over_decode",
                                                       "cpu_ms_per_frame"])
    stages = [dict(mode=s["mode"], **{k.replace("_ms", ""): v for k, v in s.items() if k.endswith("_ms")})
              for s in video["summary"] if s["mode"] != DECODE]
    serial = video["serial_cpu_ms_per_frame"]["steps"]
    return (f"Pooled per mode (median of the passes for the stage times):\n\n{summary}\n"
            f"Per-stage wall time in the threaded pipeline (ms per batch of 1):\n\n"
            f"{common.markdown_table(stages)}\n"
            f"CPU ms per frame of each step, one after the other in one thread (the process's, "
            f"and that thread's own):\n\n"
            f"{common.markdown_table(serial)}")


if __name__ == "__main__":
    sys.exit(main())
