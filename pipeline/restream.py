"""`--restream`: the annotated video as a live network stream, one per source, for a video
management system, a monitor or a media server (what DeepStream's "RTSP out" sink gives).

    sink = RestreamSink("rtsp://mediamtx:8554/dbrt")          # one source
    sink = RestreamSink("rtsp://mediamtx:8554/cam{stream}", names={0: "door", 1: "gate"})
    pipe.sinks.append(sink)

FFmpeg's muxers publish it (PyAV): rtsp:// to an RTSP server such as MediaMTX (ANNOUNCE /
RECORD over TCP), rtmp:// as FLV, udp:// and srt:// (where this FFmpeg has libsrt) as MPEG-TS.
The video is H.264 / HEVC with the live settings of the annotated video (x264's zerolatency, no
B-frames, a keyframe every 2 s, so a viewer that joins sees a picture within 2 s).

The run never waits for it: each stream's frames go to its own thread through a queue of
`max_queued` frames, where the newest frame wins (those pushed out are counted as dropped).
That thread annotates them and hands them to a process of its own that encodes and sends
(pipeline.restream_sender: FFmpeg connects holding the interpreter's lock), waiting for its
answer with a timeout. A server that is down at the start, goes away or goes silent is tried
again with back-off (`min_delay` doubling up to `max_delay` seconds); frames meanwhile are
dropped and counted. Frames of a live source are timed by their arrival; a file's by its
own timestamps, sent as fast as the run detects, not paced to real time: a file restreamed
runs ahead of the clock (a player of the stream may then skip or speed up; a recorder keeps
the file's timing).
"""
from __future__ import annotations

import collections
import functools
import re
import threading
import time
from typing import Dict, Iterable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from engine.errors import DbrtError, without_credentials
from engine.lazy import require

from .detections import Detections
from .draw import annotate
from .restream_sender import MUXERS, Sender, SendError
from .sinks import Sink
from .sources import Frame

DEFAULT_PORTS = {"rtsp": 554, "rtmp": 1935}
PLACEHOLDERS = ("{stream}", "{name}")
MIN_DELAY_S, MAX_DELAY_S = 0.5, 8.0  # the reconnect back-off: doubling from min to max
CLOSE_WAIT_S = 5.0  # how long the run's end waits for the streams to finish sending, at most
STOPPED_WAIT_S = 1.0  # the same for a stopped run: a drain has gone before, docker stop waits 10 s
CLOSE_STALL_S = 2.0  # at the run's end, a stream whose server has not answered this long: given up
CLOSE_POLL_S = 0.05
EVENTS_KEPT = 10


