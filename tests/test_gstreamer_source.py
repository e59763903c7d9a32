"""GStreamer pipelines (gst:..., csi://N) through a real gst-launch-1.0 child process."""
from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest

from engine.errors import DbrtWarning, SourceError
from pipeline.sources import GStreamerSource, is_camera_spec, open_source, parse_source
from pipeline.sources.gstreamer import csi_pipeline, parse_caps, reads_file

needs_gst = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None,
                               reason="GStreamer's gst-launch-1.0 is not installed "
                                      "(Debian / Ubuntu: gstreamer1.0-tools gstreamer1.0-plugins-base)")
TEST_SOURCE = "gst:videotestsrc is-live=true pattern=smpte ! video/x-raw,width=64,height=48,framerate=30/1"


def test_specs_pick_the_gstreamer_source():
    csi = parse_source("csi://1", camera=dict(width=1280, height=720, fps=60))
    assert isinstance(csi, GStreamerSource) and csi.name == "csi://1" and is_camera_spec("csi://1")
    assert csi.description == csi_pipeline(1, 1280, 720, 60)
    assert "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720," \
           "framerate=60/1 ! nvvidconv" in csi.description
    gst = parse_source(TEST_SOURCE)
    assert isinstance(gst, GStreamerSource) and not is_camera_spec(TEST_SOURCE)
    words = gst.command(7)
    assert words[:4] == ["gst-launch-1.0", "-v", "-e", "videotestsrc"] and "fd=7" in words


@pytest.mark.parametrize("spec, message", [
    ("gst:", "empty GStreamer pipeline"),
    ("gst:videotestsrc ! appsink", "end the pipeline before its sink"),
    ("gst:v4l2src ! tee name=t ! queue ! filesink location=a.ts t. ! queue ! fakesink", "'fakesink' at the end"),
    ("gst:filesrc location='a.mp4 ! decodebin", "No closing quotation"),
])
def test_bad_pipelines_are_one_line_errors(spec, message):
    with pytest.raises(SourceError, match=message):
        parse_source(spec)


def test_csi_has_no_pixel_format_to_choose():
    with pytest.raises(SourceError, match="--camera-fourcc"):
        parse_source("csi://0", camera=dict(fourcc="MJPG"))


def test_caps_are_read_from_gst_launch_output():
    caps = parse_caps("format=(string)BGR, width=(int)640, height=(int)480, framerate=(fraction)30000/1001, "
                      "multiview-mode=(string)mono")
    assert caps == dict(format="BGR", width=640, height=480, fps=pytest.approx(29.97, abs=0.01))
    assert parse_caps("format=(string)BGR, width=(int)8, height=(int)4, framerate=(fraction)0/1")["fps"] is None


def test_a_frame_size_change_mid_stream_restarts_the_pipeline():
    """The pipe has no frame boundaries: bytes after a size change cannot be cut into frames."""
    source = GStreamerSource("v4l2src")
    line = ("/GstPipeline:pipeline0/GstFdSink:dbrt_sink.GstPad:sink: caps = video/x-raw, "
            "format=(string)BGR, width=(int){w}, height=(int){h}, framerate=(fraction)30/1\n")
    source._watch_output(line.format(w=640, h=480))
    assert source.mode["width"] == 640 and source._caps.is_set()
    source._watch_output(line.format(w=640, h=480))  # the same caps again: nothing changes
    source._check_size()
    source._watch_output(line.format(w=1280, h=720))
    with pytest.raises(SourceError, match="changed its frame size to 1280x720; restarting"):
        source._read()


def test_missing_gst_launch_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SourceError, match="gst-launch-1.0 not found; install GStreamer"):
        open_source(TEST_SOURCE)


@needs_gst
def test_frames_come_through_the_pipe_at_the_negotiated_size():
    source = open_source(TEST_SOURCE)
    assert source.mode == dict(format="BGR", width=64, height=48, fps=30.0) and source.fps == 30.0
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == 3:
            break
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].image[:, :8].mean() > 150  # SMPTE bars start with light grey
    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)
    source.join(5)
    assert source._proc is None  # the child was stopped with the source
    assert source.describe()["pipeline"].startswith("videotestsrc")


@pytest.mark.parametrize("description, file", [
    ("filesrc location=a.mp4 ! qtdemux ! h264parse ! nvv4l2decoder ! nvvidconv", True),
    ("uridecodebin uri=file:///data/a.mkv", True),
    ("uridecodebin name=src caps=video/x-raw uri=file:///data/a.mkv", True),
    ("videotestsrc ! compositor name=c ! queue filesrc location=a.raw ! rawvideoparse ! c.", True),
    ("v4l2src ! tee name=t ! queue ! filesink location=rec.ts t. ! queue", False),
    ("uridecodebin uri=rtsp://cam/1", False),
    ("nvarguscamerasrc sensor-id=0", False), ("v4l2src device=/dev/video1", False),
])
def test_pipelines_that_read_a_file_are_not_live(description, file):
    assert reads_file(description.split()) is file
    source = GStreamerSource(description)
    assert source.live is not file and (source.reconnect is None) is file


