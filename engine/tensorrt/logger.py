"""A TensorRT logger that keeps the error lines, so failures can be reported in one message,
and forwards warnings to Python logging (`dbrt.tensorrt`)."""
from __future__ import annotations

import logging

log = logging.getLogger("dbrt.tensorrt")


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
