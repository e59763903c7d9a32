"""What watching and wiring cost: the pipeline's throughput with `--serve` and one viewer
connected, and with `--mqtt` publishing one event per frame to a local Mosquitto, against the
same pipeline writing JSON lines only.

Modes alternate `--rounds` times on the same video and detector, each round in a rotated order,
so that a shared machine's changing load hits all of them; each mode's FPS is pooled over its passes (frames / summed
seconds); each pass also records the process's CPU time, which the neighbours' load moves far
less than wall time. Every pass must process every frame (checked). The viewer, a process of its
own, reads the MJPEG stream without pause for the whole pass (at the server's capped rate, 10
pictures a second).
Targets: --serve with a viewer >= 0.95 x without; --mqtt adds < 1 % to the wall time.
The MQTT mode runs only where a `mosquitto` binary is installed.

    python -m benchmarks.serve_overhead [--video V] [--max-side 512] [--rounds 3]
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from benchmarks import common
from pipeline.commands._validate import at_least

SERVE_TARGET = 0.95
MQTT_TARGET = 0.01  # most extra wall time


class Viewer(threading.Thread):
    """Reads /stream/0.mjpg as fast as it comes and counts the JPEG parts."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.parts, self.stop = port, 0, threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/stream/0.mjpg")
        response = conn.getresponse()
        try:
            while not self.stop.is_set():
                line = response.fp.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    response.fp.readline()
                    response.fp.read(int(line.split(b":")[1]))
                    self.parts += 1
        except OSError:
            pass
        finally:
            conn.close()


# the parent stops the viewer with SIGUSR1, a signal of its own: a SIGTERM ignored by whoever
# started the benchmark (`trap '' TERM`) is inherited, and stays ignored (engine.signals)
_VIEWER_SCRIPT = """
import http.client, signal, sys
def stop(*a):
    sys.exit(0)
signal.signal(signal.SIGUSR1, stop)
if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
    signal.signal(signal.SIGTERM, stop)
parts = 0
try:
    conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
    conn.request("GET", "/stream/0.mjpg")
    print("connected", flush=True)  # the headers come with the first picture
    response = conn.getresponse()  # kept: its fp closes with it
    fp = response.fp
    while True:
        line = fp.readline()
        if not line:
            break
        if line.lower().startswith(b"content-length:"):
            fp.readline()
            fp.read(int(line.split(b":")[1]))
            parts += 1
except OSError:
    pass
finally:
    print(parts, flush=True)
"""


class ViewerProcess:
    """The Viewer in a process of its own, so that the run's process CPU time is the server's
    side only; connected when the constructor returns. `stop()` returns the JPEG parts read."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen([sys.executable, "-c", _VIEWER_SCRIPT, str(port)],
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "connected":
            raise RuntimeError("the MJPEG viewer could not connect")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGUSR1)
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip() or 0)


def start_mosquitto(workdir: Path, port: Optional[int] = None):
    """(process, port) of a Mosquitto on loopback (`port`, else a free one), or (None, None)
    where none is installed."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto",) if Path(p).is_file()), None)
    if binary is None:
        return None, None
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def one_pass(video: Path, detector, workdir: Path, mode: str, broker_port: Optional[int]) -> dict:
    from pipeline.runner import Pipeline
    from pipeline.sinks import JsonlSink

    pipe = Pipeline([video], detector, batch=1, sinks=[JsonlSink(workdir / "detections.jsonl")])
    viewer, extra = None, {}
    if mode == "serve + 1 viewer":
        from pipeline.serve import ServeSink

        sink = ServeSink(pipe, port=0)
        pipe.sinks.append(sink)
        viewer = ViewerProcess(sink.server.port)
    elif mode == "mqtt, 1 event per frame":
        from pipeline.mqtt import MqttSink

        mqtt = MqttSink(f"mqtt://127.0.0.1:{broker_port}/bench/events")
        pipe.sinks.append(mqtt)
    cpu = time.process_time()
    report = pipe.run()
    cpu = time.process_time() - cpu
    if viewer is not None:
        extra["mjpeg_parts"] = viewer.stop()
    if mode.startswith("mqtt"):
        extra.update({k: v for k, v in mqtt.counters().items() if k.endswith("_total")})
    return dict(mode=mode, frames=report["frames"], seconds=report["wall_s"], fps=report["fps"],
                cpu_ms_per_frame=round(cpu * 1e3 / max(1, report["frames"]), 2),
                infer_p50_ms=report["stages"]["infer"]["p50_ms"], **extra)


def rotated(modes: list, round_: int) -> list:
    """The modes of one round, each round starting one further on (A B C, B C A, C A B): a
    load that drifts during the run does not always favour the mode that comes last."""
    shift = round_ % len(modes)
    return modes[shift:] + modes[:shift]


