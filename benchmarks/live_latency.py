"""How old is a live stream's result when it comes out, and how many frames per second get out?

A real live stream on 127.0.0.1: the demo video looped as MPEG-TS over HTTP, paced at its frame
rate (25 fps) by a process of its own, as a camera or an encoder box would send it. The same
run (`dbrt run URL --read --track`: detection, text reading, tracking; no video) in two modes,
alternating `--rounds` times so that a shared machine's changing load hits both:
  gate:   the default for live sources: a source's next frame is taken only once no frame
          waits in the stage queues (pipeline.stages.LiveGate), so the slowest stage (reading
          text, on a CPU) always gets the newest frame;
  queued: `--queue-size 1`: one frame waits before every stage, as before the gate.
Each pass runs `--seconds` and is stopped as Ctrl-C would; reported: FPS (frames out / wall
time), end-to-end latency (frame read off the stream -> its result out) p50 / p95, frames the
source dropped, per-stage p50. Ratios are gate / queued.

`--with-file`: the demo video file shares each run with the stream (a camera beside a recording);
the file's frames would keep the queues full. Then gate (the default: every source waits at
the gate, and until none of its own frames waits) is compared with queued = `--queue-size 4`,
the queues such a run had before; FPS and latency are the live stream's own, file_fps the file's.

    python -m benchmarks.live_latency [--seconds 60] [--rounds 2] [--input-size 320x576] [--with-file]
"""
from __future__ import annotations

import argparse
import collections
import io
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

from benchmarks import common
from pipeline.commands._validate import at_least

MODES = {"gate": None, "queued": 1}  # mode -> the Pipeline's queue_size


def _looped_frames(path: str):
    import av

    with av.open(path) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    while True:
        yield from frames


