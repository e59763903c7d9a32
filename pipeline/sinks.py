"""Where results go: JSON lines, annotated video (PyAV), annotated images, a window, callbacks.

A sink has `write(frame, detections)` (frame facts are read from the frame), `end_stream(stream)`
(that source's last frame was written while others go on), `stream_lost(stream)`, `stopping()`,
`ending()` and `close()`, and is a context manager; a sink of one's own needs `write` alone.
The pipeline calls every sink from its sink thread, in order per source; at the end it ends them
all (`ending`), then closes them all (even when one of them fails to end or close).
"""
from __future__ import annotations

import abc
import contextlib
import numbers
import os
import threading
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

import cv2

from dbnet.files import naming_the_file, write_image
from engine.errors import DbrtError

from .detections import Detections, FrameResult
from .draw import annotate
from .encoder import VideoEncoder
from .segments import SegmentedLines, Segments, checked_segments
from .sources import Frame

PathFor = Callable[[Frame], Union[str, os.PathLike]]


class Sink(abc.ABC):
    @abc.abstractmethod
    def write(self, frame: Frame, detections: Detections) -> None: ...

    def end_stream(self, stream: int) -> None:
        """Source `stream` has ended and its last frame was written (the run goes on)."""

    def stream_lost(self, stream: int) -> None:
        """Live source `stream` lost its connection and its last frame was written: it may
        come back on a new connection, so only what follows it across frames ends."""

    def finish_segments(self, idle: bool = False) -> None:
        """Called by the sink thread after each frame and while none comes (`idle`: the
        segments' clock is read again): a file of a segment of time that is over is finished
        now, not at its stream's next frame (a camera down for hours)."""

    def stopping(self) -> None:
        """The run was stopped (a signal, Ctrl-C, `Pipeline.stop()`), not ended: called before
        `close()`, so that a close that waits on others (a network) can be kept short."""

    def ending(self) -> None:
        """The run's frames are all written (it ended or was stopped): a Pipeline calls this on
        every sink before it closes any, so that what a sink still gives others at the end
        (TextEventSink's last end lines, to the MQTT sink) finds them open, whatever the order."""

    def close(self) -> None:
        """Finish writing (idempotent)."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink(Sink):
    """One JSON object per frame (`FrameResult.to_json`), flushed per frame so that a reader
    (or a run killed with Ctrl-C) always sees complete lines. segments: a `Segments` (one file
    per segment of time, named after `path`: detections-20261207T171500Z.jsonl), else one file."""

    def __init__(self, path: Union[str, os.PathLike], decimals: int = 2,
                 segments: Optional[Segments] = None):
        self.segments = checked_segments(segments, "JsonlSink")  # before any folder is made
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.decimals = decimals
        self._fh = (open(self.path, "w", encoding="utf-8") if segments is None
                    else SegmentedLines(self.path, segments))
        self.lines = 0

    def write(self, frame: Frame, detections: Detections) -> None:
        if self.segments is not None:
            self._fh.at(frame)
        with naming_the_file(self.path):  # a full disk's error names no file
            self._fh.write(FrameResult(frame, detections).to_json(self.decimals) + "\n")
            self._fh.flush()
        self.lines += 1

    def finish_segments(self, idle: bool = False) -> None:
        if self.segments is not None:
            self._fh.finish_over(self.segments.passed() if idle else self.segments.current())

    def close(self) -> None:
        if not self._fh.closed:
            with naming_the_file(self.path):
                self._fh.close()


class VideoSink(Sink):
    """Annotated video, one file per source; `path` is a file name (one source), or
    fn(frame) -> file name (one per stream: two streams on one file are an error).
    The file keeps the size of the source's first frame: later frames of another size are
    scaled into it (letterboxed).

    Frames are shown at their timestamps (a variable-frame-rate recording plays at its pace);
    one without a timestamp, or whose time goes back (a live stream restarted by a reconnect),
    comes one frame after the last at the source's rate given in `fps_by_stream` (read at
    each stream's first frame: a mapping of one's own may learn a rate late), else 25.
    In `live_streams`, a clock that jumps ahead of the frames' arrival goes on at arrival time.
    fps: a constant output frame rate instead: every frame lasts 1 / fps, timestamps unused.
    segments: a `Segments`: one whole file per segment of time and stream, named after the
    stream's (annotated-20261207T171500Z.mp4), each closed before the next opens, so it plays
    alone from 0 s and starts at a keyframe.
    """

    def __init__(self, path: Union[str, os.PathLike, PathFor], fps: Optional[float] = None,
                 fps_by_stream: Optional[Mapping[int, float]] = None, codec: str = "libx264",
                 crf: int = 23, annotators: Optional[Sequence] = None,
                 live_streams: Iterable[int] = (), segments: Optional[Segments] = None):
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, numbers.Real)
                                or not 0 < fps < float("inf")):  # 0 was taken for 25 FPS
            raise ValueError(f"VideoSink(fps=) must be a number of frames per second > 0 (None: "
                             f"the frames' timestamps), got {fps!r}")
        self.path_for = path if callable(path) else (lambda frame, p=path: p)
        self.fps = fps
        self.fps_by_stream = fps_by_stream if fps_by_stream is not None else {}
        self.codec = codec
        self.crf = crf
        self.annotators = annotators
        self.live_streams = set(live_streams)
        self.encoders: Dict[int, VideoEncoder] = {}
        self.paths: Dict[int, Path] = {}  # stream -> its file (with segments: their base name)
        self.segments = checked_segments(segments, "VideoSink")
        self._starts: Dict[int, float] = {}  # stream -> the start of its segment being written
        self._closed = False

    def write(self, frame: Frame, detections: Detections) -> None:
        encoder = self.encoders.get(frame.stream)
        if encoder is not None and self._segment_ended(frame):
            encoder = None
        if encoder is None:
            if self._closed:  # its files are finished: another run would overwrite them
                raise DbrtError(f"this VideoSink ({', '.join(map(str, self.paths.values()))}) is "
                                "closed (a Pipeline closes its sinks when its run ends); make a "
                                "new one for another run")
            encoder = self._open(frame)
        encoder.encode(annotate(frame.image, detections, self.annotators), frame.timestamp,
                       frame.t_read)

    def _segment_ended(self, frame: Frame) -> bool:
        """The frame starts a new segment: the stream's file of the last one is finished."""
        if self.segments is None or \
                self.segments.start_for(frame) == self._starts.get(frame.stream):
            return False
        self.encoders.pop(frame.stream).close()
        return True

    def _open(self, frame: Frame) -> VideoEncoder:
        path = Path(self.path_for(frame))
        taken = [stream for stream, used in self.paths.items()
                 if used == path and stream != frame.stream]
        if taken:  # two encoders on one file: each overwrote the other's frames
            raise DbrtError(f"{path}: streams {taken[0]} and {frame.stream} would write the same "
                            "video; give VideoSink a file name per stream, e.g. "
                            "lambda frame: f'annotated_{frame.stream}.mp4'")
        h, w = frame.size
        if h < 2 or w < 2:
            raise DbrtError(f"cannot encode a {w}x{h} frame as video")
        fps = self.fps or self.fps_by_stream.get(frame.stream) or 25.0
        file = path
        if self.segments is not None:
            self._starts[frame.stream] = self.segments.start_for(frame)
            file = self.segments.opened(path, self._starts[frame.stream])
        encoder = VideoEncoder(file, w, h, fps, self.codec, self.crf, fixed_rate=bool(self.fps),
                           live=frame.stream in self.live_streams)
        self.encoders[frame.stream], self.paths[frame.stream] = encoder, path
        return encoder

    def end_stream(self, stream: int) -> None:
        """A source ended while others go on: its file is finished now, playable at once."""
        encoder = self.encoders.pop(stream, None)
        if encoder is not None:
            encoder.close()

    def finish_segments(self, idle: bool = False) -> None:
        """A stream's file whose segment's time is over is finished, playable, at once."""
        if self.segments is None:
            return
        newest = self.segments.passed() if idle else self.segments.current()
        for stream in [s for s in self.encoders if self._starts[s] < newest]:
            self.encoders.pop(stream).close()

    def close(self) -> None:
        self._closed = True
        encoders, self.encoders = self.encoders, {}
        with contextlib.ExitStack() as steps:  # one file failing to finish leaves the others whole
            for encoder in encoders.values():
                steps.callback(encoder.close)


