"""Network streams against a real HTTP MPEG-TS server on 127.0.0.1, killed and restarted
mid-run to prove that the source reconnects with back-off and keeps delivering frames."""
from __future__ import annotations

import contextlib
import threading
import time

import pytest

from engine.errors import SourceError
from engine.triton.ports import free_port
from pipeline.runner import Pipeline
from pipeline.sources import NetworkSource, Reconnect, open_source

from media import FakeDetector, TsServer, index_of, mpegts_bytes, until

@pytest.fixture
def server():
    srv = TsServer(mpegts_bytes(frames=60)).start()
    yield srv
    srv.stop()


def test_stream_killed_and_restarted_mid_run_reconnects(server):
    source = NetworkSource(server.url, reconnect=Reconnect(retries=40, delay=0.1, max_delay=0.4),
                           timeout=3).open()
    frames, after = [], 0

    def restart_once_a_reconnect_failed():  # so that "refused while down" is always seen
        until(lambda: any("reconnect attempt" in e and "failed" in e
                          for e in source.stats.as_dict()["events"]),
              "a reconnect attempt refused while the server is down")
        server.start()

    restart = threading.Thread(target=restart_once_a_reconnect_failed, daemon=True)
    for frame in source:
        frames.append(frame)
        if len(frames) == 15:
            server.stop()  # kill the server and its connection mid-stream
            restart.start()
        if source.stats.reconnects:
            after += 1
            if after >= 15:
                source.close()
    restart.join(30)
    stats = source.stats.as_dict()
    assert stats["reconnects"] >= 1 and server.connections >= 2
    assert any("reconnect attempt" in e and "failed" in e for e in stats["events"])  # refused while down
    assert any(e.startswith("reconnected after") for e in stats["events"])
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and len(frames) >= 30
    assert frames[0].image.shape == (48, 64, 3)


def test_pipeline_over_a_live_stream(server):
    pipe = Pipeline([server.url], FakeDetector(), max_frames=20)
    report = pipe.run()
    assert report["frames"] == 20
    assert report["sources"][0]["kind"] == "network" and report["sources"][0]["live"] is True


def test_a_damaged_packet_in_a_live_stream_is_skipped_not_a_reconnect():
    """container.decode ends at the first packet the decoder rejects: a corrupt packet from a
    camera cost a reconnect (state 'reconnecting', /healthz 503, the frames meanwhile)."""
    server = TsServer(mpegts_bytes(frames=60, damaged=(20,))).start()
    source = NetworkSource(server.url, reconnect=Reconnect(retries=3, delay=0.05), timeout=3)
    try:
        for frame in source.open():
            if frame.index >= 80:  # past the damaged packet (at frame 20 of each loop)
                source.close()
    finally:
        server.stop()
    stats = source.stats.as_dict()
    assert stats["skipped"] >= 1 and stats["reconnects"] == 0, stats
    assert server.connections == 1
    assert any(e.startswith("damaged packet skipped: Invalid data") for e in stats["events"])


def test_unreachable_stream_fails_at_open_with_one_line():
    """Without a reconnect policy (`--reconnect 0`); with one it is waited for
    (test_source_down_at_start)."""
    with pytest.raises(SourceError, match=r"cannot open http://127\.0\.0\.1:\d+/x\.ts") as info:
        open_source(f"http://127.0.0.1:{free_port()}/x.ts", reconnect=None)
    assert "\n" not in str(info.value)


def test_stream_that_never_comes_back_gives_up(server):
    source = NetworkSource(server.url, reconnect=Reconnect(retries=2, delay=0.05), timeout=2).open()
    stopped = False
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts"):
        for frame in source:
            if frame.index >= 5 and not stopped:  # a live source may overwrite frame 5 itself
                server.stop()
                stopped = True


def test_stream_back_at_a_larger_resolution_stays_whole_in_the_annotated_video(server, tmp_path):
    """The annotated video keeps its first size; frames after the reconnect are scaled into it
    (they were cropped to their top-left corner)."""
    import av
    import numpy as np

    from pipeline.sinks import VideoSink

    sizes = []
    restart = threading.Timer(0.5, server.start)

    def watch(frame, dets):
        sizes.append(frame.size)
        if len(sizes) == 10:
            server.stop()
            server.payload = mpegts_bytes(frames=60, height=96, width=128)
            restart.start()
        if sizes.count((96, 128)) == 20:  # the old connection's buffered frames may come first
            pipe.stop()

    source = NetworkSource(server.url, reconnect=Reconnect(retries=40, delay=0.1, max_delay=0.4),
                           timeout=3)
    video = tmp_path / "annotated.mp4"
    pipe = Pipeline([source], FakeDetector(), sinks=[VideoSink(video, fps=25)], callbacks=[watch],
                    max_frames=5000)
    pipe.run()
    restart.join()
    assert sizes[0] == (48, 64) and sizes[-1] == (96, 128), (len(sizes), source.stats.as_dict())
    with av.open(str(video)) as container:
        out = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(out) == len(sizes) and all(o.shape == (48, 64, 3) for o in out)
    after = [o for o, size in zip(out, sizes) if size == (96, 128)]
    assert len(after) >= 10, (len(sizes), source.stats.as_dict())
    for image in after:  # the frame's right half (grey 200) is there, not only its left half
        assert abs(float(np.median(image[8:, 40:])) - 200) < 15


