"""`TextEventSink`: one JSON line per text track when it ends, the line an edge analytics
system stores (far fewer than one line per frame):

    {"stream": 0, "source": "demo.mp4", "track_id": 3, "text": "VALLEY", "confidence": 0.99,
     "first_timestamp": 0.0, "last_timestamp": 2.4, "first_frame": 0, "last_frame": 60,
     "frames": 61, "readings": 61, "polygon": [[94.0, 74.0], ...]}

It reads the `track_id` column the tracking stage adds (and the texts, when the run reads); a
track ends after `lost_frames` frames of its stream without it, when the stream's frame size
changes, or when the sink closes (the run is over).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from ..detections import Detections
from ..sinks import Sink
from ..sources import Frame
from .tracks import TrackBook


class TextEventSink(Sink):
    def __init__(self, path: Union[str, os.PathLike], lost_frames: int = 31, decimals: int = 2):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.decimals = decimals
        self.book = TrackBook(lost_frames)
        self._fh = open(self.path, "w", encoding="utf-8")
        self.lines = 0

    def write(self, frame: Frame, detections: Detections) -> None:
        self._write(self.book.update(frame, detections))

    def _write(self, tracks) -> None:
        for track in tracks:
            self._fh.write(json.dumps(track.to_dict(self.decimals), ensure_ascii=False,
                                      separators=(",", ":")) + "\n")
            self.lines += 1
        if tracks:
            self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._write(self.book.finish())
            finally:
                self._fh.close()