class ImageSink(Sink):
    """Annotated images: fn(frame) -> file name (the format follows the suffix)."""

    def __init__(self, path_for: PathFor, annotators: Optional[Sequence] = None):
        if not callable(path_for):  # one file name would be overwritten by every frame
            raise TypeError(f"ImageSink takes a function of the frame that names its file, e.g. "
                            f"lambda frame: f'out/{{frame.stream}}_{{frame.index:06d}}.jpg', "
                            f"got {path_for!r}")
        self.path_for = path_for
        self.annotators = annotators
        self.written = 0

    def write(self, frame: Frame, detections: Detections) -> None:
        path = Path(self.path_for(frame))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, annotate(frame.image, detections, self.annotators))
        self.written += 1


class WindowSink(Sink):
    """Shows annotated frames in a window per source; pressing q or Esc calls `on_quit`."""

    def __init__(self, on_quit: Optional[Callable[[], None]] = None, annotators=None,
                 title: str = "dbrt"):
        self.on_quit = on_quit
        self.annotators = annotators
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise DbrtError("--show needs OpenCV with GUI support (pip install opencv-python, "
                            "not opencv-python-headless) and a display") from exc
        self._windows = {title}

    def write(self, frame: Frame, detections: Detections) -> None:
        name = self.title if frame.stream == 0 else f"{self.title} [{frame.stream}]"
        self._windows.add(name)
        cv2.imshow(name, annotate(frame.image, detections, self.annotators))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        for name in self._windows:
            try:
                cv2.destroyWindow(name)
            except cv2.error:
                pass
        self._windows = set()


