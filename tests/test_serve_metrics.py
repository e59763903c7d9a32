"""/metrics as a Prometheus server reads it (prometheus_client's own parser): one family per
counter of the other outputs, the restreamed streams as a `stream` label; source names with
quotes and backslashes come back whole."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from media import write_video

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed "
                    "(pip install 'dbrt[serve]')")


class _Counted:
    def __init__(self, **counters):
        self._counters = counters

    def counters(self) -> dict:
        return dict(self._counters)


def _families(run, extras) -> dict:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from pipeline.serve.prometheus import registry_for
    from pipeline.serve.status import RunStatus
    from pipeline.serve.view import LiveFrames

    text = generate_latest(registry_for(RunStatus(run, LiveFrames(), extras))).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _run(sources):
    from pipeline.metrics import Metrics
    from pipeline.sources import open_sources

    return SimpleNamespace(sources=open_sources([str(s) for s in sources]), metrics=Metrics())


def test_streams_restreamed_one_by_one_are_a_label_of_one_family(tmp_path):
    """Each restreamed stream had metric names of its own (dbrt_restream_0_frames_sent_total,
    dbrt_restream_1_...): no query could sum or compare them, and the names grew with the
    streams. Now dbrt_restream_frames_sent_total{stream="0"} and {stream="1"}."""
    run = _run([write_video(tmp_path / "a.mp4")])
    extras = {name: _Counted(url="rtsp://h/x", frames_sent_total=n, frames_dropped_total=1,
                             reconnects_total=0, connected=True, last_error=None)
              for name, n in (("restream_0", 10), ("restream_1", 20))}
    extras["mqtt"] = _Counted(published_total=5, acked_total=4, dropped_total=0, queued=1,
                              connected=False, reconnects_total=2, last_error="refused")
    try:
        families = _families(run, extras)
    finally:
        for source in run.sources:
            source.close()
    per_stream = ("dbrt_restream_0", "dbrt_restream_1")
    assert not [name for name in families if name.startswith(per_stream)]
    sent = families["dbrt_restream_frames_sent"]
    assert sent.type == "counter"
    assert {s.labels["stream"]: s.value for s in sent.samples} == {"0": 10.0, "1": 20.0}
    assert families["dbrt_restream_connected"].type == "gauge"
    assert [s.value for s in families["dbrt_mqtt_reconnects"].samples] == [2.0]
    assert families["dbrt_mqtt_queued"].samples[0].labels == {}


def test_one_restreamed_stream_keeps_its_unlabelled_names(tmp_path):
    run = _run([write_video(tmp_path / "a.mp4")])
    extras = {"restream": _Counted(frames_sent_total=3, reconnects_total=0, connected=True)}
    try:
        families = _families(run, extras)
    finally:
        for source in run.sources:
            source.close()
    assert [(s.name, s.labels, s.value) for s in families["dbrt_restream_frames_sent"].samples] \
        == [("dbrt_restream_frames_sent_total", {}, 3.0)]


def test_a_source_name_with_quotes_and_backslashes_is_escaped(tmp_path):
    path = write_video(tmp_path / 'cam "1"\\x.mp4')
    run = _run([path])
    try:
        families = _families(run, {})
    finally:
        for source in run.sources:
            source.close()
    assert [s.labels for s in families["dbrt_source_up"].samples] == \
        [{"stream": "0", "source": str(path)}]


def test_the_other_outputs_counters_say_what_they_count(tmp_path):
    """Their HELP was the counter's own name ("mqtt dropped_total"): a dashboard's tooltip said
    nothing of what made an event dropped."""
    run = _run([write_video(tmp_path / "a.mp4")])
    extras = {"restream": _Counted(frames_sent_total=3, frames_dropped_total=0,
                                   reconnects_total=0, connected=True),
              "mqtt": _Counted(published_total=5, acked_total=4, dropped_total=0, queued=1,
                               connected=True, reconnects_total=0)}
    try:
        families = _families(run, extras)
    finally:
        for source in run.sources:
            source.close()
    helps = {name: family.documentation for name, family in families.items()
             if name.startswith(("dbrt_mqtt", "dbrt_restream"))}
    assert len(helps) == 10
    assert "broker was away" in helps["dbrt_mqtt_dropped"]
    assert all(len(text.split()) >= 4 for text in helps.values()), helps