def _send_live(write, path: str, fps: int = 25) -> None:
    """Encode the looped video as MPEG-TS into `write`, paced at `fps`, until the client goes."""
    import av

    class Pipe(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            write(bytes(data))
            return len(data)

    out = av.open(Pipe(), mode="w", format="mpegts")
    stream = out.add_stream("mpeg2video", rate=fps)
    stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 640, 360, "yuv420p", 1_500_000
    start = time.perf_counter()
    for n, image in enumerate(_looped_frames(path)):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(640, 360)
        frame.pts = n
        for packet in stream.encode(frame):
            out.mux(packet)
        time.sleep(max(0.0, start + (n + 1) / fps - time.perf_counter()))


def serve_stream(port: int, path: str) -> None:
    """The stream server (run in a process of its own): http://127.0.0.1:PORT/live."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no length: the stream is live

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            try:
                _send_live(self.wfile.write, path)
            except (BrokenPipeError, ConnectionResetError):
                pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def one_pass(sources: List[str], queue_size: Optional[int], seconds: float, input_size) -> dict:
    """One run; FPS and latency are the first source's (the stream's) own."""
    import numpy as np

    from pipeline.detector import Detector
    from pipeline.runner import Pipeline

    ages, stream_frames = [], collections.Counter()

    def age(frame, detections):
        stream_frames[frame.stream] += 1
        if frame.stream == 0:
            ages.append((time.perf_counter() - frame.t_read) * 1e3)

    detector = Detector(read=True, input_size=input_size)
    with Pipeline(sources, detector, close_detector=True, track=True, queue_size=queue_size,
                  callbacks=[age], stop_signals=()) as pipe:
        threading.Timer(seconds, pipe.stop).start()
        report = pipe.run()
    source, wall = report["sources"][0], report["frames"] / report["fps"]
    return dict(fps=round(stream_frames[0] / wall, 2), frames=stream_frames[0],
                other_frames=sum(stream_frames.values()) - stream_frames[0],
                e2e_p50_ms=round(float(np.percentile(ages, 50)), 1),
                e2e_p95_ms=round(float(np.percentile(ages, 95)), 1), read=source["read"],
                dropped=source["dropped"], stage_p50_ms={k: v["p50_ms"] for k, v in report["stages"].items()})


def pooled(passes: List[dict]) -> dict:
    """A mode's passes together: FPS over all frames, latency percentiles' median."""
    def median(key):
        values = sorted(p[key] for p in passes)
        return values[len(values) // 2]

    wall, file_frames = sum(p["frames"] / p["fps"] for p in passes), sum(p.get("other_frames", 0) for p in passes)
    return dict(fps=round(sum(p["frames"] for p in passes) / wall, 2),
                **({"file_fps": round(file_frames / wall, 2)} if file_frames else {}),
                e2e_p50_ms=median("e2e_p50_ms"), e2e_p95_ms=median("e2e_p95_ms"),
                dropped_share=round(sum(p["dropped"] for p in passes) / sum(p["read"] for p in passes), 3))


def main(argv: Optional[List[str]] = None) -> int:
    parser = common.argument_parser("benchmarks.live_latency", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=at_least(0.0, float, strict=True), default=60.0, help="length of each pass")
    parser.add_argument("--rounds", type=at_least(1), default=2, help="passes per mode, alternating")
    parser.add_argument("--input-size", default="320x576", help="the detector's HxW")
    parser.add_argument("--with-file", action="store_true",
                        help="the demo video file shares each run with the stream")
    parser.add_argument("--serve-stream", type=int, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    from pipeline.shipped import ASSETS

    video = str(ASSETS / "demo.mp4")
    if args.serve_stream:
        serve_stream(args.serve_stream, video)
        return 0
    from engine.triton.ports import free_port

    height, width = (int(v) for v in args.input_size.lower().split("x"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.live_latency", "--serve-stream", str(port)])
    try:
        time.sleep(2.0)
        modes = {**MODES, "queued": 4} if args.with_file else MODES
        sources = [f"http://127.0.0.1:{port}/live"] + [video] * args.with_file
        passes: Dict[str, List[dict]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode, queue_size in modes.items():
                result = one_pass(sources, queue_size, args.seconds, (height, width))
                passes[mode].append(result)
                print(f"{mode}: {result['fps']:.2f} FPS, end-to-end p50 {result['e2e_p50_ms']:.0f} ms", flush=True)
    finally:
        server.terminate()
        server.wait()
    write_results(args, passes)
    return 0


def write_results(args, passes: Dict[str, List[dict]]) -> None:
    modes = {mode: pooled(runs) for mode, runs in passes.items()}
    gate, queued = modes["gate"], modes["queued"]
    ratios = dict(fps=round(gate["fps"] / queued["fps"], 2),
                  e2e_p50=round(gate["e2e_p50_ms"] / queued["e2e_p50_ms"], 2),
                  e2e_p95=round(gate["e2e_p95_ms"] / queued["e2e_p95_ms"], 2))
    rows = [dict(mode=mode, **values) for mode, values in modes.items()]
    stage_rows = [{"mode": mode, "pass": k + 1, **run["stage_p50_ms"]}
                  for mode, runs in passes.items() for k, run in enumerate(runs)]
    payload = dict(command=common.command_line("benchmarks.live_latency", sys.argv[1:]), seconds=args.seconds,
                   rounds=args.rounds, input_size=args.input_size, with_file=args.with_file,
                   modes=modes, ratios=ratios, passes=passes)
    sections = [("Modes (pooled over the passes)", common.markdown_table(rows)),
                ("Ratios (gate / queued)", common.markdown_table([ratios])),
                ("Stage p50 (ms) per pass", common.markdown_table(stage_rows))]
    name, title = ("live_latency_with_file", "Live stream beside a video file") if args.with_file \
        else ("live_latency", "Live stream")
    path = common.write_report(name, f"{title}: end-to-end latency and FPS", payload, sections)
    plot = common.plot_stacked_bars({mode: {"end-to-end p50 (ms)": v["e2e_p50_ms"]}
                                     for mode, v in modes.items()}, path.with_suffix(".png"),
                                    f"{title.lower()}, --read --track: end-to-end p50", "ms")
    print(f"wrote {plot}")


if __name__ == "__main__":
    sys.exit(main())
