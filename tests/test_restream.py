"""`dbrt run --restream`: the annotated video reaches a real FFmpeg server on 127.0.0.1 (RTSP
in listen mode, MPEG-TS over UDP); a server nobody runs, or one that goes away, never stops the
run and is counted; the counters reach report.json, /api/status and /metrics; SIGTERM ends the
stream; bad URLs are one line."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.triton.ports import free_port
from pipeline.cli import main

from media import frame_image, index_of, until, write_video
from serve_helpers import dbrt, get, wait_until

av = pytest.importorskip("av")


class Receiver:
    """An FFmpeg server in a thread that takes one stream and decodes its frames; `keep`: it
    hangs up after that many (a server that goes away)."""

    def __init__(self, url: str, options=None, fmt=None, keep: int = 0, listen_s: float = 0.0):
        self.frames = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run,
                                        args=(url, options or {}, fmt, keep, listen_s), daemon=True)
        self._thread.start()

    @classmethod
    def rtsp(cls, port: int, keep: int = 0) -> "Receiver":
        server = cls(f"rtsp://127.0.0.1:{port}/x", {"rtsp_flags": "listen", "listen_timeout": "60"},
                     keep=keep, listen_s=60.0)
        until(lambda: bound(port, socket.SOCK_STREAM), "the RTSP server to listen")
        return server

    @classmethod
    def rtmp(cls, port: int) -> "Receiver":
        server = cls(f"rtmp://127.0.0.1:{port}/live/x", {"listen": "1", "timeout": "60"},
                     listen_s=60.0)
        until(lambda: bound(port, socket.SOCK_STREAM), "the RTMP server to listen")
        return server

    @classmethod
    def udp(cls, port: int) -> "Receiver":
        server = cls(f"udp://127.0.0.1:{port}?timeout=3000000", fmt="mpegts", listen_s=60.0)
        until(lambda: bound(port, socket.SOCK_DGRAM), "the UDP receiver to bind")
        return server

    def _run(self, url, options, fmt, keep, listen_s):
        """listen_s: a receiver whose open failed before any frame listens again until then (a
        UDP receiver once never bound in a full test run, an RTMP one never listened: its one
        open had failed)."""
        until_s = time.monotonic() + listen_s
        try:
            while True:
                try:
                    with av.open(url, options=options, format=fmt) as container:
                        for frame in container.decode(video=0):
                            self.frames.append(frame.to_ndarray(format="bgr24"))
                            if len(self.frames) == keep:
                                break
                    return
                except (av.FFmpegError, OSError):  # the stream's end: the publisher left, UDP's timeout
                    if self.frames or time.monotonic() >= until_s:
                        return
        finally:
            self.ended.set()


def bound(port: int, kind: int) -> bool:
    """Whether a socket of `kind` holds 127.0.0.1:port."""
    probe = socket.socket(socket.AF_INET, kind)
    try:
        probe.bind(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        probe.close()


def decoded(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def run_args(tiny_onnx, out: Path, *extra) -> list:
    return ["run", *extra, "--model", str(tiny_onnx), "--output", str(out), "--threads", "1",
            "--max-side", "128", "--quiet"]


@pytest.fixture(autouse=True)
def quick_back_off(monkeypatch):
    monkeypatch.setattr("pipeline.restream.MIN_DELAY_S", 0.01)
    monkeypatch.setattr("pipeline.restream.MAX_DELAY_S", 0.05)


def test_rtsp_publishes_the_annotated_video_to_a_server(tmp_path, tiny_onnx, capsys):
    clip = write_video(tmp_path / "clip.mp4", frames=12, height=72, width=128)
    port = free_port()
    server = Receiver.rtsp(port)
    out = tmp_path / "out"
    assert main(run_args(tiny_onnx, out, str(clip), "--restream",
                         f"rtsp://viewer:s3cret@127.0.0.1:{port}/x")) == 0
    until(server.ended.is_set, "the end of the stream at the server")
    report_text = (out / "report.json").read_text()
    sent = json.loads(report_text)["outputs"]["restream"]["0"]
    assert sent["url"] == f"rtsp://127.0.0.1:{port}/x" and sent["connected"] is False
    assert sent["frames_sent_total"] + sent["frames_dropped_total"] == 12
    assert len(server.frames) == sent["frames_sent_total"] >= 1
    assert server.frames[-1].shape == (72, 128, 3)
    # the picture is the annotated one: the last frame is never pushed out of the queue
    annotated = decoded(out / "annotated.mp4")[-1]
    assert np.abs(server.frames[-1].astype(int) - annotated).mean() < 6
    printed = capsys.readouterr()
    assert "restream 0 rtsp://127.0.0.1" in printed.out
    assert "s3cret" not in printed.out + printed.err + report_text


def test_udp_sends_each_source_to_its_own_port(tmp_path, tiny_onnx, capsys):
    """Two sources, one URL with {stream}: each stream's MPEG-TS reaches its port."""
    clips = [write_video(tmp_path / f"clip{i}.mp4", frames=10, height=48 + 24 * i, width=64)
             for i in range(2)]
    base = next(b for b in (free_port() // 10 for _ in range(50))
                if 2000 <= b < 6553 and not bound(b * 10, socket.SOCK_DGRAM)
                and not bound(b * 10 + 1, socket.SOCK_DGRAM))
    servers = [Receiver.udp(base * 10 + i) for i in range(2)]
    out = tmp_path / "out"
    assert main(run_args(tiny_onnx, out, *map(str, clips), "--no-video", "--restream",
                         f"udp://127.0.0.1:{base}{{stream}}")) == 0
    sent = json.loads((out / "report.json").read_text())["outputs"]["restream"]
    for i, server in enumerate(servers):
        until(server.ended.is_set, "the UDP receiver's timeout")
        assert sent[str(i)]["url"] == f"udp://127.0.0.1:{base * 10 + i}"
        assert len(server.frames) == sent[str(i)]["frames_sent_total"] >= 1
        assert server.frames[0].shape == (48 + 24 * i, 64, 3)
    assert "restream 1 udp://" in capsys.readouterr().out


def test_a_server_nobody_runs_never_stops_the_run(tmp_path, tiny_onnx, capsys):
    clip = write_video(tmp_path / "clip.mp4", frames=40, height=72, width=128)
    out = tmp_path / "out"
    port = free_port()
    assert main(run_args(tiny_onnx, out, str(clip), "--restream",
                         f"rtsp://127.0.0.1:{port}/x")) == 0
    assert len((out / "detections.jsonl").read_text().splitlines()) == 40
    assert len(decoded(out / "annotated.mp4")) == 40
    counters = json.loads((out / "report.json").read_text())["outputs"]["restream"]["0"]
    assert counters["frames_sent_total"] == 0 and counters["frames_dropped_total"] == 40
    assert counters["connected"] is False  # retried, if the run lasts: the reconnect test
    assert "cannot connect" in counters["events"][0]
    err = capsys.readouterr().err
    assert f"--restream rtsp://127.0.0.1:{port}/x: Connection refused" in err


def test_a_short_stream_key_is_masked_as_a_path_part_only():
    from pipeline.restream import redacted

    url = "rtmp://127.0.0.1/live/2"
    assert redacted(f"cannot connect to {url}: no answer for 2 s", url) == \
        "cannot connect to rtmp://127.0.0.1/live/***: no answer for 2 s"


def test_an_rtmp_stream_key_is_never_shown(tmp_path, tiny_onnx, capsys):
    """rtmp://HOST/APP/KEY: whoever knows a platform's stream key can publish on its channel;
    it was in the summary, report.json, /api/status and /metrics."""
    clip = write_video(tmp_path / "clip.mp4", frames=5, height=72, width=128)
    out = tmp_path / "out"
    url = f"rtmp://127.0.0.1:{free_port()}/live2/s3cret-key"
    assert main(run_args(tiny_onnx, out, str(clip), "--restream", url)) == 0
    counters = json.loads((out / "report.json").read_text())["outputs"]["restream"]["0"]
    assert counters["url"].endswith("/live2/***")
    assert "s3cret" not in json.dumps(counters) and "s3cret" not in "".join(capsys.readouterr())


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung media server)."""

    def __init__(self, port: int = 0):
        self.socket = socket.create_server(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.socket.accept()[0])

    def close(self):
        self.socket.close()
        for connection in self.held:
            connection.close()


def senders() -> list:
    """This process's sending processes still alive."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            if parent == os.getpid() and b"restream_sender" in (stat.parent / "cmdline").read_bytes():
                found.append(stat.parent.name)
    return found