def test_a_sink_inside_a_tee_branch_is_the_users():
    source = GStreamerSource("v4l2src ! tee name=t ! queue ! filesink location=rec.ts t. ! queue")
    assert source.live and source.command(5)[-4:] == ["fdsink", "name=dbrt_sink", "fd=5", "sync=false"]


@needs_gst
def test_rows_padded_to_four_bytes_are_unpadded():
    """30 px of BGR is 90 bytes, which GStreamer pads to 92 per row."""
    frames = list(GStreamerSource("videotestsrc num-buffers=3 pattern=white ! video/x-raw,width=30,height=10",
                                  live=False).open())  # not live: every frame, for the count
    assert len(frames) == 3
    assert all(f.image.shape == (10, 30, 3) and (f.image == 255).all() for f in frames)


@needs_gst
def test_a_file_pipeline_that_fails_midway_is_an_error_not_an_end(tmp_path):
    raw = tmp_path / "frames.bgr"
    raw.write_bytes(bytes(32 * 16 * 3) * 12)
    source = open_source(f"gst:filesrc location={raw} ! rawvideoparse width=32 height=16 format=bgr "
                         "framerate=10/1 ! identity error-after=5")
    with pytest.raises(SourceError, match="ended early after 4 frames"):
        list(source)


@needs_gst
def test_gstreamer_messages_are_read_untranslated(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "de")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    with pytest.raises(SourceError, match='no element "nosuchelement"'):
        open_source("gst:nosuchelement ! video/x-raw")


def _close_after_first_frame(source):
    """Iterate in a thread, close the source after its first frame, wait for both readers (the
    thread and the source's own): (its child process, frames the iteration got)."""
    child, got = source._proc, []
    reader = threading.Thread(target=lambda: got.extend(source))
    reader.start()
    while not got and reader.is_alive():
        reader.join(0.05)
    source.close()
    reader.join(10)
    source.join(10)
    assert not reader.is_alive(), "closing did not end the iteration"
    return child, len(got)


def test_a_child_that_ignores_its_end_is_killed_after_close(tmp_path, monkeypatch):
    """A source that never delivers its end of stream (a stalled camera) cannot keep the reader,
    or the child, alive after close()."""
    import sys
    import pipeline.sources.gstreamer as gst

    fake = tmp_path / "gst-launch-1.0"
    fake.write_text(f"#!{sys.executable}\n" + '''import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
fd = int([a for a in sys.argv if a.startswith("fd=")][0][3:])
print("/GstPipeline:pipeline0/GstFdSink:dbrt_sink.GstPad:sink: caps = video/x-raw, "
      "format=(string)BGR, width=(int)4, height=(int)2, framerate=(fraction)30/1", flush=True)
os.write(fd, bytes(4 * 2 * 3))
time.sleep(600)
''')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(gst, "STOP_TIMEOUT", 0.3)
    child, frames = _close_after_first_frame(open_source("gst:stalledsrc"))
    assert frames == 1
    assert child.wait(timeout=10) == -9  # killed: it ignored SIGINT


@needs_gst
def test_a_file_pipeline_delivers_every_frame_in_order(tmp_path):
    import time

    raw = tmp_path / "frames.bgr"
    raw.write_bytes(b"".join(bytes([10 * i]) * (32 * 16 * 3) for i in range(12)))
    source = open_source(f"gst:filesrc location={raw} ! rawvideoparse width=32 height=16 format=bgr "
                         "framerate=10/1")
    assert not source.live
    frames = []
    for frame in source:
        time.sleep(0.02)  # a consumer slower than GStreamer: it waits, nothing is dropped
        frames.append(frame)
    assert [f.index for f in frames] == list(range(12))
    assert [int(f.image[0, 0, 0]) for f in frames] == [10 * i for i in range(12)]
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert source.stats.as_dict()["dropped"] == 0


@needs_gst
def test_closing_ends_the_child_cleanly_whether_or_not_frames_were_read():
    """Exit status 0: the child reached its end of stream (what a CSI camera needs) instead of
    being killed, though its frames (2.7 MB) are larger than the pipe's buffer."""
    big = "gst:videotestsrc is-live=true ! video/x-raw,width=1280,height=720,framerate=30/1"
    unread = open_source(big)
    child = unread._proc
    unread.close()
    assert child.returncode == 0 and unread._proc is None
    one = open_source(big)
    child = one._proc
    assert next(iter(one)).image.shape == (720, 1280, 3)
    one.close()
    one.join(10)
    assert child.wait(timeout=10) == 0
    # one frame every 20 s: the reader waits on the pipe when the source is closed
    slow = open_source("gst:videotestsrc is-live=true ! video/x-raw,width=32,height=16,framerate=1/20")
    child, frames = _close_after_first_frame(slow)
    assert frames == 1 and child.wait(timeout=10) == 0 and slow._proc is None


