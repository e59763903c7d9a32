"""`dbrt run --segment-time SECONDS [--keep-segments N]`: the results files (detections, events,
each stream's annotated video) as one file per segment of wall-clock time, the oldest deleted
beyond N (pipeline/segments.py), their flags, their list in report.json and the summary line."""
from __future__ import annotations

from pathlib import Path

from ._validate import at_least


def add_segment_arguments(group) -> None:
    group.add_argument("--segment-time", type=at_least(1), metavar="SECONDS",
                       help="start new results files every SECONDS of wall-clock time (UTC, on "
                            "multiples of SECONDS: 3600 = every full hour): "
                            "detections-<start>.jsonl, events-<start>.jsonl and each stream's "
                            "annotated-<start>.mp4, <start> as 20261207T170000Z; a run that "
                            "never ends (cameras, streams) then fills no disk with --keep-segments")
    group.add_argument("--keep-segments", type=at_least(1), metavar="N",
                       help="with --segment-time: keep the newest N segments of each file in "
                            "the output folder, the one being written among them, and delete "
                            "older ones, an earlier run's too (default: keep all)")


def check_segment_flags(args) -> None:
    """--keep-segments alone is refused (before the sources open)."""
    from engine.errors import DbrtError

    if args.keep_segments is not None and args.segment_time is None:
        raise DbrtError("--keep-segments N keeps the newest N segments of --segment-time; "
                        "add --segment-time SECONDS or drop --keep-segments")


def check_segment_sources(args, sources) -> None:
    """Segments of time split what a camera or stream writes without end; a run over images
    writes each once (annotated images are files of their own), so images alone are refused."""
    from engine.errors import DbrtError

    if args.segment_time is not None and all(s.kind == "images" for s in sources):
        raise DbrtError("--segment-time splits the results of videos, streams and cameras by "
                        "time; the sources are images: drop --segment-time")


def run_segments(args, inputs=()):
    """The run's `Segments`, shared by all its results files (one clock), or None; it never
    deletes one of the run's `inputs` (an earlier segment given as a source)."""
    if args.segment_time is None:
        return None
    from pipeline.segments import Segments

    return Segments(args.segment_time, keep=args.keep_segments, spare=inputs)


def results_named(outputs: dict, out: Path) -> str:
    """The results files of the summary's last line: `out/detections.jsonl, out/events.jsonl`,
    or for a segmented run `out/detections-<UTC start>.jsonl (7 segments), ...`, how long they
    are and what was kept; the count of older segments deleted is of all the run's segmented
    files (videos too), said once, after the last."""
    jsonl, events = outputs.get("jsonl"), outputs.get("events")
    if "segments" not in outputs:
        return f"{jsonl}" + (f", {events}" if events else "")
    told = outputs["segments"]
    kept = f", the newest {told['keep']} kept" if told["keep"] else ""
    count = told["removed"]
    removed = (f", {count} older segment file{'' if count == 1 else 's'} of all kinds removed"
               if count else "")
    series = [(jsonl, "detections.jsonl")] + ([(events, "events.jsonl")] if events is not None else [])
    named = [f"{out / Path(name).stem}-<UTC start>{Path(name).suffix} ({len(files)} "
             f"segment{'' if len(files) == 1 else 's'}" for files, name in series]
    return "), ".join(named) + f", every {told['seconds']} s{kept}{removed})"