@pytest.mark.parametrize("how", ["connection dropped", "file truncated"])
def test_a_file_over_http_cut_off_midway_is_an_error_not_an_end(tmp_path, how):
    """A server that drops the connection after part of an MP4 (its Content-Length says more),
    or serves a truncated copy whole: the frames after the cut are lost, so the source fails
    instead of ending quietly, as a local truncated file does."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from media import write_truncated_video

    clip = write_truncated_video(tmp_path / "full.mp4", frames=200, keep=1.0)
    data = clip.read_bytes()
    length = len(data) if how == "connection dropped" else len(data) // 2

    class CutHandler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CutHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        source = NetworkSource(f"http://127.0.0.1:{httpd.server_port}/clip.mp4", timeout=3).open()
        assert not source.live
        frames = []
        with pytest.raises(SourceError, match=r"clip\.mp4 ended early after \d+ frames"):
            for frame in source:
                frames.append(frame)
        assert 0 < len(frames) < 200
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def _files_over_http(folder):
    """A plain HTTP server of `folder` on 127.0.0.1 (whole files with Content-Length, no byte
    ranges), for the test's duration; yields its base URL."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_file_over_http_stopped_midway_counts_only_the_frames_handed_on(tmp_path):
    """A stop leaves the frame the reader had read ahead undelivered: for a file it is neither
    read nor dropped (as a local file's frames after a stop), so read = delivered, 0 dropped."""
    from media import write_truncated_video

    write_truncated_video(tmp_path / "clip.mp4", frames=120, keep=1.0)
    with _files_over_http(tmp_path) as base:
        source = NetworkSource(f"{base}/clip.mp4", timeout=3).open()
        assert not source.live
        got = 0
        for _ in source:
            got += 1
            if got == 10:
                until(lambda: len(source._slot) == 1, "the reader to read the next frame ahead")
                source.close()
        source.join(30)
        stats = source.stats.as_dict()
        assert (stats["read"], stats["delivered"], stats["dropped"]) == (10, 10, 0)