@needs_gst
def test_a_pipeline_that_ends_ends_the_source_without_reconnect():
    source = open_source("gst:videotestsrc is-live=true num-buffers=4 ! video/x-raw,width=32,height=16",
                         reconnect=None)
    frames = list(source)
    assert 1 <= len(frames) <= 4 and source.stats.read == 4


@needs_gst
def test_a_local_live_pipeline_that_ends_by_itself_ends_the_run(tmp_path, tiny_onnx):
    """`videotestsrc num-buffers=4` (as `v4l2src num-buffers=100`) reaches its end of stream and
    gst-launch exits 0: the source's end. It was restarted as after an outage, each start
    delivering frames, so its retries never ran out and the run never ended (--max-frames
    bounds that here)."""
    from pipeline.cli import main

    spec = "gst:videotestsrc num-buffers=4 ! video/x-raw,width=64,height=48"
    out = tmp_path / "out"
    rc = main(["run", spec, "--model", str(tiny_onnx), "-o", str(out), "--max-frames", "20",
               "--threads", "1", "--quiet", "--no-video"])
    assert rc == 0
    source = json.loads((out / "report.json").read_text())["sources"][0]
    assert source["live"] and source["state"] == "ended" and source["reconnects"] == 0
    # all 4 read; a live source's newest frame wins, so some may be counted as dropped
    assert source["read"] == 4 and source["delivered"] + source["dropped"] == 4
    assert any("ended by itself (end of stream)" in e for e in source["events"])
    assert len((out / "detections.jsonl").read_text().splitlines()) == source["delivered"]


@needs_gst
def test_a_pipeline_that_ended_by_itself_is_no_fault_of_the_box():
    """/healthz took a live pipeline that reached its own end for a camera that went down: a
    box running `v4l2src num-buffers=N` beside cameras was kept unhealthy for good."""
    from types import SimpleNamespace

    from pipeline.serve.status import RunStatus
    from pipeline.serve.view import LiveFrames

    source = GStreamerSource("videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48")
    source.stream = 0
    with source:
        assert len(list(source)) >= 1
    assert source.ended_by_itself
    source.state = "ended"  # as the pipeline marks a source whose frames ran out
    status = RunStatus(SimpleNamespace(sources=[source], detector=None), LiveFrames())
    assert status.health() == (True, "ok")


@pytest.mark.parametrize("description, network", [
    ("videotestsrc num-buffers=2 ! videoconvert", False),
    ("v4l2src num-buffers=100 ! videoconvert", False),
    ("nvarguscamerasrc sensor-id=0 ! nvvidconv", False),
    ("videotestsrc ! queue name=rtsp", False),
    ("rtspsrc location=rtsp://cam/1 ! rtph264depay ! h264parse ! avdec_h264", True),
    ("udpsrc port=5000 caps=application/x-rtp ! rtph264depay ! avdec_h264", True),
    ("souphttpsrc location=http://cam/live.m3u8 ! hlsdemux ! decodebin", True),
    ("srtclientsrc uri=srt://cam:7001 ! tsdemux ! decodebin", True),
    ("tcpclientsrc host=cam port=5000 ! rawvideoparse width=8 height=4", True),
    ("uridecodebin uri=rtsp://cam/1", True),
    ("nvurisrcbin uri=RTSP://cam/1", True),  # an element not listed: its URL says it
])
def test_only_a_network_pipelines_end_of_stream_is_an_outage(description, network):
    """An end of stream of a pipeline that receives over the network is a server that hung up
    (restarted under the reconnect policy); any other one is the source's end."""
    from pipeline.sources.gstreamer import reads_network

    assert reads_network(description.split()) is network
    source = GStreamerSource(description)
    assert source.live and source.reconnect is not None
    assert source._ended_by_itself() is not network
    assert not parse_source("csi://0")._ended_by_itself()  # asks for no end: a fault, reopened


