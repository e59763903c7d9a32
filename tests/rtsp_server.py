"""A real RTSP server for the tests of rtsp:// sources: GStreamer's gst-rtsp-server, serving a
live test pattern (JPEG over RTP, 10 FPS) at rtsp://127.0.0.1:PORT/test, over only the RTP
transports named (tcp, udp, udp_multicast; RTSP tunnelled over HTTP comes with tcp).

Run by a Python that has GStreamer's bindings (python3-gi, gir1.2-gst-rtsp-server-1.0 and
gstreamer1.0-plugins-good on Debian / Ubuntu), which the project's virtual environment may
not be: `python3 tests/rtsp_server.py PORT tcp,udp`; it prints "ready" once it listens.
`--check` exits 0 where it can run (1 with the reason), and does nothing else."""
import random
import socket
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

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


def serve_multicast(factory, server) -> None:
    """Multicast to a group of a pool, sent on the loopback interface (no route needed) to
    receivers on this machine, which get it as the server joins the group there. A receiver
    binds the group's port, which the server holds too without SO_REUSEADDR: it is set on the
    server's sockets before its SETUP reply, else the receiver's bind fails ("Address already
    in use"). No RTCP: the server would get its own sender reports back, take them, once its
    loop detection forgets them (seconds), for another sender of its SSRC and end the stream
    with a BYE. Two clients setting up at once can crash gst-rtsp-server 1.22
    (gst_rtsp_media_get_rates: assertion failed): one at a time."""
    # a group and ports of their own: two servers at once must not send into each other's
    group = f"239.255.{random.randrange(256)}.{random.randrange(1, 255)}"
    port = random.randrange(20000, 30000, 2)  # RTP's even port, RTCP's next; not ephemeral
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(group, group, port, port + 1, 1)
    factory.set_address_pool(pool)
    factory.set_multicast_iface("lo")
    factory.set_enable_rtcp(False)
    served = []  # the shared media

    def configured(_factory, media) -> None:
        served[:] = [media]

    def replying(*_args) -> None:
        for stream in (media.get_stream(i) for media in served for i in range(media.n_streams())):
            for sock in (stream.get_rtp_multicast_socket(Gio.SocketFamily.IPV4),
                         stream.get_rtcp_multicast_socket(Gio.SocketFamily.IPV4)):
                if sock is not None:
                    sock.set_option(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    factory.connect("media-configure", configured)
    server.connect("client-connected",
                   lambda _server, client: client.connect("send-message", replying))


def serve(port: str, transports: str) -> None:
    check()
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PATTERN)
    factory.set_shared(True)
    protocols = GstRtsp.RTSPLowerTrans(0)
    for name in transports.split(","):
        protocols |= LOWER[name]
    factory.set_protocols(protocols)
    server = GstRtspServer.RTSPServer()
    if "udp_multicast" in transports:
        serve_multicast(factory, server)
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
