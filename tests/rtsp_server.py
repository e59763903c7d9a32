"""A real RTSP server for the tests of rtsp:// sources: GStreamer's gst-rtsp-server, serving a
live test pattern (JPEG over RTP, 10 FPS) at rtsp://127.0.0.1:PORT/test, over only the RTP
transports named (tcp, udp, udp_multicast; RTSP tunnelled over HTTP comes with tcp).

Run by a Python that has GStreamer's bindings (python3-gi, gir1.2-gst-rtsp-server-1.0 and
gstreamer1.0-plugins-good on Debian / Ubuntu), which the project's virtual environment may
not be: `python3 tests/rtsp_server.py PORT tcp,udp`; it prints "ready" once it listens.
`--check` exits 0 where it can run (1 with the reason), and does nothing else."""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# 4:2:0 frames: RTP's JPEG payload (RFC 2435) carries no other sampling
PATTERN = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,"
           "framerate=10/1,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
LOWER = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP,
         "udp_multicast": GstRtsp.RTSPLowerTrans.UDP_MCAST}


def check() -> None:
    Gst.init(None)
    for element in ("videotestsrc", "jpegenc", "rtpjpegpay", "rtpbin", "udpsink"):
        if Gst.ElementFactory.find(element) is None:
            sys.exit(f"rtsp_server: GStreamer has no {element} (gstreamer1.0-plugins-good)")


def serve(port: str, transports: str) -> None:
    check()
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PATTERN)
    factory.set_shared(True)
    protocols = GstRtsp.RTSPLowerTrans(0)
    for name in transports.split(","):
        protocols |= LOWER[name]
    factory.set_protocols(protocols)
    if "udp_multicast" in transports:
        pool = GstRtspServer.RTSPAddressPool()
        pool.add_range("239.255.42.1", "239.255.42.9", 50000, 50100, 1)
        factory.set_address_pool(pool)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        check()
    else:
        serve(*sys.argv[1:3])
