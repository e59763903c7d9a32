"""The files of a `dbrt run` output folder: the annotated videos' and images' sinks, what this
run wrote (report.json's "outputs"), an earlier run's files this run does not write, and an
annotated video that would be written over a source of the run (refused)."""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

IMAGES_FOLDER = "annotated"  # the annotated images, named as _IMAGE_NAME matches
_IMAGE_NAME = re.compile(r"\d+_\d{5,}_.")  # stream_frame_file name


class SourceRates(Mapping):
    """stream -> its source's frame rate as the source knows it when asked: a stream down when
    the run started learns its rate when it comes up, after the sinks were made (its annotated
    video was made at 25 FPS whatever its rate)."""

    def __init__(self, sources):
        self._sources = {source.stream: source for source in sources}

    def __getitem__(self, stream: int) -> float:
        fps = self._sources[stream].fps
        if not fps:
            raise KeyError(stream)
        return fps

    def __iter__(self):
        return (stream for stream, source in self._sources.items() if source.fps)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def video_names(pipe) -> dict:
    """stream -> the file name of its annotated video"""
    single = len(pipe.sources) == 1
    return {stream: ("annotated.mp4" if single else f"annotated_{stream}_{name}.mp4")
            for stream, name in stream_names(pipe.sources).items()}


def stream_names(sources) -> dict:
    """stream -> the name of a video, stream or camera source in its outputs' names (its
    annotated video's, --restream's {name}): a stream's path without credentials"""
    return {s.stream: _slug(s.name) for s in sources if s.kind != "images"}


def visual_sinks(pipe, out: Path, annotators, ImageSink, VideoSink, codec: str = "libx264",
                 segments=None) -> list:
    images = {s.stream for s in pipe.sources if s.kind == "images"}
    videos = [s for s in pipe.sources if s.kind != "images"]
    names = video_names(pipe)
    sinks = []
    if videos:
        video = VideoSink(lambda f: out / names[f.stream], fps_by_stream=SourceRates(videos),
                          annotators=annotators, live_streams={s.stream for s in videos if s.live},
                          codec=codec, segments=segments)
        sinks.append(_only(video, set(names)))
    if images:
        folder = out / IMAGES_FOLDER
        # the frame's index too: a glob can match the same name in several folders
        sinks.append(_only(ImageSink(lambda f: folder / f"{f.stream}_{f.index:05d}_{Path(f.source).name}",
                                     annotators), images))
    return sinks


def _only(sink, streams: set):
    """Wrap a sink so that it sees only the frames of `streams`."""
    from pipeline.sinks import FilteredSink

    return FilteredSink(sink, lambda frame: frame.stream in streams)


def _slug(name: str) -> str:
    url = urlparse(name)
    if url.scheme and url.netloc:  # a stream: its path's last part, else its host and port
        base = Path(url.path).stem or "_".join(str(p) for p in (url.hostname, url.port) if p)
    else:  # a file ("udp://127.0.0.1:5611" was cut at ".1:5611" as if a suffix)
        base = Path(name).stem or name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)[-40:]


def input_files(pipe) -> list:
    """The local files the sources of `pipe` read (videos, images)."""
    return [path for s in pipe.sources
            for path in (s.paths if s.kind == "images" else [getattr(s, "path", None)]) if path]


def refuse_video_over_input(pipe, out: Path) -> None:
    """DbrtError when an annotated video would be written over a video this run reads
    (dbrt run out/annotated.mp4 -o out): the encoder truncates the file as the decoder reads
    it, which destroys the input and ends the run early."""
    from engine.errors import DbrtError

    inputs = {os.path.realpath(p): p for p in input_files(pipe)}
    for name in video_names(pipe).values():
        source = inputs.get(os.path.realpath(out / name))
        if source is not None:
            raise DbrtError(f"-o {out}: the annotated video {out / name} would be written over "
                            f"the source {source} as it is read; give another -o, or --no-video")


def plain_outputs(pipe, args) -> set:
    """The names of the files this run writes whole, not as segments (`clear_earlier_outputs`
    removes an earlier run's others; segments, a series across runs, only --keep-segments)."""
    if args.segment_time is not None:
        return set()
    return ({"detections.jsonl"} | ({"events.jsonl"} if pipe.tracker is not None else set())
            | set(() if args.no_video else video_names(pipe).values()))


