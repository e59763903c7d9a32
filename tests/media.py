"""Tiny media made on the fly for the pipeline tests (PyAV): videos whose frames say their
own index, MPEG-TS bytes and a loopback HTTP stream server, a stand-in detector, a simulated
live camera, and `until` (poll for a condition with a generous safety deadline)."""
from __future__ import annotations

import io
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from engine.errors import SourceError
from engine.triton.ports import free_port
from pipeline.detections import Detections
from pipeline.preprocess import make_letterbox
from pipeline.sources import LiveSource, Reconnect


def frame_image(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A frame whose left half has grey level 16 * (index % 16) + 8: readable after lossy coding."""
    image = np.full((height, width, 3), 200, np.uint8)
    image[:, : width // 2] = 16 * (index % 16) + 8
    return image


def index_of(image: np.ndarray) -> int:
    """Recover `index % 16` from a decoded `frame_image`."""
    level = float(np.median(image[:, : image.shape[1] // 4]))
    return int(round((level - 8) / 16))


# an MPEG-2 slice start code for a row far below the picture: FFmpeg's decoder rejects the
# packet (InvalidDataError), as it does a corrupt packet on a camera's stream
REJECTED_PACKET = b"\x00\x00\x01\xaf" + bytes(16)


def _encode(target, frames: int, height: int, width: int, fps: int, fmt=None, codec="mpeg4",
            options=None, rotation=None, damaged=()):
    import av

    with av.open(target, mode="w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        if rotation is not None:
            stream.set_display_rotation(rotation)  # the display matrix phones write
        for i in range(frames):
            vframe = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="bgr24")
            vframe.pts = i
            for packet in stream.encode(vframe):
                container.mux(_rejected_like(packet, stream) if i in damaged else packet)
        container.mux(stream.encode(None))


def _rejected_like(packet, stream):
    import av

    bad = av.Packet(REJECTED_PACKET)
    bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, stream
    return bad


def write_video(path: Path, frames: int = 12, height: int = 48, width: int = 64, fps: int = 10,
                rotation=None, codec: str = "mpeg4") -> Path:
    """An MP4 (MPEG-4 part 2, or `codec` in a container that takes it) with `frames` frames;
    `rotation`: display rotation tag (degrees counter-clockwise, as PyAV's
    `VideoFrame.rotation` reports it)."""
    _encode(str(path), frames, height, width, fps, codec=codec, rotation=rotation)
    return path


def write_vfr_video(path: Path, times, height: int = 48, width: int = 64) -> Path:
    """An H.264 MP4 whose frames are shown at `times` (seconds), as a phone records: a
    variable frame rate."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            vframe = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="bgr24")
            vframe.pts, vframe.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(stream.encode(vframe))
        container.mux(stream.encode(None))
    return path


def write_truncated_video(path: Path, frames: int = 200, keep: float = 0.5, codec="libx264",
                          height: int = 72, width: int = 128) -> Path:
    """An MP4 cut after `keep` of its bytes (an interrupted download or copy). The index sits
    at the front (faststart), so the file opens and still says it has `frames` frames."""
    _encode(str(path), frames, height, width, 10, codec=codec, options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def mpegts_bytes(frames: int = 50, height: int = 48, width: int = 64, fps: int = 25,
                 damaged=()) -> bytes:
    """An MPEG-TS stream in memory (what a live HTTP TS server sends); the packets of the
    frames numbered in `damaged` are replaced by one the decoder rejects."""
    buffer = io.BytesIO()
    _encode(buffer, frames, height, width, fps, fmt="mpegts", codec="mpeg2video", damaged=damaged)
    return buffer.getvalue()


CHUNK = 188 * 20  # whole TS packets of the loopback stream server


def until(check, what: str, limit_s: float = 30.0, every_s: float = 0.01):
    """Poll `check()` until it returns a truthy value, which is returned; fails after
    `limit_s` (a safety net for a broken run, never a measurement: tests wait for what they
    need to see, not for a time)."""
    deadline = time.monotonic() + limit_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}")
        time.sleep(every_s)


class TsServer:
    """A loopback HTTP MPEG-TS server: streams a clip in a loop to every GET, paced at about
    `rate` bytes/second. `stop()` kills the listener and every open connection; `start()` brings
    it back on the same port."""

    def __init__(self, payload: bytes, rate: float = 400_000):
        self.payload, self.rate = payload, rate
        self.port = free_port()
        self.connections = 0
        self._server = None
        self._alive = threading.Event()
        self._paused = threading.Event()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                offset = 0
                while owner._alive.is_set():
                    if owner._paused.is_set():
                        time.sleep(0.05)
                        continue
                    chunk = owner.payload[offset:offset + CHUNK] or owner.payload[:CHUNK]
                    offset = (offset + CHUNK) % len(owner.payload)
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        return
                    time.sleep(CHUNK / owner.rate)

        return Handler

    def start(self) -> "TsServer":
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._alive.set()
        threading.Thread(target=self._server.serve_forever, name="ts-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.ts"


class FakeDetector:
    """Duck-typed Detector for pipeline tests: no model; one box per frame whose score encodes
    the frame's stream and index, so routing and order can be checked. `fail_in` names a step
    that raises RuntimeError("boom in <step>")."""

    untrained = False

    def __init__(self, fail_in: str = None, fail_after: int = 0, delay_s: float = 0.0,
                 input_size=(32, 32)):
        self.fail_in = fail_in
        self.fail_after = fail_after
        self.delay_s = delay_s
        self.size = input_size
        self.calls = {"prepare": 0, "infer": 0, "postprocess": 0}
        self.batch_sizes = []
        self.closed = False

    def _step(self, name: str) -> None:
        self.calls[name] += 1
        if self.fail_in == name and self.calls[name] > self.fail_after:
            raise RuntimeError(f"boom in {name}")

    def input_size_for(self, h, w):
        return self.size if self.size else (h, w)

    def prepare(self, images):
        self._step("prepare")
        sizes = {im.shape[:2] if not self.size else self.size for im in images}
        assert len({self.input_size_for(*im.shape[:2]) for im in images}) == 1, sizes
        self.batch_sizes.append(len(images))
        boxes = [make_letterbox(im.shape[0], im.shape[1], *self.input_size_for(*im.shape[:2]))
                 for im in images]
        return np.zeros((len(images), 1)), boxes

    def infer(self, batch):
        self._step("infer")
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        return batch

    def postprocess(self, prob, letterboxes):
        self._step("postprocess")
        quad = np.array([[0, 0], [4, 0], [4, 2], [0, 2]], np.float32)
        return [Detections.from_quads(quad[None], [0.5]) for _ in letterboxes]

    def describe(self):
        return {"runner": "fake"}

    def close(self):
        self.closed = True


class SimulatedCamera(LiveSource):
    """A live source producing frames as fast as it can (or at `fps`); `fail_at` frame numbers
    break the connection, `refuse` connection attempts are refused after each break."""

    kind = "simulated"

    def __init__(self, total=200, fps=None, fail_at=(), refuse=0, reconnect=Reconnect(retries=3, delay=0.01)):
        super().__init__("sim", reconnect)
        self.total, self.rate, self.fail_at, self.refuse = total, fps, set(fail_at), refuse
        self.produced = 0
        self.connects = 0
        self._refused = 0

    def _connect(self):
        if self.connects and self._refused < self.refuse:
            self._refused += 1
            raise SourceError("connection refused")
        self.connects += 1
        self._refused = 0

    def _read(self):
        if self.produced >= self.total:
            return None
        if self.rate:
            time.sleep(1 / self.rate)
        self.produced += 1
        if self.produced in self.fail_at:
            self.fail_at.discard(self.produced)
            raise ConnectionError("link down")
        return frame_image(self.produced, 240, 320), self.produced / 100

    def _disconnect(self):
        pass
