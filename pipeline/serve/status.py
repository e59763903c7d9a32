"""The run's state as the web view, /api/status and /healthz see it: one entry per stream
(state, frames, drops, reconnects, the newest detections), the stage latencies and the
counters of any other outputs (MQTT, --restream). Source names lose any user:password part."""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

from ..sources.base import without_credentials as redact
from .view import LiveFrames

MAX_TEXTS = 20  # texts listed per stream: those of the newest frame's first 20 detections


class RunStatus:
    """Reads a running Pipeline (its sources and Metrics) and the LiveFrames; `extras` maps a
    name to an object with `counters() -> dict` (e.g. the MQTT sink)."""

    def __init__(self, pipeline, view: LiveFrames, extras: Optional[Dict[str, object]] = None):
        self.pipeline = pipeline
        self.view = view
        self.extras = dict(extras or {})

    def streams(self) -> List[dict]:
        out = []
        for source in self.pipeline.sources:
            stats = source.stats.as_dict()
            latest = self.view.latest(source.stream)
            # stream: the key of the stream's lines in every other output; id: its older name
            entry = dict(id=source.stream, stream=source.stream, name=redact(source.name),
                         kind=source.kind, live=source.live, state=source.state,
                         error=redact(source.error) if source.error else None,
                         frames=self.view.frames.get(source.stream, 0), read=stats["read"],
                         dropped=stats["dropped"], sampled_out=stats["sampled_out"],
                         skipped=stats["skipped"], reconnects=stats["reconnects"],
                         connect_attempts=stats["connect_attempts"],
                         events=[redact(e) for e in stats["events"][-5:]])
            entry.update(_decoding(source))
            entry.update(self._newest(latest))
            out.append(entry)
        return out

    @staticmethod
    def _newest(latest) -> dict:
        if latest is None:
            return dict(frame_index=None, last_frame_age_s=None, detection_count=0, texts=[])
        dets = latest.detections
        texts = dets.data.get("text")
        # a count: `detections` is the list of them in every other output
        return dict(frame_index=int(latest.frame.index),
                    last_frame_age_s=round(time.time() - latest.wall_time, 3),
                    detection_count=len(dets),
                    texts=[] if texts is None else [str(t) for t in texts[:MAX_TEXTS]])

    def snapshot(self) -> dict:
        metrics = self.pipeline.metrics
        return dict(
            frames=metrics.frames_out, fps=round(metrics.fps, 3),
            current_fps=round(metrics.current_fps, 3), elapsed_s=round(metrics.elapsed, 3),
            stages={name: w.summary() for name, w in metrics.stages.items()},
            end_to_end=metrics.end_to_end.summary(), batch_size=metrics.batch_summary(),
            queues={name: dict(g.summary(), depth=g.depth()) for name, g in metrics.queues.items()},
            streams=self.streams(), health=dict(zip(("ok", "reason"), self.health())),
            model_server=self.model_server(), failed_frames=metrics.failed_frames,
            ignored_detections=metrics.ignored_detections,
            outputs={name: extra.counters() for name, extra in self.extras.items()})

    def health(self) -> Tuple[bool, str]:
        """(True, "ok") while no stream is connecting (down since the start), reconnecting or
        failed, else (False, the reasons): `stream 1 (rtsp://cam2/s) reconnecting`, or for a
        source that gave up or broke, `stream 0 (cut.mp4) failed: cut.mp4 ended early: 63 of
        935 frames decoded`, or `model server
        triton://host:8001/dbnet reconnecting`. A file that ended whole, or a source the run
        stopped, is no fault (a file read beside cameras kept the box unhealthy for good), nor a
        local pipeline that reached its own end (`gst:... num-buffers=N`); a live stream that
        ended otherwise is."""
        down = [_reason(s) for s in self.pipeline.sources if not _healthy(s)]
        server = self.model_server()
        if server is not None and server["state"] != "up":
            down.append(f"model server {server['url']} {server['state']}")
        return (not down, "; ".join(down) or "ok")

    def model_server(self) -> Optional[dict]:
        """The remote model's state and counters (a triton:// model), else None."""
        runner = getattr(getattr(self.pipeline, "detector", None), "runner", None)
        return runner.describe() if getattr(runner, "remote", False) else None


def _healthy(source) -> bool:
    return source.state in ("up", "stopped") or (source.state == "ended" and (
        not source.live or getattr(source, "ended_by_itself", False)))


def _reason(source) -> str:
    why = f"failed: {source.error}" if source.state == "failed" and source.error else source.state
    return redact(f"stream {source.stream} ({source.name}) {why}")


def _decoding(source) -> dict:
    """A video file's or network stream's `hwaccel` asked for and the `decoder` it runs on
    (`nvdec`, `software`, null until its first frame says), as in report.json; null both for
    sources that decode no video stream of their own (images, cameras, `gst:` pipelines)."""
    decoding = getattr(source, "decoding", None)
    return decoding.describe() if decoding is not None else dict(hwaccel=None, decoder=None)
