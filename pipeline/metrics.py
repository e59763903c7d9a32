"""Pipeline metrics: throughput, per-stage latency percentiles, end-to-end latency, queue depths,
drops; a live progress line and a JSON report.

FPS is what users expect: frames that came out of the pipeline divided by wall time since the
first frame was requested (model loading and warm-up excluded, decoding included).
Stage latencies are per call: "decode" is the wait for the source's next frame (for live sources
this includes waiting for the camera or stream), "preprocess" / "infer" / "postprocess" are per
batch, "sink" per frame; end-to-end runs from a frame being read to its results being written.
Batch sizes are counts, not times: a histogram {frames per engine call: calls}.
"""
from __future__ import annotations

import bisect
import json
import sys
import threading
import time
from collections import Counter, deque
from typing import Callable, Dict, Iterable, List, Optional, TextIO

import numpy as np

from dbnet.files import write_text_whole

STAGES = ("decode", "preprocess", "infer", "postprocess", "sink")
PERCENTILES = (50, 95, 99)
# upper bounds (ms) of the cumulative latency histograms that /metrics exposes (--serve)
BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class LatencyWindow:
    """Latencies in milliseconds: exact count, mean and histogram (`BUCKETS_MS`), percentiles
    over the last `window`.

    The window is a ring of float64 written in place, its memory taken at once: a long run's
    memory stays flat (a deque of Python floats cost 32 bytes a sample and grew ~1 MB a minute
    at 70 FPS until full)."""

    def __init__(self, window: int = 100_000):
        self._lock = threading.Lock()
        self._samples = np.full(max(1, window), np.nan)  # np.full touches every page now
        self.count = 0
        self.total_ms = 0.0
        self._buckets = [0] * (len(BUCKETS_MS) + 1)  # the last one: above every bound

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples[self.count % len(self._samples)] = ms
            self.count += 1
            self.total_ms += ms
            self._buckets[bisect.bisect_left(BUCKETS_MS, ms)] += 1

    def histogram(self):
        """([(upper bound ms, cumulative count)...], count, sum ms) over the whole run."""
        with self._lock:
            counts, count, total = list(self._buckets), self.count, self.total_ms
        cumulative, running = [], 0
        for bound, n in zip(BUCKETS_MS, counts):
            running += n
            cumulative.append((bound, running))
        return cumulative, count, total

    def summary(self) -> dict:
        with self._lock:
            samples = self._samples[:min(self.count, len(self._samples))].copy()
            count, total = self.count, self.total_ms
        if count == 0:
            return dict(count=0)
        p = np.percentile(samples, PERCENTILES)
        out = dict(count=count, mean_ms=round(total / count, 3), max_ms=round(float(samples.max()), 3))
        out.update({f"p{q}_ms": round(float(v), 3) for q, v in zip(PERCENTILES, p)})
        return out