def _pooled(rows, mode: str) -> float:
    chosen = [r for r in rows if r["mode"] == mode]
    return sum(r["frames"] for r in chosen) / sum(r["seconds"] for r in chosen)


def _cpu_ratio(rows, mode: str, base: str) -> float:
    """Process CPU time per frame of `mode` over that of `base` (pooled over the passes)."""
    def per_frame(name):
        chosen = [r for r in rows if r["mode"] == name]
        return (sum(r["cpu_ms_per_frame"] * r["frames"] for r in chosen)
                / sum(r["frames"] for r in chosen))
    return round(per_frame(mode) / per_frame(base), 3)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = common.argument_parser("benchmarks.serve_overhead", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", help="default: the bundled demo video")
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=at_least(1), default=3)
    args = p.parse_args(argv)
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector
    from pipeline.shipped import DEMO_VIDEO
    from pipeline.sources import VideoFileSource

    video = Path(args.video or DEMO_VIDEO)
    expected = VideoFileSource(video).open().total_frames
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker, broker_port = start_mosquitto(workdir)
        modes = ["pipeline (JSON lines)", "serve + 1 viewer"]
        if broker is not None:
            modes.append("mqtt, 1 event per frame")
        detector = Detector(None, lambda spec: spec.replace(limit_side=args.max_side, limit_type="max"),
                            device="cpu", options=RunnerOptions(threads=args.threads))
        load_before = os.getloadavg()
        rows = []
        try:
            for round_ in range(args.rounds):
                for mode in rotated(modes, round_):
                    rows.append(one_pass(video, detector, workdir, mode, broker_port))
                    print(f"  {mode}: {rows[-1]['fps']:.2f} FPS", flush=True)
        finally:
            detector.close()
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=30)
        load_after = os.getloadavg()
    return write_results(args, video, expected, rows, modes, load_before, load_after)


def write_results(args, video, expected, rows, modes, load_before, load_after) -> int:
    base = _pooled(rows, modes[0])
    serve_ratio = round(_pooled(rows, modes[1]) / base, 3)
    mqtt_extra = round(base / _pooled(rows, modes[2]) - 1, 4) if len(modes) > 2 else None
    cpu = {mode: _cpu_ratio(rows, mode, modes[0]) for mode in modes[1:]}
    complete = all(r["frames"] == expected for r in rows)
    # run-to-run spread of the baseline: differences smaller than this are load, not cost
    fps = [r["fps"] for r in rows if r["mode"] == modes[0]]
    spread = round((max(fps) - min(fps)) / (sum(fps) / len(fps)), 3)
    info = common.machine_info()
    payload = dict(benchmark="serve_overhead", video=Path(video).name, frames_expected=expected,
                   every_frame_processed=complete, max_side=args.max_side, threads=args.threads,
                   serve_ratio=serve_ratio, serve_target=SERVE_TARGET,
                   serve_meets_target=serve_ratio >= SERVE_TARGET,
                   mqtt_extra_wall_time=mqtt_extra, mqtt_target=MQTT_TARGET,
                   mqtt_meets_target=None if mqtt_extra is None else mqtt_extra < MQTT_TARGET,
                   baseline_spread=spread, cpu_per_frame_ratio=cpu,
                   load_average_before=load_before, load_average_after=load_after, rows=rows,
                   machine=info)
    out = common.results_dir()
    common.write_json(out / "serve_overhead.json", payload)
    mqtt_text = ("no mosquitto on this machine" if mqtt_extra is None else
                 f"{mqtt_extra:+.1%} wall time (target < {MQTT_TARGET:.0%}: "
                 f"{'met' if mqtt_extra < MQTT_TARGET else 'NOT met'})")
    summary = (f"Video `{video.name}` ({expected} frames), shipped model, long side {args.max_side}, "
               f"ONNX Runtime CPU, {args.threads} thread(s), {args.rounds} rounds. Every pass processed "
               f"every frame: **{complete}**. With --serve and one viewer: **{serve_ratio:.3f}** x the "
               f"throughput without (target {SERVE_TARGET}: {'met' if serve_ratio >= SERVE_TARGET else 'NOT met'}); "
               f"--mqtt: **{mqtt_text}**. Process CPU time per frame against the baseline "
               f"(the viewer and the broker are other processes): "
               + ", ".join(f"{m} {r:.3f} x" for m, r in cpu.items()) +
               f". The baseline's own passes spread over {spread:.0%} of its "
               f"FPS: differences smaller than that are the machine's load, not a cost. 1-minute load "
               f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after (shared machine: modes "
               f"alternate, FPS pooled per mode).")
    common.write_markdown(out / "serve_overhead.md", "Live view and MQTT overhead",
                          [("Result", summary), ("Passes (in the order run)", common.markdown_table(rows))], info)
    print(summary)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