def clear_earlier_outputs(out: Path, ours: set, inputs=()) -> None:
    """Remove the detections, events and videos an earlier run listed in this folder's
    report.json that this run does not write (`ours`: `plain_outputs`; never segments), and the
    annotated images it listed (this run's, named by stream and frame, would overwrite some and
    lie beside the others): they would lie beside this run's results; never one of this run's
    `inputs` (`input_files`: an earlier annotated video or a glob over the folder given as a
    source). Said also under --quiet, which drops the progress line, not the news that files
    were deleted."""
    try:
        earlier = json.loads((out / "report.json").read_text()).get("outputs", {})
        paths = [earlier.get("jsonl"), earlier.get("events"),
                 *dict(earlier.get("videos") or {}).values()]  # segments' lists are skipped
        images = earlier.get("images")
    except (OSError, ValueError, AttributeError, TypeError):
        return  # no earlier report, or not one of ours
    removed, keep = [], {os.path.realpath(p) for p in inputs}
    for name in {Path(p).name for p in paths if isinstance(p, str)} - ours:
        if (out / name).is_file() and os.path.realpath(out / name) not in keep:
            (out / name).unlink()
            removed.append(name)
    if isinstance(images, str):
        count = _clear_annotated_images(out / IMAGES_FOLDER, keep)
        if count:
            removed.append(f"{count} annotated image{'s' if count > 1 else ''}")
    if removed:
        print(f"dbrt run: removed the earlier run's {', '.join(sorted(removed))} from {out}/",
              file=sys.stderr)


def _clear_annotated_images(folder: Path, keep: set) -> int:
    """Delete the images `visual_sinks` wrote into `folder` (no other file, none of `keep`),
    and the folder if that empties it; how many."""
    if not folder.is_dir():
        return 0
    ours = [p for p in folder.iterdir() if p.is_file() and _IMAGE_NAME.match(p.name)
            and os.path.realpath(p) not in keep]
    for path in ours:
        path.unlink()
    if ours and not any(folder.iterdir()):
        folder.rmdir()
    return len(ours)


def outputs_written(pipe, out: Path) -> dict:
    """The files this run wrote (a folder may also hold an earlier run's)."""
    from pipeline.restream import RestreamSink
    from pipeline.sinks import ImageSink, VideoSink

    outputs = dict(jsonl=str(out / "detections.jsonl"), report=str(out / "report.json"))
    if pipe.tracker is not None:
        outputs["events"] = str(out / "events.jsonl")
    for sink in (getattr(s, "sink", s) for s in pipe.sinks):  # inside its stream filter
        if isinstance(sink, VideoSink) and sink.paths:
            outputs["videos"] = {str(stream): str(p) for stream, p in sorted(sink.paths.items())}
        if isinstance(sink, ImageSink) and sink.written:
            outputs["images"] = str(out / IMAGES_FOLDER)
        if isinstance(sink, RestreamSink):
            outputs["restream"] = sink.report()
    return _segment_outputs(outputs, pipe.sinks)


def _segment_outputs(outputs: dict, sinks) -> dict:
    """report.json's outputs of a segmented run: for "jsonl", "events" and each of "videos",
    the list of this run's segments still on disk, oldest first, and "segments": the length,
    how many are kept, how many were deleted (earlier runs' included)."""
    from pipeline.reading.events import TextEventSink
    from pipeline.sinks import JsonlSink, VideoSink

    segments = run_segments_of(sinks)
    if segments is None:
        return outputs
    for sink in (getattr(s, "sink", s) for s in sinks):  # inside its stream filter
        if getattr(sink, "segments", None) is None:
            continue
        if isinstance(sink, JsonlSink):
            outputs["jsonl"] = segments.written(sink.path)
        elif isinstance(sink, TextEventSink):
            outputs["events"] = segments.written(sink.path)
        elif isinstance(sink, VideoSink) and sink.paths:
            outputs["videos"] = {str(stream): segments.written(path)
                                 for stream, path in sorted(sink.paths.items())}
    outputs["segments"] = dict(seconds=segments.seconds, keep=segments.keep,
                               removed=segments.removed)
    return outputs


def run_segments_of(sinks):
    """The run's Segments (shared by its results files), or None."""
    for sink in (getattr(s, "sink", s) for s in sinks):  # inside its stream filter
        if getattr(sink, "segments", None) is not None:
            return sink.segments
    return None
