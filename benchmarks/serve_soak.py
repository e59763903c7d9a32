"""Memory over a long live run with the web view watched and the MQTT broker restarted.

The bundled demo video is read in a loop as one endless source (so the run lasts `--minutes`);
`--serve` has one viewer reading its MJPEG stream the whole time; `--mqtt` publishes one event per
frame to a local Mosquitto that is stopped for `--outage-s` seconds twice (at 1/3 and 2/3 of the
run). The process's resident memory is sampled every `--every-s` seconds. Target: the last sample
within 5 % of the first one taken after the warm-up (`--warmup-min`). Writes serve_soak.json / .md
and the memory curve serve_soak_memory.png.

    python -m benchmarks.serve_soak [--minutes 10] [--max-side 256]
    python -m benchmarks.serve_soak --minutes 4 --trace 15   # what grows: tracemalloc diff

--trace N runs under tracemalloc (slower; for finding a leak, not for the result files): it
snapshots Python's allocations after the warm-up and at the end and prints the N source lines
whose allocations grew most in between.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from benchmarks import common
from benchmarks.serve_overhead import Viewer, start_mosquitto

TARGET = 0.05


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def looped(video: Path, stop: threading.Event):
    """An endless Source: the video again and again, frame indices counting on."""
    from pipeline.sources import Source, VideoFileSource

    class Looped(Source):
        kind = "loop"

        def __iter__(self) -> Iterator:
            index = 0
            while not stop.is_set():
                for frame in VideoFileSource(video).open():
                    if stop.is_set():
                        return
                    frame.index, frame.source = index, self.name
                    index += 1
                    self.stats.add(read=1, delivered=1)
                    yield frame

    return Looped(f"loop:{video.name}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = common.argument_parser("benchmarks.serve_soak", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup-min", type=float, default=1.0)
    p.add_argument("--every-s", type=float, default=5.0)
    p.add_argument("--outage-s", type=float, default=10.0)
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--trace", type=int, default=0, metavar="N",
                   help="print the N source lines whose allocations grew most (tracemalloc); "
                        "writes no result files")
    args = p.parse_args(argv)
    if args.trace:
        import tracemalloc

        tracemalloc.start()
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector
    from pipeline.mqtt import MqttSink
    from pipeline.runner import Pipeline
    from pipeline.serve import ServeSink
    from pipeline.shipped import DEMO_VIDEO
    from pipeline.sinks import JsonlSink

    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker, port = start_mosquitto(workdir)
        if broker is None:
            print("serve_soak: skipped: mosquitto is not installed")
            return 0
        detector = Detector(None, lambda spec: spec.replace(limit_side=args.max_side, limit_type="max"),
                            device="cpu", options=RunnerOptions(threads=1))
        pipe = Pipeline([looped(DEMO_VIDEO, stop)], detector, close_detector=True,
                        sinks=[JsonlSink(workdir / "d.jsonl")])
        serve = ServeSink(pipe, port=0)
        mqtt = MqttSink(f"mqtt://127.0.0.1:{port}/soak/events", min_delay=1, max_delay=4)
        serve.add_output("mqtt", mqtt)
        pipe.sinks += [serve, mqtt]
        viewer = Viewer(serve.server.port)
        samples, restarts = [], []
        runner = threading.Thread(target=pipe.run, daemon=True)
        t0 = time.monotonic()
        runner.start()
        viewer.start()
        try:
            broker = _drive(args, t0, samples, restarts, broker, port, workdir, pipe)
        finally:
            stop.set()
            pipe.stop()
            runner.join(timeout=60)
            viewer.stop.set()
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=30)
        counters = mqtt.counters()
        frames, parts = pipe.metrics.frames_out, viewer.parts
    if args.trace:
        return print_growth(args, frames, parts)
    return write_results(args, samples, restarts, frames, parts, counters)


def _drive(args, t0, samples, restarts, broker, port, workdir, pipe):
    """Sample memory until the end; stop the broker for an outage at 1/3 and 2/3 of the run."""
    duration = args.minutes * 60
    outages = [duration / 3, 2 * duration / 3]
    while (elapsed := time.monotonic() - t0) < duration:
        samples.append((round(elapsed, 1), round(rss_mb(), 2), pipe.metrics.frames_out))
        if args.trace and not _SNAPSHOTS and elapsed >= args.warmup_min * 60:
            _snapshot(pipe)
        if outages and elapsed >= outages[0]:
            outages.pop(0)
            broker.terminate()
            broker.wait(timeout=30)
            time.sleep(args.outage_s)
            broker, _ = start_mosquitto(workdir, port)
            restarts.append(round(elapsed, 1))
        time.sleep(args.every_s)
    if args.trace:
        _snapshot(pipe)
    return broker


_SNAPSHOTS = []  # (frames out, tracemalloc snapshot) after the warm-up and at the end


def _snapshot(pipe) -> None:
    import tracemalloc

    _SNAPSHOTS.append((pipe.metrics.frames_out, tracemalloc.take_snapshot()))


def print_growth(args, frames, parts) -> int:
    (frames0, first), (frames1, last) = _SNAPSHOTS[0], _SNAPSHOTS[-1]
    print(f"serve_soak --trace: {frames1 - frames0} frames between the snapshots ({frames} in "
          f"all, {parts} MJPEG pictures); the {args.trace} lines that grew most:")
    for stat in last.compare_to(first, "lineno")[:args.trace]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d} blocks  "
              f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}")
    return 0


def write_results(args, samples, restarts, frames, parts, counters) -> int:
    after_warmup = [s for s in samples if s[0] >= args.warmup_min * 60] or samples
    first, last = after_warmup[0][1], samples[-1][1]
    growth = round(last / first - 1, 4)
    info = common.machine_info()
    out = common.results_dir()
    payload = dict(benchmark="serve_soak", minutes=args.minutes, max_side=args.max_side,
                   frames=frames, mjpeg_parts=parts, broker_restarts_at_s=restarts, mqtt=counters,
                   rss_mb_after_warmup=first, rss_mb_last=last, growth=growth, target=TARGET,
                   meets_target=abs(growth) <= TARGET, samples=samples, machine=info)
    common.write_json(out / "serve_soak.json", payload)
    common.plot_lines({"resident memory (MB)": [(t, mb) for t, mb, _ in samples]},
                      out / "serve_soak_memory.png",
                      f"dbrt run --serve (1 viewer) --mqtt, broker stopped at {restarts} s",
                      "seconds", "MB")
    summary = (f"{args.minutes:g} min live run (the demo video looped, long side {args.max_side}), "
               f"{frames} frames, one viewer ({parts} MJPEG pictures), MQTT broker stopped for "
               f"{args.outage_s:g} s at {restarts} s: {counters['acked_total']} events acknowledged, "
               f"{counters['dropped_total']} dropped, {counters['reconnects_total']} reconnects. "
               f"Resident memory {first:.1f} MB after {args.warmup_min:g} min, {last:.1f} MB at the "
               f"end: **{growth:+.1%}** (target within {TARGET:.0%}: "
               f"{'met' if abs(growth) <= TARGET else 'NOT met'}).")
    common.write_markdown(out / "serve_soak.md", "Live view and MQTT soak: memory",
                          [("Result", summary + "\n\n![memory](serve_soak_memory.png)")], info)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
