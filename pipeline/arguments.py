"""What a Pipeline is handed, checked when it is made: a wrong argument is one error naming the
parameter, not an AttributeError in a worker thread once the run has started (a print function
among the sinks, a model path where the Detector goes, a float frame count)."""
from __future__ import annotations

import inspect
import numbers
from typing import Iterable, List, Mapping, Optional, Tuple

DETECTOR_STEPS = ("prepare", "infer", "postprocess", "input_size_for")


def checked_outputs(sinks, callbacks) -> Tuple[list, list]:
    """`sinks` (objects with write(frame, detections)) and `callbacks` (functions), as lists."""
    sinks, callbacks = _as_list(sinks, "sinks"), _as_list(callbacks, "callbacks")
    for sink in sinks:
        if not callable(getattr(sink, "write", None)):
            hint = "; a function goes in callbacks=" if callable(sink) else ""
            raise TypeError(f"sinks: {sink!r} has no write(frame, detections){hint}")
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks: {callback!r} is not callable (a Sink goes in sinks=)")
    return sinks, callbacks


def _as_list(items, name: str) -> list:
    if hasattr(items, "write") or callable(items) or not isinstance(items, Iterable) \
            or isinstance(items, (str, bytes)):
        raise TypeError(f"{name}= takes a list, got {items!r} (one goes in as [{name[:-1]}])")
    return list(items)


def check_detector(detector) -> None:
    missing = [step for step in DETECTOR_STEPS if not callable(getattr(detector, step, None))]
    if missing:
        raise TypeError(f"detector: expected a pipeline.detector.Detector, got "
                        f"{type(detector).__name__} {detector!r:.80} (Detector(model) loads a model)")


def check_numbers(batch, batch_timeout, queue_size, max_frames, sample_fps=None) -> None:
    for name, value, low, optional in (("batch", batch, 0, False), ("queue_size", queue_size, 1, True),
                                       ("max_frames", max_frames, 1, True)):
        if value is None and optional:
            continue
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}{' (or None)' if optional else ''}, "
                             f"got {value!r}")
    if not isinstance(batch_timeout, numbers.Real) or not batch_timeout >= 0:
        raise ValueError(f"batch_timeout must be a number of seconds >= 0, got {batch_timeout!r}")
    if sample_fps is not None and (not isinstance(sample_fps, numbers.Real) or isinstance(sample_fps, bool)
                                   or not 0 < sample_fps < float("inf")):
        raise ValueError(f"sample_fps must be a number of frames per second > 0 (or None), "
                         f"got {sample_fps!r}")


def check_events_have_tracks(sinks: List, tracker: Optional[object]) -> None:
    """A TextEventSink reads the track ids the tracker adds: without one it writes nothing."""
    from .reading.events import TextEventSink
    from .sinks import sinks_within

    if tracker is None and any(isinstance(sink, TextEventSink) for sink in sinks_within(sinks)):
        raise ValueError("sinks: a TextEventSink needs track=True (it writes one line per text "
                         "track, from the ids the tracker adds)")


def checked_source_options(options) -> dict:
    """`source_options` as keywords of pipeline.sources.parse_source: a mapping of its names,
    `reconnect` a Reconnect (reconnect=3, as `--reconnect 3` reads, was an AttributeError
    about 'retries'), `decode_threads` an integer >= 0; the other values their sources check."""
    from .sources import Reconnect, parse_source

    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"source_options= takes a dict of keywords, e.g. dict(reconnect=None), "
                        f"got {options!r}")
    known = [name for name in inspect.signature(parse_source).parameters if name != "spec"]
    for name in options:
        if name not in known:
            raise TypeError(f"source_options: unknown keyword {name!r} (known: {', '.join(known)})")
    reconnect = options.get("reconnect")
    if reconnect is not None and not isinstance(reconnect, Reconnect):
        raise TypeError(f"source_options reconnect= takes a pipeline.sources.Reconnect, e.g. "
                        f"Reconnect(retries=3) (None: no reconnecting), got {reconnect!r}")
    threads = options.get("decode_threads", 0)
    if not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"source_options decode_threads must be an integer >= 0 (0: FFmpeg "
                         f"picks), got {threads!r}")
    return dict(options)
