"""GStreamer pipelines as a source: Jetson CSI cameras (`csi://0`) and any pipeline
(`gst:videotestsrc ! video/x-raw,width=640,height=480`).

The pipeline runs in GStreamer's own `gst-launch-1.0`, a child process, which ends it in
`videoconvert ! video/x-raw,format=BGR ! fdsink` on a pipe: frames arrive as raw BGR bytes, and
their size and rate are read from the caps it reports. This needs neither Python GStreamer
bindings nor an OpenCV built with GStreamer (pip's is not), only GStreamer's command-line tools,
which JetPack installs (Debian / Ubuntu: gstreamer1.0-tools).
"""
from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from typing import Optional

import numpy as np

from engine.errors import SourceError

from .base import without_credentials
from .failures import gst_failure_passes, passing
from .live import LiveSource, Reconnect
from .passwords import placeholders

GST_LAUNCH = "gst-launch-1.0"
SINK = "dbrt_sink"
CAPS_TIMEOUT = 15.0  # seconds for the pipeline to negotiate (a CSI camera takes a few)
STOP_TIMEOUT = 3.0  # seconds for the child to reach its end of stream before it is killed
# an end of stream forced in a live pipeline's first moments can hang gst-launch (2 of 40
# closes right after opening; none of 40 after 0.3 s): SIGINT waits that long
EARLIEST_INTERRUPT = 0.3
# gst-launch handles SIGINT (as end of stream) only once its pipeline runs; ignored until then,
# an early one cannot kill it outright (exec keeps "ignored", its handler replaces it)
_IGNORE_SIGINT = ["/bin/sh", "-c", 'trap "" INT; exec "$0" "$@"']
_CAPS = re.compile(SINK + r"\.GstPad:sink: caps = video/x-raw, (.*)$")
_FIELD = re.compile(r"([a-z-]+)=\((?:int|string|fraction)\)([^,;]+)")


def csi_pipeline(sensor: int = 0, width: int = 1920, height: int = 1080, fps: float = 30.0,
                 flip: int = 0) -> str:
    """A Jetson CSI camera through libargus (nvarguscamerasrc), converted out of NVMM memory."""
    rate = f"{int(round(fps))}/1"
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},"
            f"height={height},framerate={rate} ! nvvidconv flip-method={flip} ! "
            "video/x-raw,format=BGRx")


_FILE_ELEMENTS = ("filesrc", "multifilesrc", "splitmuxsrc")


def elements(words) -> list:
    """A pipeline's element names, in order: its words that are not links (!), properties
    (key=value), caps (type/subtype,...) or pad references (name. / name.pad)."""
    return [w for w in words if w != "!" and not any(c in w for c in "=/.")]


def reads_file(words) -> bool:
    """Whether a pipeline reads a file (not live: every frame counts): a file source element
    anywhere, or a uri=file: location."""
    return any(e in _FILE_ELEMENTS for e in elements(words)) or any(
        w.startswith("uri=file:") for w in words)


# elements that receive over the network: their end of stream is a server that hung up or a
# stream that paused (rtspsrc on a BYE, souphttpsrc at the end of a response, hlsdemux at a
# playlist's end), not the end of what the user meant to read
_NETWORK_ELEMENTS = ("rtspsrc", "souphttpsrc", "curlhttpsrc", "udpsrc", "tcpclientsrc",
                     "tcpserversrc", "srtsrc", "srtclientsrc", "srtserversrc", "rtmpsrc",
                     "rtmp2src", "ristsrc", "rtpsrc", "webrtcsrc", "whepsrc", "ndisrc",
                     "hlsdemux", "hlsdemux2", "dashdemux", "dashdemux2", "mssdemux", "mssdemux2")
_URL_PROPERTY = re.compile(r"(?:uri|location)=([A-Za-z][A-Za-z0-9+.-]*)://")


def reads_network(words) -> bool:
    """Whether a pipeline receives over the network: a network element anywhere, or a uri= /
    location= that is a URL other than file:// (uridecodebin, urisourcebin, playbin,
    nvurisrcbin, giosrc, ... whatever element takes it)."""
    urls = (_URL_PROPERTY.match(w) for w in words)
    return any(e in _NETWORK_ELEMENTS for e in elements(words)) or any(
        url is not None and url.group(1).lower() != "file" for url in urls)