@pytest.mark.parametrize("scheme", ["rtmp", "rtsp"])
def test_a_server_that_never_answers_never_stops_the_run(scheme, tmp_path, tiny_onnx, monkeypatch):
    """FFmpeg connects holding the interpreter's lock (RTMP with no timeout at all): the run
    goes on, and ends, while the silent server holds up the stream's own process."""
    monkeypatch.setattr("pipeline.restream_sender.FIRST_ANSWER_S", 2.0)
    clip = write_video(tmp_path / "clip.mp4", frames=40, height=48, width=64)
    server, out = SilentServer(), tmp_path / "out"
    try:
        assert main(run_args(tiny_onnx, out, str(clip), "--no-video", "--restream",
                             f"{scheme}://127.0.0.1:{server.port}/live/x")) == 0
    finally:
        server.close()
    assert len((out / "detections.jsonl").read_text().splitlines()) == 40
    counters = json.loads((out / "report.json").read_text())["outputs"]["restream"]["0"]
    assert counters["frames_sent_total"] == 0 and counters["frames_dropped_total"] == 40
    assert counters["last_error"] and "cannot connect" in counters["events"][0]
    assert senders() == []


def test_the_close_waits_for_every_stream_at_once(monkeypatch):
    """Three silent servers: the run's end gives every stream the same CLOSE_WAIT_S, not one
    after the other (each waited CLOSE_WAIT_S more, past docker stop's 10 s with three)."""
    from pipeline.detections import Detections
    from pipeline.restream import CLOSE_STALL_S, CLOSE_WAIT_S, RestreamSink
    from pipeline.sources import Frame

    server = SilentServer()
    sink = RestreamSink(f"rtmp://127.0.0.1:{server.port}/live/cam{{stream}}",
                        names={0: "a", 1: "b", 2: "c"}, annotators=[])
    until_each = []  # (stream, the time its first wait for the stream's end lasts until)
    try:
        for stream in range(3):
            sink.write(Frame(frame_image(stream), 0, 0.0, "cam", stream=stream), Detections.empty())
        until(lambda: len(server.held) == 3, "three connections held by the silent server")
        for stream, output in sink.outputs.items():
            monkeypatch.setattr(output, "_thread", FirstWait(output._thread, stream, until_each))
        started = time.monotonic()
        sink.close()
    finally:
        server.close()
    assert sorted(stream for stream, _ in until_each) == [0, 1, 2]
    assert all(end <= started + CLOSE_WAIT_S + 0.5 for _, end in until_each), until_each
    assert senders() == []
    for output in sink.outputs.values():
        counters = output.counters()
        assert counters["frames_sent_total"] == 0 and counters["frames_dropped_total"] == 1
        assert counters["last_error"] == (f"no answer from the server for {CLOSE_STALL_S:g} s "
                                          "at the run's end")


