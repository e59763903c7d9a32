"""Frame sources: video files, network streams, cameras, images; `open_source` picks one.

    for frame in open_source("video.mp4"):
        frame.image, frame.index, frame.timestamp, frame.source
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterable, List, Optional, Union

from engine.errors import SourceError

from .base import Frame, Source, SourceStats
from .camera import CameraSource
from .gstreamer import GStreamerSource
from .images import ImageSource, has_glob, is_image_path
from .live import LatestSlot, LiveSource, Reconnect
from .network import READ_TIMEOUT_S, NetworkSource, is_url
from .video import VideoFileSource

__all__ = ["Frame", "Source", "SourceStats", "VideoFileSource", "NetworkSource", "CameraSource",
           "ImageSource", "GStreamerSource", "LiveSource", "LatestSlot", "Reconnect", "open_source", "open_sources",
           "parse_source", "is_camera_spec"]

_CAMERA_PATH = re.compile(r"^/dev/video\d+$")
_CSI = re.compile(r"^csi://(\d+)$")
GST_PREFIX = "gst:"


def is_camera_spec(spec) -> bool:
    """A camera index (0, "1"), device path (/dev/video0) or Jetson CSI camera (csi://0), as
    `parse_source` reads specs."""
    if isinstance(spec, Source):
        return spec.kind == "camera" or spec.name.startswith("csi://")
    if isinstance(spec, int):
        return True
    text = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else ""
    return text.isdigit() or bool(_CAMERA_PATH.match(text) or _CSI.match(text))


def parse_source(spec: Union[str, int, os.PathLike, Source], reconnect: Optional[Reconnect] = Reconnect(),
                 decode_threads: int = 0, camera: Optional[dict] = None,
                 password: Optional[str] = None, hwaccel: Optional[str] = None,
                 rtsp_transport: str = "tcp", source_timeout: float = READ_TIMEOUT_S) -> Source:
    """A Source for a command-line style spec (not yet opened):

    an int or digits -> camera index; /dev/videoN -> camera; csi://N -> Jetson CSI camera N;
    gst:PIPELINE -> a GStreamer pipeline; rtsp:// http:// ... -> network stream; a folder, a
    glob or an image file -> images; anything else -> video file.
    `camera`: the capture mode cameras are asked for (CameraSource's width, height, fps, fourcc).
    `password`: of a network URL that names its user without one (`rtsp://admin@cam/1`).
    `hwaccel`: "cuda" decodes video files and network streams on an NVIDIA GPU (NVDEC; "cuda:N"
    on GPU N), None (the default) in software; other sources ignore it.
    `rtsp_transport`: how an rtsp:// stream's video comes: "tcp" (the default), "udp",
    "udp_multicast" or "http" (tunnelled); `source_timeout`: the seconds a network stream's
    read waits for data before the connection counts as lost (connecting waits up to 30 s, or
    this if longer); other sources ignore them.
    """
    if isinstance(spec, Source):
        return spec
    text = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else ""
    csi = _CSI.match(text)
    if csi:
        return GStreamerSource.csi(int(csi.group(1)), **(camera or {}))
    if text.startswith(GST_PREFIX):
        return GStreamerSource(text[len(GST_PREFIX):], reconnect=reconnect)
    if is_camera_spec(spec):
        device = int(spec) if isinstance(spec, int) or text.isdigit() else text
        return CameraSource(device, **(camera or {}))
    if not isinstance(spec, (str, os.PathLike, int)):
        raise SourceError(f"a source is a path, URL, camera index or Source, not "
                          f"{type(spec).__name__} (images in memory: Detector.detect)")
    if not text:
        raise SourceError("empty source")
    if is_url(text):
        return NetworkSource(text, reconnect=reconnect, password=password, hwaccel=hwaccel,
                             rtsp_transport=rtsp_transport, timeout=source_timeout)
    if os.path.isfile(text) and not is_image_path(text):  # `clip [1].mp4` is a file, not a glob
        return VideoFileSource(text, threads=decode_threads, hwaccel=hwaccel)
    if has_glob(text) or os.path.isdir(text) or is_image_path(text):
        return ImageSource(text)
    return VideoFileSource(text, threads=decode_threads, hwaccel=hwaccel)


def open_source(spec, **options) -> Source:
    """`parse_source` and `open()`: fails now, with one SourceError line, if it cannot be read."""
    return parse_source(spec, **options).open()


def open_sources(specs: Iterable, made: Optional[Callable[[List[Source]], None]] = None,
                 **options) -> List[Source]:
    """Open several sources, the live ones' first connects at once (`begin_connect`); on
    failure, close them all and re-raise. `made(sources)` is told them before they open (a
    stop at start closes them from another thread: their first connects are not waited out)."""
    sources: List[Source] = []
    try:
        for stream, spec in enumerate(specs):
            sources.append(parse_source(spec, **options))
            sources[-1].stream = stream
        if made is not None:
            made(sources)
        for source in sources:
            getattr(source, "begin_connect", lambda: None)()
        for source in sources:
            source.open()
    except BaseException:
        for source in sources:
            source.close()
        raise
    if not sources:
        raise SourceError("no source given")
    return sources