class CallbackSink(Sink):
    """Calls fn(frame, detections) for every result."""

    def __init__(self, fn: Callable[[Frame, Detections], None]):
        self.fn = fn

    def write(self, frame: Frame, detections: Detections) -> None:
        self.fn(frame, detections)


class FilteredSink(Sink):
    """Passes to `sink` only the frames for which `keep(frame)` is true, and everything else a
    Pipeline tells its sinks (a sink of one's own may have only `write`)."""

    def __init__(self, sink: Sink, keep: Callable[[Frame], bool]):
        self.sink = sink
        self.keep = keep

    def write(self, frame: Frame, detections: Detections) -> None:
        if self.keep(frame):
            self.sink.write(frame, detections)

    def end_stream(self, stream: int) -> None:
        getattr(self.sink, "end_stream", _ignored)(stream)

    def stream_lost(self, stream: int) -> None:
        getattr(self.sink, "stream_lost", _ignored)(stream)

    def finish_segments(self, idle: bool = False) -> None:
        getattr(self.sink, "finish_segments", _ignored)(idle)

    def stopping(self) -> None:
        getattr(self.sink, "stopping", _ignored)()

    def ending(self) -> None:  # a TextEventSink's last end lines, before any sink closes
        getattr(self.sink, "ending", _ignored)()

    def close(self) -> None:
        getattr(self.sink, "close", _ignored)()


def _ignored(*news) -> None:
    """What a sink of one's own without the method does with the news."""


def sinks_within(sinks: Iterable) -> list:
    """`sinks` and the sinks FilteredSinks wrap (a TextEventSink among them needs the
    pipeline's tracker)."""
    found = []
    for sink in sinks:
        found.append(sink)
        while isinstance(sink, FilteredSink):
            sink = sink.sink
            found.append(sink)
    return found


class StreamEnds:
    """Tells the sinks when a source that ended (or failed) has had its last frame written,
    so that what they keep per stream (text tracks) ends then: a camera that fails for good
    while the others go on, not only when the whole run ends; and when a live source that lost
    its connection has (`stream_lost`), so that its tracks end as the outage begins, not when
    the camera comes back. Called by the sink stage's thread, also while no frame comes; the
    frames whose inference failed (a model server away) never reach it and are told by the
    inference stage (`frames_failed`), else their stream would never seem written. Being
    the sink thread's, it also has the sinks finish a segment of time that is over
    (`finish_segments`): a camera down for hours leaves its last segment's files closed, not
    open until it comes back; each sink closes them in the thread that writes to them."""

    def __init__(self, sources: Sequence, sinks: Sequence[Sink]):
        self._open = {source.stream: source for source in sources}
        self._sinks = sinks
        self._written: Dict[int, int] = {stream: 0 for stream in self._open}
        self._failed: Dict[int, int] = {stream: 0 for stream in self._open}
        self._failed_lock = threading.Lock()  # told from the inference stage's thread
        self._lost: set = set()  # streams told of their outage, until their next frame

    def frames_failed(self, frames: Sequence[Frame]) -> None:
        """These frames will never be written: their inference failed."""
        with self._failed_lock:
            for frame in frames:
                self._failed[frame.stream] = self._failed.get(frame.stream, 0) + 1

    def _done(self, stream: int) -> int:
        """The stream's frames written or failed."""
        return self._written[stream] + self._failed.get(stream, 0)

    def frame_written(self, frame: Frame) -> None:
        self._written[frame.stream] = self._written.get(frame.stream, 0) + 1
        self._lost.discard(frame.stream)
        self._check_streams()
        self._tell("finish_segments", False)  # another stream's segment, by this frame's

    def idle(self) -> None:
        """No frame came for a while: the segments' clock is read again, before a lost
        stream's end lines are written (they go to the segment current then, not one over)."""
        self._tell("finish_segments", True)
        self._check_streams()

    def _check_streams(self) -> None:
        for stream, source in list(self._open.items()):
            if source.state in ("ended", "failed") and \
                    self._done(stream) >= source.stats.delivered:
                del self._open[stream]
                self._tell("end_stream", stream)
            elif stream not in self._lost and source.state == "reconnecting" and \
                    self._all_written(stream, source.stats):
                self._lost.add(stream)
                self._tell("stream_lost", stream)

    def _tell(self, news: str, *args) -> None:
        for sink in self._sinks:  # a sink of one's own (not a Sink) may not listen
            getattr(sink, news, _ignored)(*args)

    def _all_written(self, stream: int, stats) -> bool:
        """Every frame read before the outage was delivered (or dropped) and written: a frame
        still waiting at the source would come after the tracks' end."""
        counts = stats.as_dict()  # one consistent snapshot
        return counts["read"] == counts["delivered"] + counts["dropped"] + counts["sampled_out"] and \
            self._done(stream) >= counts["delivered"]