def test_the_close_gives_up_a_silent_server_not_a_stream_still_sending(monkeypatch):
    """The run's end waited for a silent server until CLOSE_WAIT_S (after --drain-limit's
    5 s: past docker stop's 10 s); a shorter wait also cut off streams still sending. A stream
    is given up once its server stops answering; one that goes on answering finishes."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    monkeypatch.setattr("pipeline.restream.CLOSE_WAIT_S", 60.0)  # never reached here
    monkeypatch.setattr("pipeline.restream.CLOSE_STALL_S", 1.5, raising=False)
    base = next(b for b in (free_port() // 10 for _ in range(50)) if 2000 <= b < 6553
                and not bound(b * 10, socket.SOCK_STREAM) and not bound(b * 10 + 1, socket.SOCK_STREAM))
    silent, receiver = SilentServer(base * 10), Receiver.rtmp(base * 10 + 1)
    sink = RestreamSink(f"rtmp://127.0.0.1:{base}{{stream}}/live/x", names={0: "a", 1: "b"},
                        annotators=[], max_queued=64)
    quiet, busy = sink.outputs[0], sink.outputs[1]
    sent_when_given_up = []
    try:
        for stream in (0, 1):
            sink.write(Frame(frame_image(0), 0, 0.0, "cam", stream=stream), Detections.empty())
        until(lambda: silent.held and busy.counters()["frames_sent_total"] == 1,
              "the silent server's connection and the first frame sent to the other")
        monkeypatch.setattr(busy, "_send", slowed(busy._send, 0.2))  # 15 frames: 3 s at least
        give_up = quiet.give_up
        monkeypatch.setattr(quiet, "give_up", lambda *why: (
            sent_when_given_up.append(busy.counters()["frames_sent_total"]), give_up(*why)))
        for index in range(1, 16):
            sink.write(Frame(frame_image(index), index, index / 25, "cam", stream=1),
                       Detections.empty())
        sink.close()
    finally:
        silent.close()
    assert sent_when_given_up and sent_when_given_up[0] < 16  # while the other was sending
    assert quiet.counters()["last_error"] == "no answer from the server for 1.5 s at the run's end"
    counters = busy.counters()
    assert counters["frames_sent_total"] == 16 and counters["frames_dropped_total"] == 0
    assert counters["last_error"] is None  # its end sent too
    until(receiver.ended.is_set, "the stream's end at the server")
    assert [index_of(image) for image in receiver.frames] == list(range(16))
    assert senders() == []


def test_a_stopped_run_waits_for_a_slow_stream_a_second_at_most(monkeypatch):
    """After a stop's drain (up to --drain-limit's 5 s) a stream still sending to a server
    that answers, but slowly, had CLOSE_WAIT_S more: about 11 s, past docker stop's 10 s."""
    from pipeline.detections import Detections
    from pipeline.restream import STOPPED_WAIT_S, RestreamSink
    from pipeline.sources import Frame

    port = free_port()
    Receiver.rtmp(port)
    sink = RestreamSink(f"rtmp://127.0.0.1:{port}/live/x", annotators=[], max_queued=64)
    sink.write(Frame(frame_image(0), 0, 0.0, "cam"), Detections.empty())
    output = sink.outputs[0]
    until(lambda: output.counters()["frames_sent_total"] == 1, "the first frame sent")
    monkeypatch.setattr(output, "_send", slowed(output._send, 0.5))  # 30 frames: 15 s
    for index in range(1, 31):
        sink.write(Frame(frame_image(index), index, index / 25, "cam"), Detections.empty())
    sink.stopping()
    started = time.monotonic()
    sink.close()
    took = time.monotonic() - started
    assert took < STOPPED_WAIT_S + 2.0, took
    counters = output.counters()
    assert counters["frames_sent_total"] < 31
    assert counters["last_error"] == f"still sending {STOPPED_WAIT_S:g} s after the run's end"
    assert senders() == []