class DepthGauge:
    """Queue depth samples (mean, max: taken whenever a stage pulls from the queue) and the
    depth now (`depth()`: read off the queue when it is watched, so a stalled reader's full
    queue shows as full, not as its last sample)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.samples = 0
        self.total = 0
        self.max = 0
        self.last = 0
        self._now: Optional[Callable[[], int]] = None

    def watch(self, depth_now: Callable[[], int]) -> None:
        self._now = depth_now

    def depth(self) -> int:
        return self._now() if self._now is not None else self.last

    def add(self, depth: int) -> None:
        self.last = depth
        self.samples += 1
        self.total += depth
        self.max = max(self.max, depth)

    def summary(self) -> dict:
        mean = self.total / self.samples if self.samples else 0.0
        return dict(capacity=self.capacity, mean=round(mean, 2), max=self.max)


class Metrics:
    """Collected by the pipeline's stage threads; read at any time (progress) and at the end."""

    def __init__(self, window: int = 100_000, stages=STAGES):
        self.stages: Dict[str, LatencyWindow] = {s: LatencyWindow(window) for s in stages}
        self.end_to_end = LatencyWindow(window)
        self.queues: Dict[str, DepthGauge] = {}
        self.batch_sizes: Counter = Counter()  # frames per engine call -> number of calls
        self.frames_out = 0
        self.failed_frames = 0  # frames whose inference failed (a model server away)
        self.failures: deque = deque(maxlen=5)  # the last failure messages
        self.ignored_detections = 0  # dropped inside the detector's ignore zones (--ignore)
        self.t_start: Optional[float] = None
        self.t_last: Optional[float] = None
        self.finished = False  # until then, times run to now (a stalled run's FPS falls)
        self.t_finish: Optional[float] = None
        self._recent = deque(maxlen=64)  # (time, frames_out) for the current FPS

    def start(self) -> None:
        self.t_start = time.perf_counter()

    def finish(self) -> None:
        """The run is over: its wall time ends at its last frame out (or now, without one)."""
        self.finished = True
        self.t_finish = time.perf_counter()

    def stage(self, name: str, seconds: float) -> None:
        self.stages[name].add(seconds * 1e3)

    def batch_done(self, size: int) -> None:
        self.batch_sizes[size] += 1

    def batch_summary(self) -> dict:
        """Engine calls, mean frames per call and the histogram {frames per call: calls}."""
        sizes = dict(self.batch_sizes)  # one copy: the inference stage may add a size meanwhile
        calls = sum(sizes.values())
        frames = sum(size * n for size, n in sizes.items())
        return dict(count=calls, mean=round(frames / calls, 3) if calls else 0.0,
                    histogram={str(size): n for size, n in sorted(sizes.items())})

    def frames_failed(self, count: int, message: str) -> None:
        self.failed_frames += count
        self.failures.append(message)

    def detections_ignored(self, count: int) -> None:
        self.ignored_detections += count

    def queue(self, name: str, capacity: int) -> DepthGauge:
        return self.queues.setdefault(name, DepthGauge(capacity))

    def frame_done(self, t_read: float) -> None:
        now = time.perf_counter()
        self.end_to_end.add((now - t_read) * 1e3)
        self.frames_out += 1
        self.t_last = now
        self._recent.append((now, self.frames_out))

    @property
    def elapsed(self) -> float:
        if self.t_start is None:
            return 0.0
        end = (self.t_last or self.t_finish) if self.finished else time.perf_counter()
        return end - self.t_start

    @property
    def fps(self) -> float:
        """Overall throughput: frames out / wall time."""
        return self.frames_out / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def current_fps(self) -> float:
        """Throughput over the last few dozen frames, up to now while the run goes on (so it
        falls towards 0 when frames stop coming: a stalled camera, a reconnect)."""
        if len(self._recent) < 2:
            return self.fps
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        end = t1 if self.finished else time.perf_counter()
        return (n1 - n0) / (end - t0) if end > t0 else self.fps

    def report(self, sources: Iterable[dict] = (), **extra) -> dict:
        sources = list(sources)
        return dict(
            running=self.t_start is not None and not self.finished,  # a report of a run going on
            frames=self.frames_out,
            wall_s=round(self.elapsed, 4),
            fps=round(self.fps, 3),
            dropped=sum(s.get("dropped", 0) for s in sources),
            sampled_out=sum(s.get("sampled_out", 0) for s in sources),
            skipped=sum(s.get("skipped", 0) for s in sources),
            failed=self.failed_frames,
            failures=list(self.failures),
            ignored_detections=self.ignored_detections,
            stages={name: w.summary() for name, w in self.stages.items()},
            end_to_end=self.end_to_end.summary(),
            batch_size=self.batch_summary(),
            queues={name: g.summary() for name, g in self.queues.items()},
            sources=sources,
            **extra)


