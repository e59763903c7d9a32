"""/metrics: a prometheus_client collector that reads the run's counters when scraped, so the
pipeline's threads never call into prometheus_client (no cost between scrapes).

Names (all prefixed dbrt_): frames_total, source_frames_read_total, source_dropped_frames_total,
source_sampled_out_frames_total, source_skipped_inputs_total, source_reconnects_total and source_up per stream; stage_latency_seconds (per stage) and
end_to_end_latency_seconds histograms; queue_depth / queue_capacity per queue; batch_size
histogram (frames per engine call); fps; inference_failed_frames_total (and for a triton:// model
model_server_up, model_server_reconnects_total); ignored_detections_total (--ignore zones); and
the counters of other outputs (mqtt_*, restream_*: labelled `stream` when several streams are
restreamed).
"""
from __future__ import annotations

from engine.lazy import require

from .status import RunStatus, redact

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def registry_for(status: RunStatus):
    """A fresh CollectorRegistry holding only this run's collector."""
    core = require("prometheus_client.core")
    registry = core.CollectorRegistry(auto_describe=False)
    registry.register(_RunCollector(status, core))
    return registry


class _RunCollector:
    def __init__(self, status: RunStatus, core):
        self.status = status
        self.core = core

    def collect(self):
        yield from self._streams()
        yield from self._latencies()
        yield from self._queues_and_batches()
        yield from self._outputs()

    def _streams(self):
        core, view = self.core, self.status.view
        labels = ["stream", "source"]
        frames = core.CounterMetricFamily("dbrt_frames", "frames out of the pipeline", labels=labels)
        read = core.CounterMetricFamily("dbrt_source_frames_read", "frames read from the source",
                                        labels=labels)
        dropped = core.CounterMetricFamily("dbrt_source_dropped_frames",
                                           "frames a live source dropped (consumer too slow)",
                                           labels=labels)
        sampled = core.CounterMetricFamily("dbrt_source_sampled_out_frames",
                                           "frames left out by the run's frame rate (--sample-fps)",
                                           labels=labels)
        skipped = core.CounterMetricFamily("dbrt_source_skipped_inputs",
                                           "inputs skipped: unreadable images, packets the "
                                           "decoder rejected", labels=labels)
        reconnects = core.CounterMetricFamily("dbrt_source_reconnects", "reconnects of the source",
                                              labels=labels)
        up = core.GaugeMetricFamily("dbrt_source_up", "1 while the source is up", labels=labels)
        for source in self.status.pipeline.sources:
            stats = source.stats.as_dict()
            key = [str(source.stream), redact(source.name)]
            frames.add_metric(key, view.frames.get(source.stream, 0))
            read.add_metric(key, stats["read"])
            dropped.add_metric(key, stats["dropped"])
            sampled.add_metric(key, stats["sampled_out"])
            skipped.add_metric(key, stats["skipped"])
            reconnects.add_metric(key, stats["reconnects"])
            up.add_metric(key, 1.0 if source.state == "up" else 0.0)
        yield from (frames, read, dropped, sampled, skipped, reconnects, up)
        yield core.GaugeMetricFamily("dbrt_fps", "frames per second over the last few dozen frames",
                                     value=self.status.pipeline.metrics.current_fps)
        yield core.CounterMetricFamily("dbrt_inference_failed_frames",
                                       "frames whose inference failed (a model server away)",
                                       value=self.status.pipeline.metrics.failed_frames)
        yield core.CounterMetricFamily("dbrt_ignored_detections",
                                       "detections dropped inside the --ignore zones",
                                       value=self.status.pipeline.metrics.ignored_detections)
        server = self.status.model_server()
        if server is not None:
            yield core.GaugeMetricFamily("dbrt_model_server_up", "1 while the model server answers",
                                         value=1.0 if server["state"] == "up" else 0.0)
            yield core.CounterMetricFamily("dbrt_model_server_reconnects",
                                           "reconnects to the model server",
                                           value=server["reconnects"])

    def _latencies(self):
        metrics = self.status.pipeline.metrics
        stages = self.core.HistogramMetricFamily(
            "dbrt_stage_latency_seconds", "seconds per call of each stage (batch or frame)",
            labels=["stage"])
        for name, window in metrics.stages.items():
            buckets, _, total_ms = _seconds(window.histogram())
            stages.add_metric([name], buckets, total_ms)
        yield stages
        buckets, _, total = _seconds(metrics.end_to_end.histogram())
        e2e = self.core.HistogramMetricFamily(
            "dbrt_end_to_end_latency_seconds", "seconds from a frame read to its results written")
        e2e.add_metric([], buckets, total)
        yield e2e

    def _queues_and_batches(self):
        core, metrics = self.core, self.status.pipeline.metrics
        depth = core.GaugeMetricFamily("dbrt_queue_depth", "items waiting in a stage queue",
                                       labels=["queue"])
        capacity = core.GaugeMetricFamily("dbrt_queue_capacity", "capacity of a stage queue",
                                          labels=["queue"])
        for name, gauge in metrics.queues.items():
            depth.add_metric([name], gauge.depth())
            capacity.add_metric([name], gauge.capacity)
        yield from (depth, capacity)
        sizes = dict(metrics.batch_sizes)
        cumulative = [(str(b), sum(n for s, n in sizes.items() if s <= b)) for b in BATCH_BUCKETS]
        cumulative.append(("+Inf", sum(sizes.values())))
        batch = core.HistogramMetricFamily("dbrt_batch_size", "frames per engine call")
        batch.add_metric([], cumulative, sum(s * n for s, n in sizes.items()))
        yield batch

    def _outputs(self):
        """One family per counter of the other outputs: dbrt_mqtt_*, dbrt_restream_*; the
        streams restreamed one by one ("restream_N") are the `stream` label of one family,
        not a family of names per stream."""
        families = {}
        for name, extra in self.status.extras.items():
            output, _, stream = name.partition("_")
            labels, values = (["stream"], [stream]) if stream.isdigit() else ([], [])
            for key, value in extra.counters().items():
                if not isinstance(value, (int, float)):  # bools count as 0 / 1
                    continue
                metric = f"dbrt_{output}_{key}"
                family = families.get(metric)
                if family is None:
                    family = families[metric] = self._family(
                        metric, OUTPUT_HELP.get((output, key), f"{output} {key}"), labels)
                family.add_metric(values, float(value))
        yield from families.values()

    def _family(self, metric: str, documentation: str, labels: list):
        if metric.endswith("_total"):
            return self.core.CounterMetricFamily(metric[:-6], documentation, labels=labels)
        return self.core.GaugeMetricFamily(metric, documentation, labels=labels)


