"""A UDP multicast stream (`udp://239.x.x.x:PORT`, what encoders and head-ends send to many
receivers at once) is read by dbrt: a real MPEG-TS stream sent by FFmpeg (PyAV) to a group on the
loopback interface. Nothing outside this machine is needed, nor root: the sender and the
receivers pick the loopback interface with `localaddr=127.0.0.1` (sender: the address it sends
from, which routes the group's packets out of lo; receivers: the interface they join the group
on), so no multicast route is needed on lo. Without it a receiver joins on the default route's
interface, and a stream sent on lo never reaches it."""
from __future__ import annotations

import random
import socket
import threading
import time

from pipeline.runner import Pipeline
from pipeline.sources import open_source

from media import FakeDetector, frame_image, index_of

FPS = 25


def _group_and_port():
    """A group of the organisation-local scope (239.255/16), never the same for two runs at
    once, and a UDP port free on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return f"239.255.{random.randrange(256)}.{random.randrange(1, 255)}", port


class MulticastSender:
    """Sends MPEG-TS (MPEG-2 video, 64x48, numbered frames) to udp://GROUP:PORT from 127.0.0.1
    at its real rate until stopped, as a live encoder does whether anyone listens or not."""

    def __init__(self, group: str, port: int):
        self.url = f"udp://{group}:{port}?localaddr=127.0.0.1&pkt_size=1316"
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> "MulticastSender":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _send(self) -> None:
        import av

        with av.open(self.url, "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.gop_size = 5  # a receiver joining mid-stream decodes from the next keyframe
            began = time.monotonic()
            while not self._stop.is_set():
                frame = av.VideoFrame.from_ndarray(frame_image(self.sent), format="bgr24")
                frame.pts = self.sent
                for packet in stream.encode(frame):
                    container.mux(packet)
                self.sent += 1
                time.sleep(max(0.0, began + self.sent / FPS - time.monotonic()))


def test_frames_of_a_multicast_stream_on_loopback_are_read():
    group, port = _group_and_port()
    url = f"udp://{group}:{port}?localaddr=127.0.0.1"
    with MulticastSender(group, port):
        source = open_source(url)
        frames = []
        try:
            for frame in source:
                frames.append(frame)
                if len(frames) == 20:
                    break
        finally:
            source.close()
    assert source.kind == "network" and source.live
    indices = [frame.index for frame in frames]
    assert indices == sorted(set(indices))  # in order (a live source may drop some)
    for frame in frames:  # the pictures sent, decoded
        sent = frame_image(index_of(frame.image)).astype(int)
        assert frame.image.shape == sent.shape
        assert abs(frame.image.astype(int) - sent).mean() < 8, frame.index


def test_two_sources_of_one_run_read_the_same_group():
    """Multicast's point: every receiver gets the stream (with one unicast port, the second
    socket bound to it would take the packets from the first, or not bind at all)."""
    group, port = _group_and_port()
    url = f"udp://{group}:{port}?localaddr=127.0.0.1"
    with MulticastSender(group, port):
        report = Pipeline([url, url], FakeDetector(), max_frames=10).run()
    assert [s["delivered"] for s in report["sources"]] == [10, 10], report["sources"]
    assert [s["error"] for s in report["sources"]] == [None, None], report["sources"]