def _hls(folder, frames: int = 75):
    """An HLS recording of `frames` frames in 1 s segments; its playlist as a live one
    (without #EXT-X-ENDLIST) is live.m3u8, as ended is ended.m3u8."""
    from fractions import Fraction

    import av

    from media import frame_image

    with av.open(str(folder / "ended.m3u8"), "w", format="hls",
                 options={"hls_time": "1", "hls_list_size": "0"}) as container:
        stream = container.add_stream("mpeg2video", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.gop_size = 25
        for i in range(frames):
            vframe = av.VideoFrame.from_ndarray(frame_image(i, 48, 64), format="bgr24")
            vframe.pts = i
            container.mux(stream.encode(vframe))
        container.mux(stream.encode(None))
    ended = (folder / "ended.m3u8").read_text()
    assert "#EXT-X-ENDLIST" in ended
    (folder / "live.m3u8").write_text(ended.replace("#EXT-X-ENDLIST\n", ""))


def test_a_live_hls_playlist_that_ends_is_not_replayed_on_each_reconnect(tmp_path):
    """A publisher that stops ends its live playlist (#EXT-X-ENDLIST): each reconnect found
    the ended playlist and read its segments again, for ever (duplicate frames, a reconnect a
    second). Now an ended playlist is a failed attempt, until it is live again or given up."""
    _hls(tmp_path)
    with _files_over_http(tmp_path) as base:
        source = NetworkSource(f"{base}/live.m3u8", reconnect=Reconnect(retries=2, delay=0.05),
                               timeout=3).open()
        assert source.live
        (tmp_path / "live.m3u8").write_text((tmp_path / "ended.m3u8").read_text())  # it ends
        indices = []
        with pytest.raises(SourceError, match="gave up after 2 reconnect attempts .*ENDLIST"):
            for frame in source:
                indices.append(index_of(frame.image))
                assert len(indices) < 200, "the ended playlist is read again and again"
    stats = source.stats.as_dict()
    assert stats["reconnects"] == 0 and len(indices) <= 75, stats


def test_a_file_behind_an_address_without_a_suffix_is_read_whole_from_0(tmp_path):
    """A download link (no file suffix) to a Matroska recording whose clock starts at 1000 s:
    the container states a length, so every frame is delivered to a slow reader, the end is
    the end (no reconnect replaying it) and timestamps count from the file's start."""
    from fractions import Fraction

    import av

    from media import frame_image

    with av.open(str(tmp_path / "recording"), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            vframe = av.VideoFrame.from_ndarray(frame_image(i, 48, 64), format="bgr24")
            vframe.pts, vframe.time_base = 25_000 + i, Fraction(1, 25)
            container.mux(stream.encode(vframe))
        container.mux(stream.encode(None))

    with _files_over_http(tmp_path) as base:
        source = open_source(f"{base}/recording")
        assert not source.live
        frames = []
        for frame in source:
            frames.append(frame)
            time.sleep(0.01)  # a slow consumer: a live source would overwrite frames meanwhile
        stats = source.stats.as_dict()
        assert [f.index for f in frames] == list(range(20)), stats
        assert (stats["dropped"], stats["reconnects"]) == (0, 0)
        assert frames[0].timestamp == pytest.approx(0.0, abs=1e-3)
        assert frames[-1].timestamp == pytest.approx(19 / 25, abs=1e-3)


def test_an_mpeg_ts_recording_over_http_is_a_file_and_an_unseekable_mp4_says_why(tmp_path):
    """A .ts file from a plain HTTP server (it sends Content-Length) is read once, every frame
    (it was taken for a live stream: frames dropped, the file replayed forever); an MP4 whose
    index is at its end, from a server without byte ranges, fails naming the likely cause."""
    from pipeline.shipped import DEMO_VIDEO

    (tmp_path / "rec.ts").write_bytes(mpegts_bytes(frames=30))
    (tmp_path / "demo.mp4").write_bytes(DEMO_VIDEO.read_bytes())  # index at the end
    with _files_over_http(tmp_path) as base:
        source = open_source(f"{base}/rec.ts")
        assert not source.live
        frames = []
        for frame in source:
            frames.append(frame.index)
            time.sleep(0.005)
        stats = source.stats.as_dict()
        assert frames == list(range(30)) and (stats["dropped"], stats["reconnects"]) == (0, 0)
        with pytest.raises(SourceError, match="needs HTTP byte ranges"):
            list(open_source(f"{base}/demo.mp4"))


def test_a_stream_that_sends_nothing_says_it_timed_out(monkeypatch):
    """PyAV's timeouts reach FFmpeg as an interrupt, which FFmpeg words "Immediate exit
    requested": the line says what happened instead."""
    import socket
    monkeypatch.setattr(NetworkSource, "OPEN_TIMEOUT", 1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:  # a port nobody sends to
        quiet.bind(("127.0.0.1", 0))
        url = f"udp://127.0.0.1:{quiet.getsockname()[1]}"
        quiet.close()
        with pytest.raises(SourceError) as info:
            NetworkSource(url, reconnect=None, timeout=1).open()
    assert str(info.value) == f"cannot open {url}: nothing received for 1 s (timed out)"


def test_a_stream_that_stalls_midway_says_its_read_timed_out(monkeypatch):
    monkeypatch.setattr(NetworkSource, "OPEN_TIMEOUT", 1.0)  # the reconnect's wait
    server = TsServer(mpegts_bytes(frames=60)).start()
    source = NetworkSource(server.url, reconnect=Reconnect(retries=1, delay=0.05), timeout=1).open()
    try:
        with pytest.raises(SourceError, match="gave up after 1 reconnect"):
            for frame in source:
                if frame.index >= 5:  # a live source may drop frame 5 itself on a busy machine
                    server.pause()  # the connection stays open, nothing more arrives
    finally:
        server.stop()
    events = source.stats.as_dict()["events"]
    assert "read failed: nothing received for 1 s (timed out)" in events, events
    assert not any("Immediate exit" in e for e in events), events


def test_the_read_timeout_is_the_run_s_to_set_and_bounds_the_open_too(monkeypatch):
    """A camera sending a frame every 10 s (timelapse, motion-only encoders) needs reads that
    wait longer than 5 s, a fast failover shorter ones: `source_timeout` (`--source-timeout`)
    sets the read's bound; the open waits OPEN_TIMEOUT (FFmpeg's probing of a slow stream), or
    the read's bound when that is longer."""
    import pipeline.sources.network as network
    from pipeline.sources import parse_source

    asked = []

    def recording_open(url, options=None, timeout=None, **kwargs):
        asked.append(timeout)
        raise SourceError(f"cannot open {url}: recorded")

    monkeypatch.setattr(network, "open_container", recording_open)
    for seconds in (None, 0.5, 12, 45):
        given = {} if seconds is None else dict(source_timeout=seconds)
        source = parse_source("rtsp://127.0.0.1:9/cam", reconnect=None, **given)
        with pytest.raises(SourceError, match="recorded"):
            source.open()
    assert asked == [(30.0, 5.0), (30.0, 0.5), (30.0, 12), (45, 45)]
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            NetworkSource("rtsp://cam/1", timeout=bad)


def test_a_stream_quiet_longer_than_the_read_timeout_it_was_given_is_lost(monkeypatch):
    monkeypatch.setattr(NetworkSource, "OPEN_TIMEOUT", 1.0)  # the reconnect's wait
    server = TsServer(mpegts_bytes(frames=60)).start()
    source = open_source(server.url, source_timeout=1, reconnect=Reconnect(retries=1, delay=0.05))
    try:
        with pytest.raises(SourceError, match="gave up after 1 reconnect"):
            for frame in source:
                if frame.index >= 5:  # a live source may drop frame 5 itself on a busy machine
                    server.pause()
    finally:
        server.stop()
    events = source.stats.as_dict()["events"]
    assert "read failed: nothing received for 1 s (timed out)" in events, events


def test_dbrt_run_source_timeout_reaches_the_stream(tmp_path, tiny_onnx, capsys, monkeypatch):
    """A server that answers and then sends nothing: the open gives up after the flag's
    seconds (OPEN_TIMEOUT made shorter here), and says so."""
    from pipeline.cli import main

    monkeypatch.setattr(NetworkSource, "OPEN_TIMEOUT", 1.0)
    server = TsServer(mpegts_bytes(frames=30))
    server.pause()
    server.start()
    try:
        assert main(["run", server.url, "--model", str(tiny_onnx), "-o", str(tmp_path / "out"),
                     "--reconnect", "0", "--source-timeout", "2", "--quiet"]) == 2
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert f"cannot open {server.url}: nothing received for 2 s (timed out)" in err, err
    assert err.count("error") == 1


def test_an_rtsp_stream_s_transport_is_the_one_asked_for():
    """Some cameras and NVRs serve RTP over UDP only, or multicast, or RTSP tunnelled over HTTP:
    FFmpeg's rtsp_transport was always tcp."""
    from pipeline.sources import parse_source

    assert NetworkSource("rtsp://cam/1").options == {"rtsp_transport": "tcp"}
    assert NetworkSource("RTSP://cam/1").options == {"rtsp_transport": "tcp"}
    for transport in ("tcp", "udp", "udp_multicast", "http"):
        source = parse_source("rtsp://cam/1", rtsp_transport=transport)
        assert source.options == {"rtsp_transport": transport}
        assert parse_source("rtsps://cam/1", rtsp_transport=transport).options["rtsp_transport"] == transport
        assert "rtsp_transport" not in parse_source("http://cam/live.ts", rtsp_transport=transport).options
    given = NetworkSource("rtsp://cam/1", rtsp_transport="udp", options={"rtsp_transport": "http"})
    assert given.options == {"rtsp_transport": "http"}  # FFmpeg's own option, given, wins
    with pytest.raises(ValueError, match="rtsp_transport must be one of tcp, udp, udp_multicast, http"):
        NetworkSource("rtsp://cam/1", rtsp_transport="UDP")


def test_an_rtmp_stream_is_probed_for_one_second_not_five():
    """FFmpeg read 5 s of an rtmp:// stream before its open returned, waiting for an audio track
    (nginx-rtmp: the first frame 6 s after each connect, reconnects included); FLV gives the
    video's settings in its first packet. An analyzeduration the caller gives wins."""
    from pipeline.sources.network import RTMP_PROBE_US

    assert NetworkSource("rtmp://server/live/s").options == {"analyzeduration": str(RTMP_PROBE_US)}
    assert RTMP_PROBE_US == 1_000_000
    given = NetworkSource("rtmps://server/live/s", options={"analyzeduration": "3000000"})
    assert given.options == {"analyzeduration": "3000000"}
    assert "analyzeduration" not in NetworkSource("rtsp://cam/1").options
