"""Still images: one file, a folder (sorted), a glob pattern, or a list of files."""
from __future__ import annotations

import glob
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np

from engine.errors import SourceError
from dbnet.files import IMAGE_SUFFIXES

from .base import Frame, Source



def is_image_path(text: str) -> bool:
    return text.lower().endswith(IMAGE_SUFFIXES)


def has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def list_images(spec: str) -> List[str]:
    """The image files named by a path, a folder or a glob, sorted; SourceError when none."""
    if has_glob(spec) and not os.path.exists(spec):  # `scan [1].png` names a file
        paths = sorted(p for p in glob.glob(spec, recursive=True) if is_image_path(p))
        if not paths:
            raise SourceError(f"no images match {spec}")
        return paths
    path = Path(spec)
    if path.is_dir():
        paths = sorted(str(p) for p in path.iterdir() if p.is_file() and is_image_path(p.name))
        if not paths:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {spec}")
        return paths
    if not path.exists():
        raise SourceError(f"no such file: {spec}")
    return [str(path)]


class UnreadableImage(SourceError):
    """An image file that cannot be read; `why` is the reason alone (a folder's summary
    counts the reasons)."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def read_image(path: str):
    """BGR uint8 image, or UnreadableImage (a SourceError) naming the file."""
    if not os.path.exists(path):
        raise UnreadableImage(f"no such file: {path}", "no such file")
    if not os.path.isfile(path):
        raise UnreadableImage(f"{path} is a folder, not an image", "a folder, not an image")
    # imdecode: OpenCV's imread fails on TIFFs with EXIF orientation 5-8; otherwise the same
    # decoder, orientation applied
    data = np.fromfile(path, np.uint8)
    if data.size == 0:  # imdecode asserts on an empty buffer instead of returning None
        raise UnreadableImage(f"cannot read image {path} (empty file, 0 bytes)", "empty file, 0 bytes")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:  # a decoder that asserts on a damaged file rather than returning None
        image = None
    if image is None:
        why = "not an image, or unsupported format"
        raise UnreadableImage(f"cannot read image {path} ({why})", why)
    if path.lower().endswith(ALPHA_SUFFIXES):
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
            plain = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            return _on_white(_turned_like(raw, plain, image))
    return image


def unreadable_summary(unreadable: List[tuple], total: int, spec: Optional[str]) -> str:
    """One line for the (path, reason) pairs of a folder's (or glob's; `spec` None: a list's)
    images that could not be read: the reasons found, counted where there are several kinds,
    and the first names."""
    reasons = Counter(why for _, why in unreadable)
    said = (next(iter(reasons)) if len(reasons) == 1
            else "; ".join(f"{n} {why}" for why, n in reasons.most_common()))
    names = ", ".join(path for path, _ in unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
    where = "" if spec is None else f" in {spec}"
    return f"{len(unreadable)} of {total} images{where} could not be read ({said}; skipped): {names}"


def _turned_like(raw: np.ndarray, plain: np.ndarray, oriented: np.ndarray) -> np.ndarray:
    """`raw` turned as OpenCV turned `plain` into `oriented`: it applies a file's EXIF
    orientation when decoding to 3 channels, never to 4 (an image with transparency)."""
    for flip in (False, True):
        for quarter in range(4):
            turn = (lambda a: np.rot90(a[:, ::-1] if flip else a, quarter))
            if turn(plain).shape == oriented.shape and np.array_equal(turn(plain), oriented):
                return np.ascontiguousarray(turn(raw))
    return raw


ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


def _on_white(image: np.ndarray) -> np.ndarray:
    """A BGRA image blended onto white: a transparent PNG's text is often black on transparent
    black, which dropping the alpha channel turns into a black frame."""
    depth = 65535.0 if image.dtype == np.uint16 else 255.0
    alpha = image[:, :, 3:4].astype(np.float32) / depth
    bgr = image[:, :, :3].astype(np.float32) * (255.0 / depth)
    return (bgr * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)


def image_file_runs(specs: Sequence) -> list:
    """`specs` with each run of two or more image files side by side as one ImageSource, as
    the quoted glob is: `dbrt run shots/*.jpg` (the shell's glob) was a source per image, each
    with its decoding thread and waiting frame, in batches of as many frames as images (120
    photos: 17.5 GB against 0.56 GB as a folder). Other specs stay where they are."""
    grouped: list = []
    for spec in specs:
        text = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else None
        if text is None or not _names_an_image_file(text):
            grouped.append(spec)
        elif grouped and isinstance(grouped[-1], list):
            grouped[-1].append(text)
        else:
            grouped.append([text])
    return [(item[0] if len(item) == 1 else ImageSource(item)) if isinstance(item, list) else item
            for item in grouped]


def _names_an_image_file(text: str) -> bool:
    """An image file's name (there or not, as `parse_source` reads it), not a folder or glob."""
    return (is_image_path(text) and not os.path.isdir(text)
            and (os.path.exists(text) or not has_glob(text)))


class ImageSource(Source):
    """Images one after another; each frame's `source` is the image path. `spec`: a file, a
    folder, a glob, or a list of image files (read in its order)."""

    kind = "images"

    def __init__(self, spec: Union[str, os.PathLike, Sequence[str]]):
        files = None if isinstance(spec, (str, os.PathLike)) else [os.fspath(p) for p in spec]
        name = os.fspath(spec) if files is None else (
            ", ".join(files) if len(files) <= 2 else f"{files[0]} ... {files[-1]} ({len(files)} images)")
        super().__init__(name)
        self.spec = name
        self._files = files
        self._paths: Optional[List[str]] = None
        self._closed = threading.Event()

    def open(self) -> "ImageSource":
        if self._paths is None:
            self._paths = (list_images(self.spec) if self._files is None
                           else [path for file in self._files for path in list_images(file)])
        return self

    @property
    def total_frames(self) -> Optional[int]:
        return len(self._paths) if self._paths is not None else None

    @property
    def paths(self) -> List[str]:
        """The image files this source reads, in order."""
        return list(self.open()._paths)

    def __iter__(self) -> Iterator[Frame]:
        """Unreadable files are skipped (and counted) so the others' results are kept; the
        iteration then ends with a SourceError naming them."""
        self.open()
        unreadable, error = [], None
        for index, path in enumerate(self._paths):
            if self._closed.is_set():
                break
            try:
                image = read_image(path)
            except UnreadableImage as exc:
                unreadable.append((path, exc.why))
                error = exc
                self.stats.add(skipped=1)
                self.stats.note(str(exc))
                continue
            self.stats.add(read=1, delivered=1)
            yield Frame(image, index, None, os.path.normpath(path))
        if len(self._paths) == 1 and error is not None:  # one image named: its own error, not '1 of 1'
            raise error
        if unreadable:
            raise SourceError(unreadable_summary(unreadable, len(self._paths),
                                                 self.spec if self._files is None else None))

    def close(self) -> None:
        self._closed.set()
