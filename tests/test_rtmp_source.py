"""rtmp:// sources read for real from an RTMP server, nginx-rtmp (tests/rtmp_server.py; skipped
with the install hint where there is none), fed by a publisher process: frames and their
clock, a run started before its publisher (a server whose player waits for the stream, one
that refuses to play it) and what each says, a publisher that stops and comes back (an outage,
or none when back before the read times out), and `--restream rtmp://` played back from the
server, or refused a stream key already published."""
from __future__ import annotations

import json
import re
import threading

import pytest

from engine.errors import DbrtWarning, SourceError
from engine.triton.ports import free_port
from pipeline.cli import main
from pipeline.sources import NetworkSource, Reconnect, live, open_source

from media import frame_image, until, write_video
from rtmp_server import NginxRtmp, missing
from serve_helpers import dbrt

av = pytest.importorskip("av")
FOREVER = Reconnect(retries=None, delay=0.05, max_delay=0.2)
# FFmpeg reads the first second of a stream from nginx-rtmp before its open returns (dbrt's
# analyzeduration for rtmp://; the server's metadata does not say which tracks there are): a
# connect takes that long at least; a safety net, not a measurement
WAIT_S = 60.0


@pytest.fixture
def server():
    why = missing()
    if why:
        pytest.skip(why)
    srv = NginxRtmp(free_port())
    yield srv
    srv.stop()


def _attempts(source) -> int:
    return source.stats.as_dict()["connect_attempts"]