def test_a_server_silent_since_before_the_close_is_given_up_at_once(monkeypatch):
    """A server that had left a frame unanswered for CLOSE_STALL_S already when the run's end
    came (during the drain) was given CLOSE_STALL_S more: its silence is counted from the frame."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    monkeypatch.setattr("pipeline.restream.CLOSE_STALL_S", 1.0, raising=False)
    server = SilentServer()
    sink = RestreamSink(f"rtmp://127.0.0.1:{server.port}/live/x", annotators=[])
    try:
        sink.write(Frame(frame_image(0), 0, 0.0, "cam"), Detections.empty())
        output = sink.outputs[0]
        until(lambda: server.held and output._sender.answered_at, "the process to connect")
        time.sleep(1.0)  # CLOSE_STALL_S of silence before the close
        waits = []
        monkeypatch.setattr(output, "_thread", FirstWait(output._thread, 0, waits))
        give_up = output.give_up
        monkeypatch.setattr(output, "give_up", lambda *why: (waits.append(("given up", 0)),
                                                             give_up(*why)))
        sink.close()
    finally:
        server.close()
    assert waits[0][0] == "given up", waits  # before the close waited for it
    assert output.counters()["last_error"] == "no answer from the server for 1 s at the run's end"


def test_a_stream_whose_end_is_not_answered_is_given_up(monkeypatch):
    """A sending process that does not answer the stream's end (FFmpeg writing the trailer to
    a server that stopped reading) was out of give_up()'s reach: the close waited for it until
    CLOSE_WAIT_S, and the process for its own CLOSE_WAIT_S after that."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    monkeypatch.setattr("pipeline.restream.CLOSE_WAIT_S", 20.0)  # never reached here
    monkeypatch.setattr("pipeline.restream.CLOSE_STALL_S", 1.0, raising=False)
    sink = RestreamSink(f"udp://127.0.0.1:{free_port()}", annotators=[])
    sink.write(Frame(frame_image(0), 0, 0.0, "clip"), Detections.empty())
    until(lambda: sink.outputs[0].counters()["frames_sent_total"] == 1, "the frame sent")
    sink.outputs[0]._sender.proc.send_signal(signal.SIGSTOP)  # it answers nothing more
    sink.close()
    assert sink.outputs[0].counters()["last_error"] == ("no answer from the server for 1 s at "
                                                        "the run's end")
    assert senders() == []