# what the other outputs' counters (pipeline.mqtt, pipeline.restream `counters()`) count
OUTPUT_HELP = {
    ("mqtt", "published_total"): "events handed to the MQTT client (QoS 1)",
    ("mqtt", "acked_total"): "events the MQTT broker acknowledged",
    ("mqtt", "dropped_total"): "events dropped: the outbox was full while the broker was away",
    ("mqtt", "queued"): "events waiting for the MQTT broker's acknowledgement",
    ("mqtt", "skipped_empty_total"): "frames without detections not published (--mqtt-empty first)",
    ("mqtt", "connected"): "1 while connected to the MQTT broker",
    ("mqtt", "reconnects_total"): "connections to the MQTT broker after the first",
    ("restream", "frames_sent_total"): "annotated frames sent to the restream server",
    ("restream", "frames_dropped_total"): "annotated frames not sent (queue full, not connected, "
                                          "or a send that failed)",
    ("restream", "connected"): "1 while connected to the restream server",
    ("restream", "reconnects_total"): "connection attempts to the restream server after the first",
}


def _seconds(histogram):
    """A LatencyWindow histogram in prometheus_client's form: [(le, cumulative)], sum seconds."""
    cumulative, count, total_ms = histogram
    buckets = [(repr(bound / 1e3), n) for bound, n in cumulative] + [("+Inf", count)]
    return buckets, count, total_ms / 1e3