def check_url(text: str) -> str:
    """The URL's scheme; ValueError says what is wrong (the scheme, no host, no port)."""
    try:  # the placeholders stand for the parts a stream fills in
        parts = urlsplit(text.replace("{stream}", "0").replace("{name}", "x"))
        port = parts.port
    except ValueError as exc:  # a port that is not a number or out of range
        raise ValueError(f"bad port ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in MUXERS:
        raise ValueError("the scheme must be rtsp://, rtmp://, srt:// or udp://")
    if not parts.hostname:
        raise ValueError(f"no host, e.g. {scheme}://HOST:PORT" + ("/PATH" * (scheme in DEFAULT_PORTS)))
    if port is None and scheme not in DEFAULT_PORTS:
        raise ValueError(f"{scheme}:// needs a port, e.g. {scheme}://{parts.hostname}:5000")
    if scheme in DEFAULT_PORTS and not parts.path.strip("/"):
        raise ValueError(f"{scheme}:// needs the stream's path on the server, e.g. "
                         f"{scheme}://{parts.hostname}:{port or DEFAULT_PORTS[scheme]}/dbrt")
    if scheme == "srt" and not srt_available():
        raise ValueError(f"this FFmpeg (PyAV {require('av').__version__}) has no SRT support "
                         "(libsrt); use rtsp://, rtmp:// or udp://")
    return scheme


@functools.lru_cache(maxsize=None)
def srt_available() -> bool:
    """Whether FFmpeg has the srt:// protocol: an invalid mode is refused by libsrt before any
    network use; without libsrt the protocol is not found."""
    av = require("av")
    try:
        av.open("srt://127.0.0.1:9?mode=none", mode="w", format="mpegts").start_encoding()
    except av.error.ProtocolNotFoundError:
        return False
    except (av.FFmpegError, OSError, ValueError):
        return True
    return True


def redacted(text: str, url: str) -> str:
    """`text` as it may be shown: no credentials, and no RTMP stream key (the last part of an
    rtmp:// path, which lets whoever knows it publish on a platform's channel)."""
    text = without_credentials(text)
    parts = urlsplit(url)
    segments = [p for p in parts.path.split("/") if p]
    if parts.scheme.lower() in ("rtmp", "rtmps") and len(segments) >= 2 \
            and segments[-1] not in PLACEHOLDERS:  # as a path's part only: a key "2" is no "2 s"
        text = re.sub(r"(?<=/)" + re.escape(segments[-1]) + r"(?![\w.~%-])", "***", text)
    return text


def stream_url(template: str, stream: int, name: str) -> str:
    return template.replace("{stream}", str(stream)).replace("{name}", name)


def stream_urls(template: str, names: Mapping[int, str]) -> Dict[int, str]:
    """stream -> its URL (placeholders for the environment's passwords left in); DbrtError
    when streams would share one (no {stream} or {name} in it, or two names alike) or a
    {DBRT_NAME} variable is not set. Checked before the model loads."""
    shown = redacted(template, template)
    if len(names) > 1 and not any(p in template for p in PLACEHOLDERS):
        raise DbrtError(f"--restream {shown}: {len(names)} streams need a URL each: put "
                        "{stream} (the stream's index) or {name} in it, e.g. "
                        "rtsp://HOST:8554/cam{stream}")
    urls: Dict[int, str] = {}
    for stream, name in names.items():
        url = stream_url(template, stream, name)
        other = next((s for s, u in urls.items() if u == url), None)
        if other is not None:
            raise DbrtError(f"--restream {shown}: streams {other} and {stream} would both be "
                            f"sent to {redacted(url, url)}; use {{stream}}")
        opened_url(url)
        urls[stream] = url
    return urls


def opened_url(url: str) -> str:
    """The URL with its {DBRT_NAME} placeholders filled from the environment (a password out
    of the process list)."""
    from .sources.passwords import address

    try:
        return address(url)
    except DbrtError as exc:
        raise DbrtError(f"--restream: {exc}") from None


class RestreamOutput:
    """One stream's restream: a thread that takes the newest frames from a bounded queue,
    annotates them, has a Sender (a process per connection) encode and send them, and
    reconnects with back-off."""

    def __init__(self, url: str, shown: str, codec: str = "libx264", crf: int = 23,
                 fps: float = 25.0, live: bool = False, annotators: Optional[Sequence] = None,
                 max_queued: int = 4, min_delay: Optional[float] = None,
                 max_delay: Optional[float] = None):
        self.url, self.shown = url, shown  # shown: without credentials (messages, counters)
        self.scheme = urlsplit(url).scheme.lower()
        self.codec, self.crf, self.fps, self.live = codec, crf, fps, live
        self.annotators, self.max_queued = annotators, max_queued
        self.min_delay = MIN_DELAY_S if min_delay is None else min_delay
        self.max_delay = MAX_DELAY_S if max_delay is None else max_delay
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Condition()
        self._finishing = False
        self._given_up: Optional[str] = None  # why the run's end gave up on it
        self._sender: Optional[Sender] = None
        self._sent = self._dropped = self._attempts = 0
        self._retry_at, self._delay = 0.0, self.min_delay
        self.connected = False
        self.last_error: Optional[str] = None
        self.events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)
        self._thread = threading.Thread(target=self._run, name="dbrt-restream", daemon=True)
        self._thread.start()

    # -- the pipeline's sink thread -----------------------------------------------------------
    def offer(self, frame: Frame, detections: Detections) -> None:
        """Queue a frame without waiting: a full queue loses its oldest frame."""
        with self._wake:
            if self._finishing:
                self._dropped += 1
                return
            if len(self._queue) >= self.max_queued:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append((frame, detections))
            self._wake.notify()

    def finish(self) -> None:
        """Send what is queued, then end the stream (the connection closes); does not wait."""
        with self._wake:
            self._finishing = True
            self._wake.notify()

    def sending(self) -> bool:
        """Whether it is still sending (its thread alive, not given up)."""
        return self._thread.is_alive() and not self._given_up

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stalled(self) -> bool:
        """Whether its server stopped answering: its sending process has left a frame or the
        stream's end unanswered for CLOSE_STALL_S (one still starting, seconds on a loaded
        machine, has not reached the server yet)."""
        sender = self._sender
        return sender is not None and sender.silent_for() >= CLOSE_STALL_S

    def give_up(self, why: str) -> None:
        """A server that holds up the last frames or the stream's end: its answer is not
        waited for (the process is killed), what is queued is dropped, nothing is retried."""
        with self._wake:
            self._given_up = why
            self._dropped += len(self._queue)
            self._queue.clear()
            sender = self._sender
        if sender is not None:
            sender.proc.kill()

    def counters(self) -> dict:
        """url (without credentials), frames_sent_total, frames_dropped_total (queue full, not
        connected, or a send that failed), reconnects_total (connection attempts after the
        first), connected, last_error (why the last attempt or send failed, None once
        connected)."""
        with self._wake:
            dropped = self._dropped
        return dict(url=self.shown, frames_sent_total=self._sent, frames_dropped_total=dropped,
                    reconnects_total=max(0, self._attempts - 1), connected=self.connected,
                    last_error=self.last_error)

    # -- its own thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                item = self._take()
                if item is None:
                    break
                self._send(*item)
        finally:
            self._close_sender(flush=True)

    def _take(self):
        with self._wake:
            while not self._queue and not self._finishing:
                self._wake.wait()
            return self._queue.popleft() if self._queue else None

    def _drop(self) -> None:
        with self._wake:
            self._dropped += 1

    def _send(self, frame: Frame, detections: Detections) -> None:
        if self._sender is None and not self._connect():
            self._drop()
            return
        image = annotate(frame.image, detections, self.annotators)
        try:  # a live source's frames at their arrival; a file's at its timestamps
            self._sender.send(image, frame.t_read if self.live else frame.timestamp)
        except SendError as exc:  # the server refused the stream, went away or went silent
            self._drop()
            self._failed(self._reason(exc))
            return
        self._sent += 1
        if not self.connected:
            self.connected, self._delay, self.last_error = True, self.min_delay, None
            self._note(f"connected to {self.shown}" + (
                f" (attempt {self._attempts})" if self._attempts > 1 else ""))

    def _connect(self) -> bool:
        """A new connection once the back-off delay has passed (False before it, or failing)."""
        if time.monotonic() < self._retry_at or self._given_up:
            return False
        self._attempts += 1
        try:
            sender = Sender(self.url, self.scheme, self.fps, self.codec, self.crf)
        except (OSError, SendError) as exc:  # no process (out of memory, of processes)
            self._failed(getattr(exc, "strerror", None) or str(exc))
            return False
        with self._wake:  # give_up() kills the sender it finds, or none is kept
            if not self._given_up:
                self._sender = sender
        if self._sender is None:
            sender.kill()
        return self._sender is not None

    def _failed(self, error: str) -> None:
        error = redacted(error, self.url)
        if self.connected:
            self._note(f"connection to {self.shown} lost: {error}")
        elif error != self.last_error:
            self._note(f"cannot connect to {self.shown}: {error}")
        self.connected, self.last_error = False, error
        self._close_sender(flush=False)
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self.max_delay, self._delay * 2)

    def _close_sender(self, flush: bool) -> None:
        sender = self._sender  # kept there while it ends, where give_up() finds it
        if sender is None:
            return
        try:  # flush: the end of the stream, delayed frames and the muxer's trailer sent
            if flush and self.connected:
                sender.close(CLOSE_WAIT_S)
            else:
                sender.kill()
        except SendError as exc:  # a server gone at the end: nothing more to send to it
            self.last_error = redacted(self._reason(exc), self.url)
        finally:
            self._sender = None
        self.connected = False

    def _reason(self, exc: SendError) -> str:
        """Why a send or the stream's end failed: the run's end giving up on it kills its
        process, whose own error would only say so ('exit code -9')."""
        return self._given_up or str(exc)

    def _note(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")


class RestreamSink(Sink):
    """The annotated video of each stream, published live to `url`.

    url:      rtsp://, rtmp://, srt:// or udp:// (see the module docstring); with several
              streams it names each one's own: {stream} (its index) or {name} (names[stream])
    names:    the streams to restream: stream -> name (the frames of others are not sent);
              default: every stream that comes, each to its own URL ({stream} or {name}
              in `url`; without one, a second stream is a DbrtError)
    codec, crf: the encoder (VideoSink's); fps_by_stream: the rate of frames without timestamp
    live_streams: streams timed by the frames' arrival (cameras, network streams)
    max_queued: frames waiting per stream at most; more push out the oldest (dropped)
    min_delay, max_delay: the reconnect back-off (default MIN_DELAY_S, MAX_DELAY_S)
    """

    def __init__(self, url: str, names: Optional[Mapping[int, str]] = None,
                 codec: str = "libx264", crf: int = 23,
                 fps_by_stream: Optional[Mapping[int, float]] = None,
                 live_streams: Iterable[int] = (), annotators: Optional[Sequence] = None,
                 max_queued: int = 4, min_delay: Optional[float] = None,
                 max_delay: Optional[float] = None):
        try:
            check_url(url)
        except ValueError as exc:
            raise DbrtError(f"--restream {redacted(url, url)}: {exc}") from None
        self.template = url
        self.names = None if names is None else dict(names)
        self.settings = dict(codec=codec, crf=crf, annotators=annotators, max_queued=max_queued,
                             min_delay=min_delay, max_delay=max_delay)
        self.fps_by_stream, self.live_streams = dict(fps_by_stream or {}), set(live_streams)
        self.outputs: Dict[int, RestreamOutput] = {}
        self._close_wait = CLOSE_WAIT_S  # stopping() shortens it
        if self.names is not None:
            for stream, url in stream_urls(url, self.names).items():
                self._add(stream, url)

    def _add(self, stream: int, url: str) -> RestreamOutput:
        self.outputs[stream] = RestreamOutput(
            opened_url(url), redacted(url, url), fps=self.fps_by_stream.get(stream) or 25.0,
            live=stream in self.live_streams, **self.settings)
        return self.outputs[stream]

    def write(self, frame: Frame, detections: Detections) -> None:
        output = self.outputs.get(frame.stream)
        if output is None:
            if self.names is not None:
                return  # not one of the streams to restream
            if self.outputs and not any(p in self.template for p in PLACEHOLDERS):
                other = next(iter(self.outputs))
                raise DbrtError(f"--restream {redacted(self.template, self.template)}: streams "
                                f"{other} and {frame.stream} would both be sent there; put "
                                "{stream} or {name} in the URL")
            output = self._add(frame.stream, stream_url(self.template, frame.stream,
                                                        str(frame.stream)))
        output.offer(frame, detections)

    def end_stream(self, stream: int) -> None:
        """The source ended while others go on: its stream ends once its frames are sent."""
        output = self.outputs.get(stream)
        if output is not None:
            output.finish()

    def report(self) -> dict:
        """stream -> its counters and the latest events (report.json's outputs.restream)."""
        return {str(stream): dict(output.counters(), events=list(output.events))
                for stream, output in sorted(self.outputs.items())}

    def stopping(self) -> None:
        self._close_wait = STOPPED_WAIT_S

    def close(self) -> None:
        """End every stream: one whose server stops answering (CLOSE_STALL_S) is given up, one
        that goes on sending has until CLOSE_WAIT_S after the close's start (STOPPED_WAIT_S
        for a stopped run, whose drain sent what it could), as all have."""
        for output in self.outputs.values():
            output.finish()
        began, wait = time.monotonic(), self._close_wait
        sending = list(self.outputs.values())
        while sending:
            for output in sending:
                if time.monotonic() - began >= wait:
                    output.give_up(f"still sending {wait:g} s after the run's end")
                elif output.stalled():
                    output.give_up(f"no answer from the server for {CLOSE_STALL_S:g} s "
                                   "at the run's end")
            sending = [output for output in sending if output.sending()]
            for output in sending:
                output.wait(CLOSE_POLL_S / len(sending))
        for output in self.outputs.values():  # given up: they end at once (their process killed)
            output.wait(CLOSE_WAIT_S)
