"""The process that sends one `--restream` stream: it encodes the annotated frames it is given
and FFmpeg's muxer publishes them (pipeline.restream runs one per connection).

Why a process: PyAV holds the interpreter's lock while FFmpeg connects (RTMP's handshake,
RTSP's ANNOUNCE) and while it writes a stream's header and trailer, so a server that accepts
the connection and then says nothing stalled every thread of the run -- for as long as the
server stayed silent with rtmp://, where FFmpeg has no timeout. Here such a server holds up
this process only; the run's thread waits for its answers with a timeout, then kills it.

Parent -> child (stdin): one JSON line of settings (the URL with its credentials, out of the
process list), then per frame HEADER (timestamp, NaN for none; height; width) and the BGR
pixels. Child -> parent (stdout): "ready" once it has started (its imports done: the server not
reached yet), a line per frame, "ok" once it is sent or "error WHY" (then it exits), and
"closed" after the end of its input has been sent as the stream's end.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engine.errors import without_credentials
from engine.lazy import require

from .encoder import VideoEncoder

MUXERS = {"rtsp": "rtsp", "rtmp": "flv", "udp": "mpegts", "srt": "mpegts"}
CONNECT_TIMEOUT_S = 3.0  # FFmpeg's RTSP socket timeout: a silent server's error comes from it
FIRST_ANSWER_S = 15.0  # the process's start (its imports) and the connection: the first frame
SEND_ANSWER_S = 5.0  # a frame sent to a server that stopped reading: the stream is given up
HEADER = struct.Struct("<dII")
PR_SET_PDEATHSIG = 1


class SendError(Exception):
    """The stream failed: FFmpeg's reason, or no answer in time (the process is killed)."""


def muxer_url(url: str, scheme: str) -> str:
    """MPEG-TS over UDP in datagrams of 7 TS packets (1316 bytes), the size receivers expect."""
    if scheme == "udp" and "pkt_size=" not in url:
        return url + ("&" if "?" in url else "?") + "pkt_size=1316"
    return url


class StreamEncoder(VideoEncoder):
    """A VideoEncoder whose container is a network stream's muxer; FFmpeg connects at the first
    packet."""

    def __init__(self, url: str, scheme: str, *args, **kwargs):
        self._url, self._scheme = muxer_url(url, scheme), scheme
        super().__init__(url, *args, **kwargs)

    def _open_container(self, av):
        options = {}
        if self._scheme == "rtsp":  # TCP: no lost packets, one connection through firewalls
            options = {"rtsp_transport": "tcp", "timeout": str(int(CONNECT_TIMEOUT_S * 1e6))}
        return av.open(self._url, mode="w", format=MUXERS[self._scheme], options=options)

    def _is_mp4(self) -> bool:
        return False

    @contextlib.contextmanager
    def _naming_the_file(self):
        yield  # FFmpeg's own error ("Connection refused"): the output notes it, the run goes on