def slowed(send, delay_s: float):
    """A stream's _send that first waits `delay_s` (a loaded machine's slow stream)."""
    def send_later(*args):
        time.sleep(delay_s)
        send(*args)
    return send_later


def test_a_sending_process_still_starting_is_not_given_up(monkeypatch):
    """A process whose start takes seconds (its imports on a loaded machine) has not reached
    its server yet: the close waits for it, and its frame and the stream's end are sent."""
    import subprocess

    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    monkeypatch.setattr("pipeline.restream.CLOSE_WAIT_S", 60.0)  # never reached here
    monkeypatch.setattr("pipeline.restream.CLOSE_STALL_S", 1.0, raising=False)
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kwargs: popen(
        ["sh", "-c", 'sleep 3; exec "$@"', "sh", *args], **kwargs))
    sink = RestreamSink(f"udp://127.0.0.1:{free_port()}", annotators=[])
    sink.write(Frame(frame_image(0), 0, 0.0, "clip"), Detections.empty())
    sink.close()
    counters = sink.outputs[0].counters()
    assert counters["frames_sent_total"] == 1 and counters["last_error"] is None, counters


def test_a_sender_whose_settings_cannot_be_written_leaves_no_process(monkeypatch):
    """Its process was left a zombie, with two open pipes."""
    import subprocess

    from pipeline.restream_sender import Sender, SendError

    made = []
    popen = subprocess.Popen

    def recorded(*args, **kwargs):
        made.append(popen(*args, **kwargs))
        return made[-1]

    def broken(self, data):
        raise SendError("the sending process ended")

    monkeypatch.setattr(subprocess, "Popen", recorded)
    monkeypatch.setattr(Sender, "_write", broken)
    with pytest.raises(SendError):
        Sender("udp://127.0.0.1:9/x", "udp", 25.0, "libx264", 23)
    assert made[0].returncode is not None and made[0].stdin.closed and made[0].stdout.closed


def test_a_sending_process_that_died_says_how():
    """Its error named exit code None: the process had not been waited for yet."""
    from pipeline.restream_sender import Sender, SendError

    server = SilentServer()
    try:
        sender = Sender(f"rtmp://127.0.0.1:{server.port}/live/x", "rtmp", 25.0, "libx264", 23)
        sender.proc.kill()
        with pytest.raises(SendError, match=r"the sending process ended \(exit code -9\)"):
            sender.send(frame_image(0), 0.0)
        sender.kill()
    finally:
        server.close()