def _refuse_placeholders(description: str) -> None:
    """gst-launch-1.0 reads its pipeline from its command line only: a password filled in there
    would be shown to every local user (`ps`), which is what a placeholder is meant to avoid."""
    names = placeholders(description)
    if names:
        raise SourceError(f"gst: {{{names[0]}}} cannot be filled into a GStreamer pipeline: "
                          "gst-launch-1.0 takes its pipeline on its command line, which every "
                          "local user sees; read the stream as an rtsp:// URL instead, naming "
                          "the user only (USER@HOST) with DBRT_SOURCE_PASSWORD or with a "
                          "{DBRT_...} placeholder for the password")


def parse_caps(text: str) -> dict:
    """`format=(string)BGR, width=(int)64, ... framerate=(fraction)30/1` -> its fields."""
    fields = dict(_FIELD.findall(text))
    num, _, den = fields.get("framerate", "0/1").partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    return dict(format=fields.get("format"), width=int(fields.get("width", 0)),
                height=int(fields.get("height", 0)), fps=fps or None)


class GStreamerSource(LiveSource):
    """A gst-launch pipeline description that produces video (no sink: dbrt adds its own).

    Live (cameras, streams): the newest frame wins when the consumer is slow (drops are counted).
    A live pipeline that fails (gst-launch exits with an error) is restarted under `reconnect`.
    One that reaches its end of stream (gst-launch exits 0: `v4l2src num-buffers=100`) has
    ended, and so has the source, unless it receives over the network (`reads_network`: an
    rtspsrc, souphttpsrc, udpsrc, ... or a uri= / location= URL other than file://): there an
    end of stream is a server that hung up, restarted as an outage (`ends_at_eos` says which).
    A CSI camera (`csi://N`) is reopened as other cameras are: dbrt's pipeline asks for no end,
    so an end of stream there is a fault. A pipeline that reads a file
    (`filesrc`, `multifilesrc`, `splitmuxsrc`, `uridecodebin uri=file:...`; or `live=False`) is
    not live: every frame is delivered (GStreamer waits for dbrt), timestamps are frame index /
    rate, and its end is the source's end."""

    kind = "gstreamer"

    def __init__(self, description: str, name: Optional[str] = None,
                 reconnect: Optional[Reconnect] = Reconnect(retries=3), live: Optional[bool] = None,
                 ends_at_eos: Optional[bool] = None):
        description = description.strip().rstrip("!").strip()
        if not description:
            raise SourceError("gst: an empty GStreamer pipeline")
        try:  # shell-style words, as on gst-launch's command line (location="a b.mp4")
            self._words = shlex.split(description)
        except ValueError as exc:
            raise SourceError(f"gst: {exc} in {description!r}") from None
        _refuse_placeholders(description)
        names = elements(self._words)
        last = names[-1] if names else ""
        if last.endswith("sink"):  # a sink inside a tee branch is fine: only the end is dbrt's
            raise SourceError(f"gst: end the pipeline before its sink (dbrt adds its own), got "
                              f"{last!r} at the end of {description!r}")
        self.live = not reads_file(self._words) if live is None else live
        self.ends_at_eos = not reads_network(self._words) if ends_at_eos is None else ends_at_eos
        super().__init__(name or f"gst:{description}", reconnect if self.live else None)
        self.description = description
        self.mode: Optional[dict] = None  # width, height, fps the pipeline negotiated
        self._proc: Optional[subprocess.Popen] = None
        self._pipe = None
        self._caps = threading.Event()
        self._heard = threading.Event()  # gst-launch said it is handling our SIGINT
        self._interrupted_at = -1.0  # when SIGINT was last sent (time.monotonic)
        self._signal_lock = threading.Lock()
        self._started_at = 0.0  # when the child started (time.monotonic)
        self._errors: deque = deque(maxlen=50)  # the child's last stderr lines
        self._logs: list = []  # the threads reading the child's stdout / stderr
        self._t0 = 0.0
        self._frames = 0  # read since this pipeline started
        self._resized: Optional[dict] = None  # caps of a size change mid-stream

    @classmethod
    def csi(cls, sensor: int = 0, width: Optional[int] = None, height: Optional[int] = None,
            fps: Optional[float] = None, reconnect: Optional[Reconnect] = Reconnect(retries=3),
            **unsupported) -> "GStreamerSource":
        if unsupported.get("fourcc"):
            raise SourceError("a CSI camera (csi://N) has no pixel format to choose: drop "
                              "--camera-fourcc")
        pipeline = csi_pipeline(sensor, width or 1920, height or 1080, fps or 30.0)
        camera = cls(pipeline, name=f"csi://{sensor}", reconnect=reconnect, ends_at_eos=False)
        camera.waits_when_down = False  # as other cameras: one missing at the start is an error
        return camera

    @property
    def fps(self) -> Optional[float]:
        mode = self.mode  # a reconnect may reset it meanwhile
        return mode["fps"] if mode else None

    def describe(self) -> dict:
        # report.json and /api/status: a password in the pipeline is not theirs to show
        return {**super().describe(), "mode": self.mode,
                "pipeline": without_credentials(self.description)}

    def command(self, fd: int) -> list:
        """The gst-launch-1.0 command line, frames going to file descriptor `fd`."""
        tail = f"! videoconvert ! video/x-raw,format=BGR ! fdsink name={SINK} fd={fd} sync=false"
        return [GST_LAUNCH, "-v", "-e", *self._words, *tail.split()]

    def close(self) -> None:
        super().close()  # opened and never read: the child is stopped there
        if self._thread is None:
            return
        proc = self._proc
        if proc is not None:
            # the reader may wait on a stalled pipeline: ending the child ends its read (EOF),
            # and the reader then disconnects as usual; a child that does not end (a source
            # that never delivers its end of stream) is killed, or the reader would wait forever
            threading.Thread(target=self._end_child, args=(proc, None, 2 * STOP_TIMEOUT),
                             daemon=True, name=f"gst-stop:{self.name}").start()

    def _interrupt(self, proc: subprocess.Popen) -> None:
        """SIGINT, unless gst-launch heard one already, one was sent under 0.5 s ago, or it
        started under EARLIEST_INTERRUPT ago."""
        with self._signal_lock:  # close() and the reader thread may both be stopping it
            now = time.monotonic()
            if now - self._started_at < EARLIEST_INTERRUPT:
                return
            if proc.poll() is None and not self._heard.is_set() and now - self._interrupted_at >= 0.5:
                self._interrupted_at = now
                proc.send_signal(signal.SIGINT)

    # -- LiveSource hooks -----------------------------------------------------------------------
    def _ended_by_itself(self) -> bool:
        return self.ends_at_eos  # its end of stream: what it was told to send was sent

    def _connect(self) -> None:
        if os.name != "posix":  # file-descriptor passing and select() on pipes
            raise SourceError(f"{self.name}: GStreamer sources run on Linux / macOS only")
        if shutil.which(GST_LAUNCH) is None:
            raise SourceError(f"{self.name}: {GST_LAUNCH} not found; install GStreamer's tools "
                              "(JetPack has them; Debian / Ubuntu: gstreamer1.0-tools "
                              "gstreamer1.0-plugins-base)")
        read_end, write_end = os.pipe()
        self._caps.clear()
        self._heard.clear()
        self._interrupted_at = -1.0
        self._errors, self.mode, self._resized = deque(maxlen=50), None, None
        env = {k: v for k, v in os.environ.items() if k != "LANGUAGE"}
        env["LC_ALL"] = "C"  # its messages untranslated: dbrt reads them
        try:  # its own session: a Ctrl-C in the terminal is dbrt's to handle, then ours to pass on
            self._proc = subprocess.Popen(_IGNORE_SIGINT + self.command(write_end), pass_fds=(write_end,),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                                          env=env)
        except OSError as exc:
            os.close(read_end)
            raise SourceError(f"{self.name}: cannot start {GST_LAUNCH}: {exc}") from None
        finally:
            os.close(write_end)
        self._started_at = time.monotonic()
        self._pipe = os.fdopen(read_end, "rb", buffering=0)
        self._logs = [threading.Thread(target=_drain, args=(stream, keep), daemon=True,
                                       name=f"gst-log:{self.name}")
                      for stream, keep in ((self._proc.stdout, self._watch_output),
                                           (self._proc.stderr, self._errors.append))]
        for thread in self._logs:
            thread.start()
        deadline = time.monotonic() + CAPS_TIMEOUT
        while not self._caps.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline or self._stop.is_set():
                why = ("the source was closed" if self._stop.is_set() else
                       self._why() or f"no video within {CAPS_TIMEOUT:.0f} s")
                if 'no element "nv' in why:
                    why += " (NVIDIA's elements, csi:// included, come with JetPack on a Jetson)"
                self._disconnect()
                raise passing(SourceError(f"{self.name}: GStreamer could not start the pipeline: "
                                          f"{why}"), gst_failure_passes(why))
        self._frames = 0
        if not self._t0:  # a restarted live pipeline's times go on from where they were
            self._t0 = time.monotonic()
        if not self.mode["width"] or not self.mode["height"]:
            self._disconnect()
            raise SourceError(f"{self.name}: GStreamer reported no frame size ({self.mode})")

    def _watch_output(self, line: str) -> None:
        if line.startswith("handling interrupt"):
            self._heard.set()
        match = _CAPS.search(line)
        if not match:
            return
        caps = parse_caps(match.group(1))
        if not self._caps.is_set():
            self.mode = caps
            self._caps.set()
        elif (caps["width"], caps["height"]) != (self.mode["width"], self.mode["height"]):
            self._resized = caps  # the pipe carries no frame boundaries: _read restarts

    def _check_size(self) -> None:
        resized = self._resized
        if resized is not None:
            raise SourceError(f"the pipeline changed its frame size to {resized['width']}x"
                              f"{resized['height']}; restarting it")

    def _why(self) -> str:
        """GStreamer's first error line (it writes errors to stderr)."""
        if self._proc is not None and self._proc.poll() is not None:
            for thread in self._logs:  # an exited process's last lines are still being read
                thread.join(timeout=1.0)
        lines = [line.strip() for line in list(self._errors) if line.strip()]  # a copy: appended to
        picked = next((line for line in lines if "ERROR" in line or "WARNING" in line), None)
        return picked or (lines[0] if lines else "")

    def _read(self):
        self._check_size()
        width, height = self.mode["width"], self.mode["height"]
        stride = (width * 3 + 3) & ~3  # GStreamer pads each BGR row to 4 bytes
        buffer = bytearray(stride * height)
        view, got = memoryview(buffer), 0
        while got < len(buffer):
            n = self._pipe.readinto(view[got:])
            if not n:
                if got or self._exit_status() not in (None, 0):
                    raise SourceError(f"GStreamer stopped: {self._why() or 'pipeline ended'}")
                return None  # the pipeline ended (end of stream)
            got += n
        self._check_size()  # a frame read across the change is not one
        rows = np.frombuffer(buffer, np.uint8).reshape(height, stride)
        image = (np.ascontiguousarray(rows[:, :width * 3]) if stride != width * 3 else rows) \
            .reshape(height, width, 3)
        self._frames += 1
        # no PTS through the pipe: a file's frames at its rate, a live one's time since start
        if not self.live and self.fps:
            return image, (self._frames - 1) / self.fps
        return image, time.monotonic() - self._t0

    def _exit_status(self) -> Optional[int]:
        """The child's exit status once it exits (its pipe closes a moment before), else None."""
        try:
            return self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None

    def _disconnect(self) -> None:
        proc, pipe, self._proc, self._pipe = self._proc, self._pipe, None, None
        if proc is not None:
            self._end_child(proc, pipe)
            for thread in self._logs:  # its output read to the end, then its streams closed
                thread.join(timeout=1.0)
            for stream in (proc.stdout, proc.stderr):
                stream.close()
        if pipe is not None:
            pipe.close()

    def _end_child(self, proc: subprocess.Popen, pipe, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gst-launch the way a Ctrl-C does: SIGINT, which with -e sends end-of-stream
        first, so a CSI camera's libargus session closes cleanly (killed, it can leave the camera
        daemon busy). Until it exits, what it still writes is read and dropped (a frame is larger
        than the pipe's buffer: a blocked writer never reaches its end of stream). SIGINT is
        repeated until it says it heard one (it ignores SIGINT until its handler is set, and
        dies of one after handling the first); killed after `timeout`. Without `pipe` (close()
        stopping it while the reader thread reads the pipe) only the signals and the kill."""
        deadline = time.monotonic() + timeout
        fd = pipe.fileno() if pipe is not None else None
        while proc.poll() is None and time.monotonic() < deadline:
            self._interrupt(proc)
            if fd is None:  # it closed its end: wait for it to exit
                time.sleep(0.05)
                continue
            if select.select([fd], [], [], 0.05)[0] and not os.read(fd, 1 << 20):
                fd = None
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _drain(stream, keep) -> None:
    """Read a child's text output to its end (a full pipe would stall the pipeline)."""
    try:
        for line in stream:
            keep(line)
    except (OSError, ValueError):
        pass
