"""A progress bar for multi-minute TensorRT builds, fed by `trt.IProgressMonitor` (10.0+).

`BuildProgress` is plain Python (tested without TensorRT); `progress_monitor(trt, progress)`
wraps it in the TensorRT interface when the installed TensorRT has one. Older TensorRT (8.6)
reports nothing, so the builder falls back to a heartbeat line with the elapsed time. The same
monitor, attached with or without a bar, is how Ctrl-C / SIGTERM cancels a build (cancel.py).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Dict, List, Optional, TextIO


class BuildProgress:
    """Tracks nested build phases and renders them as one status line."""

    def __init__(self, stream: Optional[TextIO] = None, label: str = "building engine"):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.phases: Dict[str, List[int]] = {}      # name -> [step, num_steps]
        self.order: List[str] = []
        self.cancelled = False
        self.started = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    # -- IProgressMonitor protocol ---------------------------------------------------------
    def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
        self.phases[phase_name] = [0, int(num_steps)]
        self.order.append(phase_name)
        if parent_phase is None and not self._tty:
            self._write(f"{self.label}: {phase_name} ({num_steps} steps)\n")
        self._render()

    def step_complete(self, phase_name: str, step: int) -> bool:
        if phase_name in self.phases:
            self.phases[phase_name][0] = int(step) + 1
        self._render()
        return not self.cancelled          # False asks TensorRT to cancel the build

    def phase_finish(self, phase_name: str) -> None:
        self.phases.pop(phase_name, None)
        if phase_name in self.order:
            self.order.remove(phase_name)
        self._render()

    # -- output ---------------------------------------------------------------------------
    def line(self) -> str:
        parts = [f"{name} {step}/{total}" for name, (step, total) in
                 ((n, self.phases[n]) for n in self.order)]
        return f"{self.label} [{self.elapsed():.0f}s] " + " > ".join(parts)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _render(self) -> None:
        if self._tty:
            self._write("\r\033[K" + self.line()[:200])

    def heartbeat(self, note: str) -> None:
        """One line for TensorRT versions without a progress monitor."""
        self._write(f"{self.label}: {note} [{self.elapsed():.0f}s]\n")

    def done(self, ok: bool) -> None:
        if self._tty:
            self._write("\r\033[K")
        self._write(f"{self.label}: {'done' if ok else 'failed'} in {self.elapsed():.1f}s\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def progress_monitor(trt, progress: Optional[BuildProgress], cancel: Optional[threading.Event] = None):
    """A `trt.IProgressMonitor` forwarding to `progress` (None: shows nothing) that cancels the
    build once `cancel` is set, or None when TensorRT lacks one. Its methods are called on
    TensorRT's threads: they never raise (the C++ interface is noexcept)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self.progress = progress

        def phase_start(self, phase_name, parent_phase, num_steps):
            if progress is not None:
                progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            going = progress.step_complete(phase_name, step) if progress is not None else True
            return going and not (cancel is not None and cancel.is_set())

        def phase_finish(self, phase_name):
            if progress is not None:
                progress.phase_finish(phase_name)

    return _Monitor()


class Heartbeat:
    """Prints an elapsed-time line every `interval` seconds while a silent build runs."""

    def __init__(self, progress: BuildProgress, interval: float = 15.0):
        self.progress = progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbrt-build-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.progress.heartbeat("still building (this TensorRT reports no progress)")

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