def test_sigterm_to_every_process_of_the_run_leaves_the_stream_to_the_run():
    """systemd stops a service with SIGTERM to each of its processes: it killed the sending
    process, cutting the stream during the run's drain, which then connected anew. As with
    Ctrl-C's SIGINT, the run (draining on SIGTERM) ends the stream."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    sink = RestreamSink(f"udp://127.0.0.1:{free_port()}", annotators=[], max_queued=64)
    try:
        sink.write(Frame(frame_image(0), 0, 0.0, "clip"), Detections.empty())
        until(lambda: sink.outputs[0].counters()["frames_sent_total"] == 1, "the first frame sent")
        sink.outputs[0]._sender.proc.send_signal(signal.SIGTERM)
        for index in range(1, 6):
            sink.write(Frame(frame_image(index), index, index / 25, "clip"), Detections.empty())
    finally:
        sink.close()
    counters = sink.outputs[0].counters()
    assert counters["frames_sent_total"] == 6 and counters["reconnects_total"] == 0, counters


class FirstWait:
    """A stream's thread whose first join() notes until when it waits."""

    def __init__(self, thread, stream, noted):
        self._thread, self._stream, self._noted = thread, stream, noted

    def join(self, timeout=None):
        if not any(stream == self._stream for stream, _ in self._noted):
            self._noted.append((self._stream, time.monotonic() + timeout))
        self._thread.join(timeout)

    def is_alive(self):
        return self._thread.is_alive()


def test_a_server_that_goes_away_is_reconnected():
    """The library's sink, fed by hand: the first server hangs up after 5 frames; frames
    meanwhile are dropped; a server on the port again gets the stream, at the frames' picture."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    port = free_port()
    first = Receiver.rtsp(port, keep=5)
    sink = RestreamSink(f"rtsp://127.0.0.1:{port}/x", annotators=[])
    index = 0

    def feed():
        nonlocal index
        sink.write(Frame(frame_image(index), index, index / 25, "cam"), Detections.empty())
        index += 1
        time.sleep(0.01)
        return True

    try:
        until(lambda: feed() and first.ended.is_set(), "the first server to hang up")
        until(lambda: feed() and sink.outputs[0].last_error, "the restream to notice")
        second = Receiver.rtsp(port)
        until(lambda: feed() and len(second.frames) >= 3, "frames at the second server")
        assert len(senders()) == 1  # the failed connections' processes are gone
    finally:
        sink.close()
    until(second.ended.is_set, "the stream's end")
    assert senders() == []
    counters = sink.outputs[0].counters()
    assert counters["reconnects_total"] >= 1 and counters["frames_dropped_total"] >= 1
    assert counters["frames_sent_total"] + counters["frames_dropped_total"] == index
    assert any("lost" in event for event in sink.outputs[0].events)
    assert index_of(second.frames[-1]) == (index - 1) % 16  # the last frame, sent at the close


def test_rtmp_publishes_every_frame_in_order():
    """The library's sink to an RTMP server (FLV): a queue that is never full sends each frame."""
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    port = free_port()
    server = Receiver.rtmp(port)
    sink = RestreamSink(f"rtmp://127.0.0.1:{port}/live/x", annotators=[], max_queued=64)
    for index in range(20):
        sink.write(Frame(frame_image(index), index, index / 25, "clip"), Detections.empty())
    sink.close()
    until(server.ended.is_set, "the stream's end at the server")
    counters = sink.outputs[0].counters()
    assert counters["frames_sent_total"] == 20 and counters["frames_dropped_total"] == 0
    assert [index_of(image) for image in server.frames] == [i % 16 for i in range(20)]


