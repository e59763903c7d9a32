"""The annotated video's encoder: one PyAV output file, frames at their source timestamps, an
H.264 / HEVC encoder of the user's choice (x264 on the CPU by default; NVENC on an NVIDIA GPU,
which takes the encoding off the CPU, where it is the host's limit at 1080p: 60-70 ms of CPU
per 1080x1920 frame with x264)."""
from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from engine.errors import DbrtError
from engine.lazy import require

# video clock: exact for 24, 25, 30, 50, 60 and NTSC 29.97 / 59.94 fps; MPEG-4 part 2 allows
# time bases up to 1/65535
TICKS = 60000
FRAGMENT_S = 2.0  # an MP4 fragment: what a kill may lose of the annotated video (2-8% larger
# files than x264's own keyframe spacing: the street and lightbox videos at crf 23)
# a live stream's clock that runs this far ahead of the frames' arrival (2 s) jumped: buffering
# and network stalls stay well within it
JUMP = 2 * TICKS


MP4_SUFFIXES = (".mp4", ".mov", ".m4v")
# H.264 by x264 on the CPU (the default), or by NVENC (H.264 / HEVC) on an NVIDIA GPU
VIDEO_CODECS = ("libx264", "h264_nvenc", "hevc_nvenc")


def encoder_options(codec: str, crf: int, live: bool) -> dict:
    """The encoder's settings for a quality of `crf` (x264's constant rate factor; NVENC's
    constant quality of the same scale). Live: no look-ahead, whose frames held in the encoder
    a kill would lose too."""
    if codec == "libx264":
        return {"crf": str(crf), "preset": "veryfast", **({"tune": "zerolatency"} if live else {})}
    if codec.endswith("_nvenc"):  # b 0: no 2 Mb/s cap (NVENC's default) on the quality
        # forced-idr: NVENC makes a frame asked for as I a plain intra frame, which starts no
        # MP4 fragment (x264 makes it an IDR frame, a keyframe, by itself)
        return {"preset": "p3", "rc": "vbr", "cq": str(crf), "b": "0", "forced-idr": "1",
                **({"tune": "ll", "zerolatency": "1", "delay": "0"} if live else {})}
    return {}


def check_encoder(codec: str) -> None:
    """The encoder is in this FFmpeg and opens here (NVENC needs an NVIDIA GPU whose driver
    has its encoder library), checked before a run rather than at its first frame."""
    av = require("av")
    if codec not in VIDEO_CODECS:
        raise DbrtError(f"--video-codec {codec}: choose one of {', '.join(VIDEO_CODECS)}")
    if codec not in av.codecs_available:
        raise DbrtError(f"--video-codec {codec}: this FFmpeg (PyAV {av.__version__}) has no such "
                        "encoder")
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
    context.time_base = Fraction(1, 25)
    context.options = encoder_options(codec, 23, False)
    try:
        context.open()
    except (av.FFmpegError, OSError, ValueError) as exc:
        needs = " (NVENC needs an NVIDIA GPU and its driver)" if codec.endswith("_nvenc") else ""
        raise DbrtError(f"--video-codec {codec} cannot encode here: "
                        f"{getattr(exc, 'strerror', None) or exc}{needs}") from None


def _muxing(path: Path) -> dict:
    """A run ends by SIGKILL, an out-of-memory kill or a power cut as well as cleanly, and a
    plain MP4 is unreadable until its index is written at the close: every MP4 is written as
    fragments that each start at a keyframe, flushed as they are written, so all but the last
    seconds stay playable. `delay_moov` writes the header once the first fragment is known,
    with the edit list that starts a video with B-frames at 0 (`empty_moov`'s header, written
    first, has none: the picture came two frames late); a clean close adds an index of the
    fragments at the start, without which browsers take the first fragments' length for the
    video's. (Matroska needs nothing: it is readable when cut short.)"""
    if path.suffix.lower() not in MP4_SUFFIXES:
        return {}
    return {"movflags": "frag_keyframe+delay_moov+default_base_moof+global_sidx",
            "flush_packets": "1"}


