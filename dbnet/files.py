"""File kinds that every part of dbrt (runtime sources, evaluation datasets, training folders)
reads alike, and the writing of images and files that says which file failed, writes a file
whole, and leaves no empty output folder behind a run that failed."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Sequence

from engine.files import write_whole

# still images OpenCV's imread decodes (the opencv-python wheels include WebP and TIFF)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@contextlib.contextmanager
def naming_the_file(path):
    """An OSError raised inside without a file name gets `path`'s: write() on a full disk says
    only 'No space left on device', not which file it was writing."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


@contextlib.contextmanager
def folder_removed_if_left_empty(folder):
    """Makes `folder` (and missing parents); when the block fails, removes those of them it
    made that are still empty: a run that failed before writing anything leaves no trace."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in made:
            try:
                path.rmdir()  # only an empty folder: anything written there stays
            except OSError:
                break
        raise


def write_text_whole(path, text: str) -> None:
    """`path` gets `text` whole or not at all: written beside it, then renamed, so a process
    killed while writing leaves the earlier file intact, never half of one; an OSError names
    `path`."""
    with naming_the_file(path):
        write_whole(path, text)


def write_image(path, image, params: Sequence[int] = ()) -> None:
    """cv2.imwrite that raises an OSError naming the file where OpenCV returns False (a full
    disk, a folder that cannot be written): ignored, a run reported success with no images."""
    import cv2

    if not cv2.imwrite(str(path), image, list(params)):
        code = errno.ENOSPC if _disk_full(Path(path).parent) else errno.EIO
        why = os.strerror(code) if code == errno.ENOSPC else "OpenCV could not write the image"
        raise OSError(code, why, str(path))


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free == 0
    except OSError:
        return False