def test_dbrt_run_reads_a_published_stream(server, tmp_path, tiny_onnx):
    server.publish().wait_publishing()
    out = tmp_path / "out"
    assert main(["run", server.url(), "--model", str(tiny_onnx), "-o", str(out), "--quiet",
                 "--no-video", "--max-frames", "10", "--reconnect", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    source = report["sources"][0]
    assert report["frames"] == 10 and (source["kind"], source["live"]) == ("network", True)
    assert source["connect_attempts"] == 1 and source["reconnects"] == 0
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [line["frame_size"] for line in lines] == [[48, 64]] * 10
    times = [line["timestamp"] for line in lines]
    assert all(a < b for a, b in zip(times, times[1:])), times


def test_a_stream_played_before_it_is_published_is_read_once_it_is(server, monkeypatch):
    """nginx-rtmp takes a play of a stream nobody publishes yet and sends nothing: FFmpeg's
    open waits (up to its 30 s), the run starts meanwhile, and the open that waited gets the
    stream once its publisher starts: one connect attempt."""
    monkeypatch.setattr(live, "FIRST_CONNECT_WAIT_S", 0.2)
    publisher = server.publish().ready()
    with pytest.warns(DbrtWarning) as warned:
        source = open_source(server.url(), reconnect=FOREVER)
    try:
        assert [str(w.message) for w in warned] == [
            f"{server.url()} is not up (no answer within 0.2 s): retrying it for ever while "
            "the run starts"]
        assert source.state == "connecting"
        publisher.wait_publishing()
        frames = _first(source, 5)
    finally:
        source.close()
    assert [f.connection for f in frames] == [0] * 5 and frames[0].image.shape == (48, 64, 3)
    stats = source.stats.as_dict()
    assert stats["connect_attempts"] == 1 and stats["reconnects"] == 0


def test_dbrt_run_started_before_the_publisher_waits_for_it(server, tmp_path, tiny_onnx):
    """The command as a service runs it: nothing published at the start, --reconnect -1; one
    warning line after the first connect's 10 s, and the stream read once published, on the
    connect that waited."""
    out, publisher = tmp_path / "out", server.publish().ready()
    proc = dbrt("run", server.url(), "--model", str(tiny_onnx), "-o", str(out), "--quiet",
                "--no-video", "--max-frames", "6", "--reconnect", "-1")
    try:
        said = [proc.stderr.readline()]
        while said[-1] and "is not up" not in said[-1]:
            said.append(proc.stderr.readline())
        publisher.wait_publishing()
        _, err = proc.communicate(timeout=WAIT_S * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(said) + err
    warned = [line for line in "".join(said).splitlines() + err.splitlines() if "warning" in line]
    assert warned[0] == (f"dbrt run: warning: {server.url()} is not up (no answer within 10 s): "
                         "retrying it for ever while the run starts")
    # up after the connect that began at the start, the play the server held included
    up = re.fullmatch(rf"dbrt run: warning: {re.escape(server.url())} is up after ([\d.]+) s "
                      r"\(1 connect attempt\)", warned[1])
    assert len(warned) == 2 and up and float(up[1]) >= 10, warned
    source = json.loads((out / "report.json").read_text())["sources"][0]
    assert source["delivered"] == 6 and source["connect_attempts"] == 1, source
    assert source["reconnects"] == 0 and source["state"] == "ended"


def test_a_stream_refused_until_it_is_published_is_retried_then_read(server):
    """A server that refuses to play a stream nobody publishes (nginx-rtmp with idle_streams
    off, NetStream.Play.StreamNotFound; FFmpeg says only "Operation not permitted"): the
    warning says what the refusal means, and the stream is read once published."""
    url = server.url("strict/s")
    refused = ("the RTMP server refused to play it: most often nothing is published under this "
               "name yet")
    with pytest.warns(DbrtWarning) as warned:
        source = open_source(url, reconnect=FOREVER)
    try:
        assert [str(w.message) for w in warned] == [
            f"{url} is not up ({refused}): retrying it for ever while the run starts"]
        until(lambda: _attempts(source) >= 3, "retries of the stream not published yet")
        server.publish("strict/s").wait_publishing()
        frames = _first(source, 5)
    finally:
        source.close()
    stats = source.stats.as_dict()
    assert stats["events"][0] == f"connect failed: {refused}; retrying"
    assert f"connected at attempt {stats['connect_attempts']}" in stats["events"]
    assert stats["connect_attempts"] >= 4 and stats["reconnects"] == 0
    assert [f.connection for f in frames] == [0] * 5


def test_without_reconnects_a_refused_stream_fails_at_open_saying_why(server):
    with pytest.raises(SourceError, match=r"^cannot open rtmp://127\.0\.0\.1:\d+/strict/s: the RTMP "
                                        r"server refused to play it: most often nothing"):
        open_source(server.url("strict/s"), reconnect=None)


def test_a_play_nobody_publishes_times_out_saying_so(server, monkeypatch):
    """nginx-rtmp holds the play and sends nothing: FFmpeg's open, stopped by its timeout, said
    only "Input/output error"."""
    monkeypatch.setattr(NetworkSource, "OPEN_TIMEOUT", 1.0)
    with pytest.raises(SourceError, match=r"^cannot open rtmp://127\.0\.0\.1:\d+/live/s: nothing "
                                          r"received for 1 s \(timed out\)$"):
        NetworkSource(server.url(), reconnect=None, timeout=0.5).open()


@pytest.mark.parametrize("app", ["live", "strict"])
def test_a_publisher_that_stops_and_comes_back_is_an_outage_and_a_reconnect(server, app):
    """live: the server keeps the player waiting for a new publisher (the read times out);
    strict: it hangs up and refuses to play until one is back. Either way one reconnect,
    frames on a new connection whose clock starts afresh, each connection's clock rising."""
    url = server.url(f"{app}/s")
    publisher = server.publish(f"{app}/s")
    publisher.wait_publishing()
    source = NetworkSource(url, reconnect=Reconnect(retries=None, delay=0.05, max_delay=0.2),
                           timeout=1).open()
    frames = []
    try:
        for frame in source:
            frames.append(frame)
            if len(frames) == 10:
                publisher.stop()
                threading.Thread(target=_publish_once_reconnecting, args=(server, source, app),
                                 daemon=True).start()
            if frame.connection == 1 and sum(f.connection for f in frames) == 5:
                break
    finally:
        source.close()
    stats = source.stats.as_dict()
    assert stats["reconnects"] == 1, stats
    assert any(e.startswith("reconnected after") for e in stats["events"])
    if app == "live":  # the server kept the player: its read timed out
        assert "read failed: nothing received for 1 s (timed out)" in stats["events"], stats
    for connection in (0, 1):
        times = [f.timestamp for f in frames if f.connection == connection]
        assert all(a < b for a, b in zip(times, times[1:])), times
    assert [f.connection for f in frames] == sorted(f.connection for f in frames)
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)


def test_a_publisher_back_within_the_read_timeout_is_no_outage(server):
    """nginx-rtmp keeps its player while the publisher is away: one back before the read times
    out continues the same connection, its clock starting again."""
    publisher = server.publish()
    publisher.wait_publishing()
    source = NetworkSource(server.url(), reconnect=Reconnect(retries=3, delay=0.05),
                           timeout=30).open()
    frames = []
    try:
        for frame in source:
            frames.append(frame)
            if len(frames) == 1:
                back = server.publish().ready()
            if len(frames) == 10:
                publisher.stop()
                back.wait_publishing()
            restarts = [i for i, (a, b) in enumerate(zip(frames, frames[1:]))
                        if b.timestamp < a.timestamp]
            if restarts and len(frames) >= restarts[0] + 6:
                break
    finally:
        source.close()
    stats = source.stats.as_dict()
    assert stats["reconnects"] == 0 and stats["connect_attempts"] == 1, stats
    assert len(restarts) == 1 and restarts[0] >= 9
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)


def _publish_once_reconnecting(server, source, app):
    back = server.publish(f"{app}/s").ready()
    until(lambda: source.state == "reconnecting", "the outage to be seen", WAIT_S)
    back.wait_publishing()


def _first(source, count: int) -> list:
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def test_restream_publishes_to_the_server_for_a_player(server, tmp_path, tiny_onnx):
    """`dbrt run --restream rtmp://...` publishes the annotated video to nginx-rtmp while a
    player, there first (it waits for the stream), plays it back: frames in order (some
    dropped: a file is sent as fast as it is detected)."""
    clip = write_video(tmp_path / "clip.mp4", frames=250, height=48, width=64, fps=25)
    out_url = server.url("live/out")
    got = []
    player = threading.Thread(target=_play, args=(out_url, got), daemon=True)
    player.start()
    proc = dbrt("run", str(clip), "--model", str(tiny_onnx), "-o", str(tmp_path / "out"),
                "--no-video", "--quiet", "--threads", "1", "--restream", out_url)
    try:
        _, err = proc.communicate(timeout=WAIT_S * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    player.join(WAIT_S)
    sent = json.loads((tmp_path / "out" / "report.json").read_text())["outputs"]["restream"]["0"]
    assert sent["frames_sent_total"] >= 1 and sent["reconnects_total"] == 0
    assert 10 <= len(got) <= sent["frames_sent_total"]
    assert {image.shape for image, _ in got} == {(48, 64, 3)}
    times = [time for _, time in got]
    assert all(a < b for a, b in zip(times, times[1:])), times  # in order, none twice


def _play(url: str, got: list) -> None:
    """Decode `url`'s frames until its publisher is gone (the read waits 3 s for more)."""
    try:
        with av.open(url, timeout=(WAIT_S, 3.0)) as container:
            for frame in container.decode(video=0):
                got.append((frame.to_ndarray(format="bgr24"), frame.time))
    except (av.FFmpegError, OSError):
        pass


def test_restream_to_a_stream_key_already_published_says_so(server):
    """nginx-rtmp refuses a second publisher of a stream (NetStream.Publish.BadName), which
    FFmpeg words "Operation not permitted": the restream's error says what it most often is."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    server.publish("live/out").wait_publishing()
    sink = RestreamSink(server.url("live/out"), annotators=[], max_queued=64)
    try:
        for index in range(5):
            sink.write(Frame(frame_image(index), index, index / 25, "clip"), Detections.empty())
        until(lambda: sink.outputs[0].counters()["last_error"], "the server's refusal")
    finally:
        sink.close()
    counters = sink.outputs[0].counters()
    assert counters["frames_sent_total"] == 0 and counters["connected"] is False
    assert counters["last_error"] == (
        "the RTMP server refused the stream: most often another publisher already sends under "
        "this stream key, or the server does not take this key"), counters
