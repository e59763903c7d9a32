"""The decode stage of a run: a source's frames as the stage's inbox (`source_frames`) and its
step, which stamps each frame with its source's position in the run (`stamp`)."""
from __future__ import annotations

import itertools
import threading
from typing import Callable, Iterator, List, Optional

from .sources import Frame, Source
from .sources.base import first_line
from .stages import Aborted


def source_frames(source: Source, max_frames: Optional[int], draining: threading.Event,
                  failures: List[BaseException]) -> Iterator[Frame]:
    """Up to `max_frames` frames of one source. A source that fails (a truncated file, a lost
    stream) ends like one that finished: the frames it gave still reach the sinks, the other
    sources go on, and its error is added to `failures`, which the run raises at its end."""
    frames = iter(source)
    try:
        yield from (frames if max_frames is None else itertools.islice(frames, max_frames))
        source.state = "ended"
    except Aborted:
        raise
    except Exception as exc:  # noqa: BLE001 - raised by the consumer once the run drained
        source.error = first_line(exc)
        source.state = "failed"
        failures.append(exc)
        source.stats.note(f"error: {exc}")
    finally:
        if source.state in ("up", "reconnecting") or (source.state == "ended" and draining.is_set()):
            source.state = "stopped"  # the run stopped before the source ended
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def stamp(stream: int) -> Callable[[Frame], Frame]:
    """The decode stage's step: a frame learns its source's position in the run (one place)."""
    def stamped(frame: Frame) -> Frame:
        frame.stream = stream
        return frame
    return stamped
