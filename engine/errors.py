"""Errors that describe a user mistake: the CLI prints them as one line, without a traceback;
and dbrt's warning category."""
import os
import re
import sys
import warnings

# user:password@ up to the authority's last "@": FFmpeg and urllib take a password with an "@"
# in it (`rtsp://admin:p@ss@cam/1`), of which the first "@" alone left the end in clear
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
# camera snapshot URLs carry them as query parameters too (`?user=admin&pwd=...`), as srt://
# URLs their encryption key (`?passphrase=...`)
_SECRET_PARAMS = re.compile(r"([?&](?:pass|passwd|password|passphrase|pwd|token|access_token|apikey|"
                            r"api_key|key|secret|auth|sig|signature)=)[^&#\s]*", re.IGNORECASE)
# and GStreamer pipelines as properties (rtspsrc / souphttpsrc user-pw=, proxy-pw=; srtsrc
# passphrase=), their values quoted as on gst-launch's command line or not
_SECRET_PROPERTIES = re.compile(r"((?:^|(?<=[\s!]))(?:[a-z]+-)?(?:pw|passwd|password|passphrase)=)"
                                r"(?:\"[^\"]*\"|'[^']*'|[^\s'\"!]+)", re.IGNORECASE)


def without_credentials(text: str) -> str:
    """`rtsp://user:secret@cam/1` -> `rtsp://cam/1`, `http://cam/snap?pwd=secret` ->
    `http://cam/snap?pwd=***`, `rtspsrc user-pw=secret` -> `rtspsrc user-pw=***`, also inside a
    message: what errors, the console, result files, viewers, metrics and events show."""
    text = _SECRET_PARAMS.sub(r"\1***", _CREDENTIALS.sub(r"\1", text))
    return _SECRET_PROPERTIES.sub(r"\1***", text)


class DbrtError(Exception):
    """Base class of errors that are reported to the user as one clear line. Passwords in URLs
    never reach the message: whoever logs or shows it (an application's log, a traceback)
    would print them."""

    def __init__(self, *args):
        super().__init__(*(without_credentials(a) if isinstance(a, str) else a for a in args))


class ModelError(DbrtError):
    """The model file is missing or unreadable, or does not fit what it is used for."""


class ShapeError(DbrtError):
    """An input shape is outside what the model or engine accepts."""


class SourceError(DbrtError):
    """A video / image / stream source cannot be opened or read."""


class InferenceFailed(DbrtError):
    """One inference request failed but the backend may recover (a remote server went away or
    timed out): the batch's frames are lost and counted, the run goes on."""


class DbrtWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints one line)."""


_OURS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), part) + os.sep
              for part in ("engine", "pipeline", "export", "dbnet"))


# where a thread's stack begins: a thread of dbrt's own has no caller beneath
_THREAD_MODULES = ("threading", "concurrent.futures.thread")


def warn_caller(message: str, category=DbrtWarning, every_time: bool = False) -> None:
    """warnings.warn pointed at the first line outside dbrt (the caller's `detector.detect(...)`),
    however deep in dbrt it is raised: a fixed stacklevel points inside dbrt on some paths. Said
    from a thread of dbrt's own (a stream's reader, a stage of a run), which has no caller, it
    points at the dbrt line that said it (module `pipeline...`, which a filter can name), not at
    threading.py, and a caller's "error" filter does not raise it there: raised in a run's thread,
    it would end every stream of the run, and reach no caller's `except`.
    `every_time`: shown each time it is said under Python's default filter, which shows a
    warning once per place and text (a stream lost again, in the same words, is news again);
    a caller's "once" filter (`-W once`) still shows each text once."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the frame that called this
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_OURS):
        frame, level = frame.f_back, level + 1
    own_thread = frame is None or frame.f_globals.get("__name__") in _THREAD_MODULES
    if own_thread:
        frame, level = sys._getframe(1), 2
    try:
        if not every_time:
            warnings.warn(message, category, stacklevel=level)
            return
        # no registry: one of our own ({}) made "once" a registry of one warning, shown every
        # time; no module_globals: its loader is asked for the source, which `python -c`'s and
        # stdin's __main__ (BuiltinImporter) answer with ImportError
        warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                               module=frame.f_globals.get("__name__"), registry=None)
    except Warning:
        if not own_thread:
            raise