def format_summary(report: dict) -> str:
    """Human-readable end-of-run summary of a `Metrics.report()`."""
    sampled = f", {report['sampled_out']} sampled out" if report.get("sampled_out") else ""
    if report.get("skipped"):  # unreadable images, damaged packets: said, not only in the report
        sampled += f", {report['skipped']} inputs skipped"
    lines = [f"{report['frames']} frames in {report['wall_s']:.2f} s: {report['fps']:.2f} FPS"
             f"  (dropped {report['dropped']}{sampled})"]
    rows = list(report["stages"].items()) + [("end-to-end", report["end_to_end"])]
    lines.append(f"  {'stage':<12}{'calls':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, s in rows:
        if s.get("count"):
            lines.append(f"  {name:<12}{s['count']:>7}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
                         f"{s['p99_ms']:>9.2f}")
    if report.get("ignored_detections"):  # a zone that takes nothing shows as no line
        lines.append(f"  {report['ignored_detections']} detections dropped in --ignore zones")
    if report.get("failed"):
        lines.append(f"  {report['failed']} frames failed in inference (last: "
                     f"{report['failures'][-1] if report.get('failures') else '?'})")
    server = (report.get("model") or {}).get("server")
    if server and (server.get("reconnects") or server.get("failed_requests")):
        lines.append(f"  {server['url']}: {server['failed_requests']} failed requests, "
                     f"{server['reconnects']} reconnects")
    for src in report.get("sources", []):
        lines.extend(f"  {src['name']}: {line}" for line in _source_lines(src))
    return "\n".join(lines)


def _source_lines(src: dict) -> List[str]:
    """What the summary says of one source (nothing of one that went as it should)."""
    lines = []
    # a live stream whose reconnects (or a first connect's retries) ran out while others went
    # on: said on its first line, as stderr and report.json ("failed") say it
    given_up = ", given up" if src.get("live") and src.get("state") == "failed" else ""
    down_at_start = src.get("connect_attempts", 0) > 1
    if src.get("reconnects") or src.get("dropped") or (given_up and not down_at_start):
        lines.append(f"{src['dropped']} dropped, {src['reconnects']} reconnects{given_up}")
        given_up = ""
    if down_at_start:
        lines.append(f"down at the start, {src['connect_attempts']} connect attempts"
                     f"{'' if src.get('read') else ', no frame received'}{given_up}")
    elif src.get("live") and not src.get("read"):  # stopped during its first connect (a
        lines.append("no frame received")  # silent host) or first frame
    if src.get("hwaccel") and src.get("decoder") == "software":  # NVDEC asked for, not used
        why = next((e for e in src.get("events", []) if e.startswith("NVDEC")), "")
        lines.append(why or "decoded in software")
    return lines


class Progress:
    """A live one-line progress display: rewritten in place on a terminal, one line every
    `every_s` seconds otherwise (logs, CI)."""

    def __init__(self, metrics: Metrics, total: Optional[int] = None, stream: TextIO = None,
                 every_s: float = 0.5):
        self.metrics = metrics
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s if self.tty else max(every_s, 5.0)
        self._next = 0.0

    def line(self, dropped: int = 0) -> str:
        m = self.metrics
        done = f"{m.frames_out}/{self.total}" if self.total else f"{m.frames_out}"
        return f"frames {done} | {m.current_fps:6.2f} FPS | {m.elapsed:7.1f} s | dropped {dropped}"

    def update(self, dropped: int = 0, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now < self._next:
            return
        self._next = now + self.every_s
        end = "\r" if self.tty else "\n"
        self.stream.write(self.line(dropped) + end)
        self.stream.flush()

    def finish(self, dropped: int = 0) -> None:
        if self.tty:
            self.stream.write(self.line(dropped) + "\n")
            self.stream.flush()


def write_report(report: dict, path) -> None:
    """`path` gets the report whole or not at all (written beside it, then renamed over it): a
    reader, or a run killed while it is written, never sees half a report; an OSError names it."""
    write_text_whole(path, json.dumps(report, indent=2) + "\n")
