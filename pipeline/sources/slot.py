"""`LatestSlot`: the one-frame mailbox between a live source's reader thread and the run, where
the newest frame wins (see live.py)."""
from __future__ import annotations

import threading

from ..stages import END


class LatestSlot:
    """A one-frame mailbox: `put` overwrites (returning True when it dropped an unread frame,
    and calling `on_drop`), or with `overwrite=False` waits until the last frame was taken;
    `put(END)` or `finish()` finishes it, after which a put frame is dropped the same way;
    `get` waits for a frame or for the producer to finish."""

    def __init__(self, overwrite: bool = True, on_drop=None):
        self._cond = threading.Condition()
        self._item = None
        self._done = False
        self.overwrite = overwrite
        self._on_drop = on_drop

    def put(self, item) -> bool:
        if item is END:
            self.finish()
            return False
        dropped = self._replace(item)
        if dropped and self._on_drop is not None:
            self._on_drop()
        return dropped

    def _replace(self, item) -> bool:
        with self._cond:
            while not self.overwrite and self._item is not None and not self._done:
                self._cond.wait(0.1)
            if self._done:  # a frame read while the consumer stopped: nobody will take it
                return True
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def keep_every(self) -> None:
        """From now on wait for the consumer rather than overwrite (a file's frames)."""
        with self._cond:
            self.overwrite, self._on_drop = False, None

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def get(self, timeout: float = 0.1):
        """The newest item, or None when finished and empty; waits while empty and running."""
        with self._cond:
            while self._item is None and not self._done:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def take(self):
        """The waiting item (None if none), without waiting."""
        with self._cond:
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        return int(self._item is not None)