class VideoEncoder:
    """One PyAV output file of the first frame's size, cropped to even numbers (yuv420p needs
    them). A frame of another size (a live stream that reconnected at another resolution) is
    scaled to fit, letterboxed, so the whole picture stays in the one file.

    Frames are shown at their source timestamps, so that a variable-frame-rate recording or a
    live stream that dropped frames plays at its real pace; a frame without a timestamp, or
    whose time does not move on (a live stream's clock restarted by a reconnect), comes one
    frame of `fps` after the last. `live`: a clock that jumps ahead of the time the frames
    arrived in (a camera's clock set forward) goes on at the arrival time, not with a still
    picture for the jump. `fixed_rate`: every frame lasts 1 / `fps`, timestamps unused.
    `low_latency` (default: `live`): the encoder's live settings (no look-ahead, no B-frames).
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, codec: str, crf: int,
                 fixed_rate: bool = False, live: bool = False, low_latency: Optional[bool] = None):
        av = require("av")
        self.path = path
        with self._naming_the_file():
            self.container = self._open_container(av)
        low_latency = live if low_latency is None else low_latency
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        if self.stream.codec_context.codec.canonical_name == "hevc" and self._is_mp4():
            self.stream.codec_tag = "hvc1"  # FFmpeg's hev1, which Safari and Apple's players refuse
        self.stream.codec_context.time_base = Fraction(1, TICKS)
        if low_latency:  # no B-frames, which hold frames back in the encoder (a live run's
            # latency, and what a kill loses); keyframes, so fragments, come by time (encode)
            self.stream.codec_context.max_b_frames = 0
        self.stream.options = encoder_options(codec, crf, low_latency)
        self._last_key: Optional[int] = None  # pts of the last keyframe asked for
        self._av = av
        self._step = max(1, round(TICKS / rate))  # one frame at the nominal rate
        self._fixed_rate = fixed_rate
        self._live = live
        self._last_read: Optional[float] = None  # when the last frame arrived (live streams)
        self._last_pts: Optional[int] = None
        self._durations: dict = {}  # pts -> ticks, of the frames in the encoder
        self._origin: Optional[float] = None  # the source time shown at pts 0

    def _open_container(self, av):
        """The output container (a file here; a network stream's muxer in a subclass)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return av.open(str(self.path), mode="w", options=_muxing(self.path))

    def _is_mp4(self) -> bool:
        return self.path.suffix.lower() in MP4_SUFFIXES

    def encode(self, image, timestamp: Optional[float] = None,
               t_read: Optional[float] = None) -> None:
        vframe = self._wrap(self._fit(image))
        last = self._last_pts
        vframe.pts = self._pts(None if self._fixed_rate else timestamp, t_read)
        vframe.time_base = Fraction(1, TICKS)
        # each frame lasts as long as the gap before it: only the last one's is used, where the
        # muxer's guess was one frame of the nominal rate (1/30 s of a 30 FPS video sampled at
        # 5 FPS); the encoders leave a packet's duration 0, so it is set as the packet comes out
        self._durations[vframe.pts] = self._step if last is None else vframe.pts - last
        if self._last_key is None or vframe.pts - self._last_key >= FRAGMENT_S * TICKS:
            vframe.pict_type = self._av.video.frame.PictureType.I  # a fragment every FRAGMENT_S
            self._last_key = vframe.pts  # of video, however slowly a run writes (50 frames: 13 s)
        with self._naming_the_file():  # FFmpeg opens the file at the first packet
            self.container.mux(self._timed(self.stream.encode(vframe)))

    def _timed(self, packets: list) -> list:
        for packet in packets:
            packet.duration = self._durations.pop(packet.pts, 0)
        if len(self._durations) > 256:  # an encoder that gave packets other pts: keep it bounded
            for pts in sorted(self._durations)[:-64]:
                del self._durations[pts]
        return packets

    def _wrap(self, image):
        """The picture as a bgr24 VideoFrame over the array's own memory, which the encoder
        converts to yuv420p in `encode`. PyAV's from_ndarray copied it first (to bytes, then
        row by row): 3.5 of the 11.3 ms of CPU time the sink's thread spent on a 1080x1920 frame."""
        wrap = getattr(self._av.VideoFrame, "from_numpy_buffer", None)  # not in older PyAV
        if wrap is None or image.strides[1:] != (3, 1):
            return self._av.VideoFrame.from_ndarray(image, format="bgr24")
        return wrap(image, format="bgr24")

    def _pts(self, timestamp: Optional[float], t_read: Optional[float] = None) -> int:
        at = None
        if timestamp is not None and self._origin is not None:
            at = round((timestamp - self._origin) * TICKS)
        arrived = self._arrival_step(t_read)
        if self._last_pts is None:
            pts = 0
        elif at is not None and arrived is not None and at - self._last_pts > arrived + JUMP:
            pts = self._last_pts + max(self._step, arrived)  # the clock jumped, time did not
        elif at is not None and at > self._last_pts:
            pts = at
        else:
            pts = self._last_pts + self._step
        if timestamp is not None and at != pts:  # anchored anew: later frames go on from here
            self._origin = timestamp - pts / TICKS
        self._last_pts = pts
        return pts

    def _arrival_step(self, t_read: Optional[float]) -> Optional[int]:
        """Ticks since the last frame of a live stream arrived, else None."""
        if not self._live or t_read is None:
            return None
        last, self._last_read = self._last_read, t_read
        return None if last is None else round(max(0.0, t_read - last) * TICKS)

    @contextlib.contextmanager
    def _naming_the_file(self):
        av = require("av")
        try:
            yield
        except (OSError, ValueError, av.FFmpegError) as exc:  # FFmpeg's: e.g. a frame too large
            size = getattr(getattr(self, "stream", None), "width", None)
            size = f" ({self.stream.width}x{self.stream.height})" if size else ""
            raise DbrtError(f"cannot write the video {self.path}{size}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from exc

    def _fit(self, image):
        height, width = self.stream.height, self.stream.width
        h, w = image.shape[:2]
        if (h - h % 2, w - w % 2) == (height, width):
            return image[:height, :width]
        scale = min(width / w, height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((height, width, 3), np.uint8)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas[top:top + new_h, left:left + new_w] = cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return canvas

    def close(self) -> None:
        with self._naming_the_file():
            self.container.mux(self._timed(self.stream.encode(None)))  # flush delayed frames
            self.container.close()