def _hang_up_after(frames: bytes, connections: int):
    """A TCP server on localhost that sends `frames` on each of `connections` connections,
    hangs up each time, then stops listening: (its port, its thread)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        with server:
            for _ in range(connections):
                conn, _ = server.accept()
                with conn:
                    conn.sendall(frames)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


@needs_gst
def test_a_network_pipeline_is_restarted_after_its_end_of_stream_then_gives_up_in_one_line():
    """tcpclientsrc reaches its end of stream when the server hangs up: an outage, restarted;
    once the server is gone each start fails (gst-launch exits 1) and the source gives up after
    its retries, in one line that names it once."""
    from pipeline.sources.live import Reconnect

    port, server = _hang_up_after(bytes(8 * 4 * 3) * 2, connections=2)
    spec = f"gst:tcpclientsrc host=127.0.0.1 port={port} ! rawvideoparse width=8 height=4 format=bgr"
    source = open_source(spec, reconnect=Reconnect(retries=2, delay=0.01))
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts") as caught:
        list(source)
    server.join(10)
    message = str(caught.value)
    assert source.stats.read == 4 and source.stats.reconnects == 1
    assert "\n" not in message and message.count("tcpclientsrc host=") == 1, message
    assert "Could not open resource for reading" in message


@needs_gst
def test_an_unknown_element_is_gstreamers_own_message():
    with pytest.raises(SourceError, match='no element "nosuchelement"'):
        open_source("gst:nosuchelement ! video/x-raw")
    with pytest.raises(SourceError, match="come with JetPack on a Jetson"):
        open_source("csi://0")  # no nvarguscamerasrc off a Jetson


@needs_gst
def test_dbrt_run_on_a_gstreamer_pipeline(tmp_path, tiny_onnx):
    from pipeline.cli import main

    out = tmp_path / "out"
    rc = main(["run", TEST_SOURCE, "--model", str(tiny_onnx), "-o", str(out), "--max-frames", "5",
               "--threads", "1", "--quiet", "--no-video"])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert 1 <= len(lines) <= 5 and lines[0]["source"] == TEST_SOURCE
    report = json.loads((out / "report.json").read_text())
    described = report["sources"][0]
    assert described["kind"] == "gstreamer" and described["mode"]["width"] == 64


@needs_gst
def test_a_password_in_a_pipeline_stays_out_of_the_results_report_and_console(tmp_path, tiny_onnx,
                                                                              capsys):
    """report.json's `pipeline` was the description as given, password and all (the `name`
    beside it had lost it); a real pipeline whose description holds one runs to the end."""
    from pipeline.cli import main

    spec = TEST_SOURCE + " ! queue name=rtsp://admin:S3cret@cam/1"
    out = tmp_path / "out"
    rc = main(["run", spec, "--model", str(tiny_onnx), "-o", str(out), "--max-frames", "3",
               "--threads", "1", "--no-video"])
    assert rc == 0
    written = (out / "report.json").read_text() + (out / "detections.jsonl").read_text()
    printed = capsys.readouterr()
    assert "S3cret" not in written + printed.out + printed.err
    assert "rtsp://cam/1" in json.loads((out / "report.json").read_text())["sources"][0]["pipeline"]


@needs_gst
def test_a_password_given_as_a_pipeline_property_stays_out_of_its_names_and_errors():
    """`rtspsrc user-id=admin user-pw=...` (GStreamer's own way to give them) was shown whole in
    the source's name: errors, report.json, /api/status and the console."""
    spec = "gst:rtspsrc location=rtsp://127.0.0.1:1/s user-id=admin user-pw=S3cret ! decodebin"
    source = parse_source(spec)
    assert "S3cret" not in json.dumps(source.describe())
    assert "user-pw=***" in source.describe()["name"]
    with pytest.raises(SourceError) as caught:
        parse_source(spec, reconnect=None).open()  # with reconnects it is waited for:
    assert "S3cret" not in str(caught.value) and "user-pw=***" in str(caught.value)
    with pytest.warns(DbrtWarning, match="is not up") as warned:  # its warning says so
        source.open()
    source.close()
    assert "S3cret" not in str(warned[0].message) and "user-pw=***" in str(warned[0].message)
    quoted = parse_source("gst:rtspsrc location=rtsp://cam/s user-pw=\"S3 cret\" proxy-pw='S3cret' ! decodebin")
    assert "S3" not in json.dumps(quoted.describe())


def test_a_password_placeholder_in_a_pipeline_is_refused_not_put_on_a_command_line(monkeypatch):
    """gst-launch-1.0 takes its pipeline as arguments, which every local user sees: filled in
    there, the password a placeholder keeps out of dbrt's command line would be on its child's."""
    monkeypatch.setenv("DBRT_CAM1_PASSWORD", "S3cret")
    with pytest.raises(SourceError, match=r"\{DBRT_CAM1_PASSWORD\} cannot be filled into a "
                                          r"GStreamer pipeline") as caught:
        parse_source("gst:rtspsrc location=rtsp://admin:{DBRT_CAM1_PASSWORD}@cam/1 ! decodebin")
    assert "S3cret" not in str(caught.value)
    assert "(USER@HOST)" in str(caught.value)  # the hint survives the errors' URL redaction
