"""A TensorRT logger that keeps the error lines, so failures can be reported in one message,
and forwards warnings to Python logging (`dbrt.tensorrt`)."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("dbrt.tensorrt")

_plugins_lock = threading.Lock()
_plugin_loggers = {}  # tensorrt module -> the plugin library's logger, kept for the process


def capturing_logger(trt):
    """A `trt.ILogger` whose `.errors` lists the ERROR / INTERNAL_ERROR messages seen so far."""
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG,
              severity.VERBOSE: logging.DEBUG}
    failing = (severity.INTERNAL_ERROR, severity.ERROR)

    class _CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, level, msg):
            if level in failing:
                self.errors.append(str(msg))
            log.log(levels.get(level, logging.DEBUG), "%s", msg)

        def last_errors(self, count: int = 3) -> str:
            return " | ".join(self.errors[-count:]) or "no error message from TensorRT"

    return _CapturingLogger()


def init_plugins(trt) -> None:
    """Register TensorRT's plugin library (DeformConv's ModulatedDeformConv2d ...) once per process.

    `init_libnvinfer_plugins` is to be called once, and the plugin library keeps the logger it is
    given in a process-wide pointer that the Python binding does not keep alive: a builder's or
    runtime's own logger would be freed under it, so the plugins get one that is never freed."""
    if not hasattr(trt, "init_libnvinfer_plugins"):
        return
    with _plugins_lock:
        if trt not in _plugin_loggers:
            _plugin_loggers[trt] = capturing_logger(trt)
            trt.init_libnvinfer_plugins(_plugin_loggers[trt], "")
