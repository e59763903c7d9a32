"""Cameras by index (0, 1, ...) or device path (/dev/video0) through OpenCV (V4L2 on Linux)."""
from __future__ import annotations

import time
from typing import Optional, Union

import cv2

from engine.errors import SourceError

from .live import LiveSource, Reconnect


class CameraSource(LiveSource):
    """A live camera; `width` / `height` / `fps` request a capture mode (the driver may refuse)."""

    kind = "camera"

    def __init__(self, device: Union[int, str], width: Optional[int] = None,
                 height: Optional[int] = None, fps: Optional[float] = None,
                 reconnect: Optional[Reconnect] = Reconnect(retries=3)):
        super().__init__(f"camera:{device}", reconnect)
        self.device = device
        self.request = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height,
                        cv2.CAP_PROP_FPS: fps}
        self._cap = None
        self._t0 = None

    @property
    def fps(self) -> Optional[float]:
        cap = self._cap
        return (float(cap.get(cv2.CAP_PROP_FPS)) or None) if cap is not None else None

    def _connect(self) -> None:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open camera {self.device!r} (no such device, or busy)")
        for prop, value in self.request.items():
            if value:
                cap.set(prop, value)
        self._cap = cap
        self._t0 = time.monotonic()

    def _read(self):
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return image, time.monotonic() - self._t0  # cameras have no PTS: time since opening

    def _disconnect(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