class Sender:
    """The parent's end: one process, one connection to the server."""

    def __init__(self, url: str, scheme: str, fps: float, codec: str, crf: int):
        root = str(Path(__file__).resolve().parent.parent)  # this pipeline package, not another
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.restream_sender"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self._pending = b""
        self._answered = False
        self.answered_at: Optional[float] = None  # time.monotonic() of its latest line
        self._asked_at: Optional[float] = None  # of the frame or end it has yet to answer
        settings = dict(url=url, scheme=scheme, fps=fps, codec=codec, crf=crf)
        try:
            self._write(json.dumps(settings).encode() + b"\n")
        except BaseException:  # a process that ended at once: waited for, its pipes closed
            self.kill()
            raise

    def send(self, image: np.ndarray, timestamp: Optional[float]) -> None:
        """Send one frame; SendError when it was not sent."""
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        stamp = math.nan if timestamp is None else timestamp
        self._asked_at = time.monotonic()
        self._write(HEADER.pack(stamp, height, width))
        self._write(image.data.cast("B"))
        self._expect("ok", SEND_ANSWER_S if self._answered else FIRST_ANSWER_S)
        self._answered, self._asked_at = True, None

    def close(self, timeout: float) -> None:
        """End the stream (its trailer sent) within `timeout`; SendError if it could not."""
        try:
            self._asked_at = time.monotonic()
            self.proc.stdin.close()
            self._expect("closed", timeout)
        finally:
            self.kill()

    def silent_for(self) -> float:
        """Seconds it has left a frame or the stream's end unanswered, since it was asked or
        its latest answer; 0 while it is still starting (its server not reached yet)."""
        if self._asked_at is None or self.answered_at is None:
            return 0.0
        return time.monotonic() - max(self._asked_at, self.answered_at)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()

    def _write(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.proc.stdin.fileno(), view):]
        except OSError:  # it ended: its last line says why
            self._expect("ok", 1.0)
            raise SendError("the sending process ended") from None

    def _expect(self, answer: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        line = self._line(deadline, timeout)
        while line == "ready":  # its start, before the first frame's answer
            line = self._line(deadline, timeout)
        if line.startswith("error "):
            raise SendError(line[len("error "):])
        if line != answer:
            raise SendError(f"unexpected answer {line[:80]!r}")

    def _line(self, deadline: float, timeout: float) -> str:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                raise SendError(f"no answer from the server within {timeout:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:  # its output closed: it is exiting, or was killed
                raise SendError(f"the sending process ended (exit code {self._exit_code()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        self.answered_at = time.monotonic()
        return line.decode(errors="replace")

    def _exit_code(self) -> Optional[int]:
        """Its exit code (negative: the signal that killed it); poll() alone said None, as the
        process had not been waited for yet."""
        try:
            return self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return None


def main() -> int:
    """The child: frames from stdin, encoded and sent, an answer for each on stdout."""
    # Ctrl-C (SIGINT to the terminal's process group) and SIGTERM to each process of the run
    # (systemd's stop) make the run drain, which ends the stream: the run's own end, its
    # death (below) or its kill() end this process
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # Linux: killed with the run (SIGKILL)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    source, answers = sys.stdin.buffer, sys.stdout.buffer
    encoder, settings = None, {}
    try:
        require("av")  # the slow part of its start, on a loaded machine seconds
        _answer(answers, "ready")
        settings = json.loads(source.readline())
        while True:
            head = source.read(HEADER.size)
            if len(head) < HEADER.size:  # the end of the run or of the source
                break
            timestamp, height, width = HEADER.unpack(head)
            pixels = source.read(height * width * 3)
            image = np.frombuffer(pixels, np.uint8).reshape(height, width, 3)
            if encoder is None:
                encoder = StreamEncoder(settings["url"], settings["scheme"], width, height,
                                        settings["fps"], settings["codec"], settings["crf"],
                                        low_latency=True)
            encoder.encode(image, None if math.isnan(timestamp) else timestamp)
            _answer(answers, "ok")
        if encoder is not None:
            encoder.close()
        _answer(answers, "closed")
    except Exception as exc:  # FFmpeg's: refused, reset, a protocol error
        _answer(answers, "error " + _reason(exc, settings.get("scheme")))
        return 1
    return 0


def _reason(exc: Exception, scheme: Optional[str]) -> str:
    """FFmpeg's reason in one line, without credentials. An RTMP server's error status to the
    publish (nginx-rtmp's NetStream.Publish.BadName for a stream already published), which
    FFmpeg words "Operation not permitted", is said as what it most often means."""
    if scheme == "rtmp" and getattr(exc, "errno", None) == errno.EPERM:
        return ("the RTMP server refused the stream: most often another publisher already sends "
                "under this stream key, or the server does not take this key")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return without_credentials(reason).replace("\n", " ")


def _answer(answers, text: str) -> None:
    answers.write(text.encode() + b"\n")
    answers.flush()


if __name__ == "__main__":
    sys.exit(main())
