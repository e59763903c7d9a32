"""Errors that describe a user mistake: the CLI prints them as one line, without a traceback."""


class DbrtError(Exception):
    """Base class of errors that are reported to the user as one clear line."""


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