@pytest.mark.slow
def test_counters_are_served_and_sigterm_ends_the_stream(tmp_path, tiny_onnx):
    clip = write_video(tmp_path / "long.mp4", frames=3000, height=48, width=64)
    port, serve = free_port(), free_port()
    server = Receiver.rtsp(port)
    out = tmp_path / "out"
    proc = dbrt(*run_args(tiny_onnx, out, str(clip), "--no-video", "--serve", str(serve),
                          "--restream", f"rtsp://127.0.0.1:{port}/x"))
    try:
        wait_until(lambda: len(server.frames) >= 3, proc, "frames at the server")
        status = json.loads(get(serve, "/api/status")[1])["outputs"]["restream"]
        assert status["frames_sent_total"] >= 1 and status["connected"] is True
        metrics = get(serve, "/metrics")[1].decode()
        assert "dbrt_restream_frames_sent_total" in metrics
        assert "dbrt_restream_reconnects_total 0.0" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    until(server.ended.is_set, "the server to see the stream end")
    counters = json.loads((out / "report.json").read_text())["outputs"]["restream"]["0"]
    assert counters["frames_sent_total"] == len(server.frames)


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1/x", "the scheme must be rtsp://, rtmp://, srt:// or udp://"),
    ("udp://127.0.0.1", "udp:// needs a port"),
    ("rtsp://127.0.0.1:8554", "needs the stream's path on the server"),
    ("rtsp://me:s3cret@127.0.0.1:99999/x", "bad port"),
    ("srt://127.0.0.1?passphrase=s3cret", "srt:// needs a port"),  # SRT's encryption key
    ("rtmp://127.0.0.1:99999/live2/s3cret", "bad port"),  # a platform's stream key
])
def test_a_bad_url_is_one_line_naming_the_flag(url, message, tmp_path, capsys):
    assert main(["run", "--restream", url, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--restream" in err.splitlines()[-1] and message in err.splitlines()[-1], err
    assert "s3cret" not in err


def test_srt_without_libsrt_is_refused_in_one_line(tmp_path, capsys):
    from pipeline.restream import srt_available

    if srt_available():
        pytest.skip("this FFmpeg has libsrt")
    assert main(["run", "--restream", "srt://127.0.0.1:9000", "--output", str(tmp_path)]) == 2
    assert "no SRT support (libsrt)" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("url, message", [
    ("rtsp://127.0.0.1:8554/x", "2 streams need a URL each: put {stream}"),
    ("rtsp://127.0.0.1:8554/{name}", "streams 0 and 1 would both be sent to "
                                     "rtsp://127.0.0.1:8554/clip; use {stream}"),
    ("rtsp://me:{DBRT_RESTREAM_TEST_SECRET}@127.0.0.1:8554/{stream}",
     "the environment variable DBRT_RESTREAM_TEST_SECRET is not set"),
])
def test_several_sources_need_a_url_each(url, message, tmp_path, tiny_onnx, capsys, monkeypatch):
    """Refused once the sources are known, before the model loads."""
    monkeypatch.delenv("DBRT_RESTREAM_TEST_SECRET", raising=False)
    monkeypatch.setattr("pipeline.commands._model.build_detector", model_must_not_load)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    clips = [write_video(tmp_path / name / "clip.mp4", frames=2) for name in ("a", "b")]
    assert main(run_args(tiny_onnx, tmp_path / "out", *map(str, clips), "--restream", url)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--restream" in err and message in err, err


def test_images_have_no_video_to_restream(tmp_path, tiny_onnx, capsys, monkeypatch):
    monkeypatch.setattr("pipeline.commands._model.build_detector", model_must_not_load)
    image = tmp_path / "photo.png"
    assert cv2.imwrite(str(image), frame_image(0))
    assert main(run_args(tiny_onnx, tmp_path / "out", str(image), "--restream",
                         "udp://127.0.0.1:5000")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--restream sends the annotated video of videos" in err[0]


def model_must_not_load(args):
    raise AssertionError("the model loaded before --restream was checked")


def test_a_url_without_a_placeholder_takes_one_stream_from_python():
    """RestreamSink without names (the Python API) sent every stream that came to the one URL,
    each over the other; the second stream is now one clear error."""
    from engine.errors import DbrtError
    from pipeline.detections import Detections
    from pipeline.restream import RestreamSink
    from pipeline.sources import Frame

    sink = RestreamSink(f"udp://127.0.0.1:{free_port()}")
    picture = np.zeros((48, 64, 3), np.uint8)
    try:
        sink.write(Frame(picture, 0, 0.0, "a", 0), Detections.empty())
        with pytest.raises(DbrtError, match="streams 0 and 1 would both be sent there"):
            sink.write(Frame(picture, 0, 0.0, "b", 1), Detections.empty())
    finally:
        sink.close()
    assert list(sink.outputs) == [0]
