"""Cameras by index (0, 1, ...) or device path (/dev/video0) through OpenCV (V4L2 on Linux)."""
from __future__ import annotations

import time
from typing import Optional, Union

import cv2

from engine.errors import SourceError

from .live import LiveSource, Reconnect


class CameraSource(LiveSource):
    """A live camera; `width` / `height` / `fps` / `fourcc` (a pixel format such as "MJPG")
    request a capture mode. The driver may give another: `mode` is what it gives, reported with
    the source and noted in its events when it differs from the request."""

    kind = "camera"

    def __init__(self, device: Union[int, str], width: Optional[int] = None,
                 height: Optional[int] = None, fps: Optional[float] = None,
                 reconnect: Optional[Reconnect] = Reconnect(retries=3), fourcc: Optional[str] = None):
        super().__init__(f"camera:{device}", reconnect)
        if fourcc is not None and len(fourcc) != 4:
            raise SourceError(f"a pixel format is four characters (e.g. MJPG, YUYV), got {fourcc!r}")
        self.device = device
        self.fourcc = fourcc
        self.request = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height,
                        cv2.CAP_PROP_FPS: fps}
        self.mode: Optional[dict] = None  # width, height, fps, fourcc the camera gives
        self._cap = None
        self._t0 = None

    @property
    def fps(self) -> Optional[float]:
        cap = self._cap
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap is not None else 0.0
        return fps if fps > 0 else None  # V4L2's -1: the driver does not say

    def _connect(self) -> None:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open camera {self.device!r} (no such device, or busy)")
        if self.fourcc:  # first: V4L2 lists sizes and rates per pixel format
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        for prop, value in self.request.items():
            if value:
                cap.set(prop, value)
        self._cap = cap
        if self._t0 is None:  # a reopened camera's times go on from where they were
            self._t0 = time.monotonic()
        self.mode = capture_mode(cap)
        refused = self._refused()
        if refused:
            self.stats.note(f"asked for {refused}; the camera gives {self.mode}")

    def _refused(self) -> dict:
        """The requested settings the camera did not take."""
        asked = dict(width=self.request[cv2.CAP_PROP_FRAME_WIDTH],
                     height=self.request[cv2.CAP_PROP_FRAME_HEIGHT],
                     fps=self.request[cv2.CAP_PROP_FPS], fourcc=self.fourcc)
        given = self.mode
        return {key: value for key, value in asked.items() if value and given[key] is not None and (
            abs(given[key] - value) > 0.5 if key == "fps" else given[key] != value)}

    def describe(self) -> dict:
        return {**super().describe(), "mode": self.mode}

    def _read(self):
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return image, time.monotonic() - self._t0  # cameras have no PTS: time since first opened

    def _disconnect(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def capture_mode(cap) -> dict:
    """What an opened cv2.VideoCapture delivers: width, height, fps, pixel format."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    fourcc = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)) if code > 0 else None
    fps = float(cap.get(cv2.CAP_PROP_FPS))  # 0, or -1 from V4L2, when the driver does not say
    return dict(width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                fps=round(fps, 2) if fps > 0 else None, fourcc=fourcc)
