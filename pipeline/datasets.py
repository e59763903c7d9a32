"""Text-detection datasets for evaluation: images plus ground-truth polygons and "do not care" flags.

Three layouts are read:

* ICDAR 2015 folders: `img_N.jpg` + `gt_img_N.txt` (lines `x1,y1,...,x4,y4,transcription`, UTF-8
  with a BOM; transcription `###` = do not care). MhLiao/DB's copies (`img_N.jpg.txt`, also used
  for its Total-Text conversion with any even number of coordinates) are read the same way.
* Total-Text text files (`poly_gt_imgN.txt`: `x: [[...]], y: [[...]], ornt: [u'c'],
  transcriptions: [u'...']`; orientation or transcription `#` = do not care).
* The JSON list of `../shared/data/realdev/gt.json`:
  `[{"image": "a.jpg", "polygons": [[[x, y], ...], ...], "ignore": [bool, ...]}]`.

`open_dataset(path)` picks the layout; images are read lazily (`Sample.read_image()`). Each
image has a ground truth of its own: two images that find one file (`img_1.jpg`, `img_1.png`), or
a gt.json listing an image twice, are an error (its words would count twice).
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from engine.errors import DbrtWarning, SourceError
from dbnet.files import IMAGE_SUFFIXES
from dbnet.gt_icdar import DONT_CARE_TEXTS, dont_care, parse_icdar_line as icdar_line
from dbnet.gt_json import GroundTruthError, check_coordinates, read_gt_records

FORMATS = ("auto", "json", "icdar2015", "totaltext")


class DatasetError(SourceError):
    """A dataset folder or ground-truth file cannot be read."""


@dataclass(frozen=True)
class GroundTruth:
    """The text instances annotated in one image (frame pixel coordinates)."""

    polygons: Tuple[np.ndarray, ...] = ()
    ignore: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    texts: Tuple[str, ...] = ()

    def __post_init__(self):
        polys = tuple(np.asarray(p, np.float32).reshape(-1, 2) for p in self.polygons)
        ignore = np.asarray(self.ignore, bool).reshape(-1)
        texts = tuple(self.texts) or ("",) * len(polys)
        if not len(polys) == len(ignore) == len(texts):
            raise DatasetError(f"ground truth has {len(polys)} polygons, {len(ignore)} ignore flags "
                               f"and {len(texts)} texts")
        object.__setattr__(self, "polygons", polys)
        object.__setattr__(self, "ignore", ignore)
        object.__setattr__(self, "texts", texts)

    def __len__(self) -> int:
        return len(self.polygons)

    @property
    def care_count(self) -> int:
        return int((~self.ignore).sum())


@dataclass(frozen=True)
class Sample:
    name: str
    image_path: Path
    gt: GroundTruth
    gt_path: Optional[Path] = None  # the file its ground truth was read from

    def read_image(self) -> np.ndarray:
        """The image as HxWx3 uint8 BGR."""
        import cv2

        image = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {self.image_path}")
        return image


@dataclass(frozen=True)
class Dataset:
    name: str
    format: str
    samples: Tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def head(self, n: Optional[int]) -> "Dataset":
        """The first `n` samples (all when n is None)."""
        return self if n is None else Dataset(self.name, self.format, self.samples[:n])

    @property
    def polygon_count(self) -> int:
        return sum(len(s.gt) for s in self.samples)


# -- ground-truth file parsers --------------------------------------------------------------

def parse_icdar_line(line: str, n_coords: Optional[int] = 8) -> Tuple[np.ndarray, str]:
    """dbnet.gt_icdar's, its error a DatasetError."""
    try:
        return icdar_line(line, n_coords)
    except GroundTruthError as exc:
        raise DatasetError(str(exc)) from None


def parse_icdar_gt(text: str, n_coords: Optional[int] = 8) -> GroundTruth:
    polys, texts, ignore = [], [], []
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        if line.strip():
            try:
                points, transcription = parse_icdar_line(line, n_coords)
            except DatasetError as exc:  # as training names it (export.train.data)
                raise DatasetError(f"line {number}: {exc}") from None
            polys.append(points)
            ignore.append(dont_care(transcription, official=n_coords == 8))
            texts.append(transcription.strip())
    return GroundTruth(tuple(polys), ignore, tuple(texts))


_TOTALTEXT_RECORD = re.compile(
    r"x:\s*\[\[([^\]]*)\]\],\s*y:\s*\[\[([^\]]*)\]\],\s*ornt:\s*\[u?(['\"])(.*?)\3\],"
    r"\s*transcriptions:\s*\[u?(['\"])(.*?)\5\]", re.DOTALL)


def parse_totaltext_gt(text: str) -> GroundTruth:
    """Total-Text's text format; records may wrap over several lines."""
    polys, texts, ignore = [], [], []
    for match in _TOTALTEXT_RECORD.finditer(text.lstrip("\ufeff")):
        xs = np.array(match.group(1).replace(",", " ").split(), np.float64)
        ys = np.array(match.group(2).replace(",", " ").split(), np.float64)
        if len(xs) != len(ys) or len(xs) < 3:
            raise DatasetError(f"Total-Text record with {len(xs)} x and {len(ys)} y values")
        try:
            check_coordinates(np.concatenate([xs, ys]))
        except GroundTruthError as exc:
            raise DatasetError(f"Total-Text record {len(polys) + 1}: {exc}") from None
        transcription = match.group(6)
        polys.append(np.stack([xs, ys], axis=1))
        texts.append(transcription)
        ignore.append(match.group(4) == "#" or transcription in DONT_CARE_TEXTS)
    if not polys and text.strip():
        raise DatasetError("no Total-Text records (x: [[...]], y: [[...]], ornt, transcriptions) found")
    return GroundTruth(tuple(polys), ignore, tuple(texts))


def read_gt_file(path: Path, fmt: str = "auto") -> GroundTruth:
    """Parse one ground-truth text file (ICDAR 2015, MhLiao's copies, or Total-Text)."""
    try:
        text = _gt_text(Path(path))
    except OSError as exc:
        raise DatasetError(f"cannot read ground truth {path}: {exc.strerror}") from exc
    try:
        if fmt == "totaltext" or (fmt == "auto" and "x: [[" in text):
            return parse_totaltext_gt(text)
        official_icdar = fmt == "icdar2015" or Path(path).name.startswith("gt_")
        return parse_icdar_gt(text, 8 if official_icdar else None)
    except DatasetError as exc:
        raise DatasetError(f"{path}{', ' if str(exc).startswith('line ') else ': '}{exc}") from None


def _gt_text(path: Path) -> str:
    """A ground-truth file's text. One that is not UTF-8 (a Latin-1 'café') is read with its
    undecodable bytes replaced, and said: such a word can never count as read right."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.warn(f"{path} is not UTF-8 (byte {exc.start}: {data[exc.start]:#04x}); its "
                      "undecodable characters are replaced by U+FFFD, so words holding them "
                      "can never count as read right: save it as UTF-8", DbrtWarning, stacklevel=3)
        return data.decode("utf-8-sig", errors="replace")


# -- folder layouts -------------------------------------------------------------------------

def _natural_key(path: Path):
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def _images_in(folder: Path) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                  key=_natural_key)


def _gt_candidates(image: Path) -> Tuple[str, ...]:
    return (f"gt_{image.stem}.txt", f"{image.name}.txt", f"poly_gt_{image.stem}.txt", f"{image.stem}.txt")


def _find_gt(image: Path, gt_dirs: Sequence[Path]) -> Optional[Path]:
    for folder in gt_dirs:
        for name in _gt_candidates(image):
            if (folder / name).is_file():
                return folder / name
    return None


def _split_folders(root: Path) -> Tuple[Path, List[Path]]:
    """(image folder, ground-truth folders) of a dataset root: images either in the root or in
    a sub-folder named like *img*/*image*; ground truth in the root or a *gt*/*groundtruth* one."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    image_dir = root
    if not _images_in(root):
        image_dirs = [d for d in subdirs if ("img" in d.name.lower() or "image" in d.name.lower())
                      and _images_in(d)]
        if not image_dirs:
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root} or an images sub-folder")
        image_dir = image_dirs[0]
    gt_dirs = [d for d in subdirs if "gt" in d.name.lower() or "groundtruth" in d.name.lower()]
    return image_dir, [root, image_dir, *gt_dirs]


def read_folder_dataset(root: Path, gt_dir: Optional[Path] = None, fmt: str = "auto") -> Dataset:
    """ICDAR 2015 / Total-Text style folder: every image needs a ground-truth text file."""
    root = Path(root)
    image_dir, gt_dirs = _split_folders(root)
    if gt_dir is not None:
        gt_dirs = [Path(gt_dir)]
    samples, missing, used = [], [], {}
    for image in _images_in(image_dir):
        gt_path = _find_gt(image, gt_dirs)
        if gt_path is None:
            missing.append(image.name)
            continue
        if gt_path in used:  # img_1.jpg and img_1.png: one annotation would count twice
            raise DatasetError(f"{used[gt_path]} and {image.name} in {image_dir} both take their "
                               f"ground truth from {gt_path}: keep the annotated one, or give "
                               f"each its own ({used[gt_path]}.txt, {image.name}.txt)")
        used[gt_path] = image.name
        samples.append(Sample(image.name, image, read_gt_file(gt_path, fmt), gt_path))
    if missing:
        raise DatasetError(f"{len(missing)} image(s) in {image_dir} have no ground-truth file "
                           f"(e.g. {missing[0]}: looked for {', '.join(_gt_candidates(Path(missing[0])))})")
    _warn_unused_gt(gt_dirs, used)
    kind = fmt if fmt != "auto" else _guess_kind(samples)
    return Dataset(root.resolve().name, kind, tuple(samples))  # ".": its folder's name


def _looks_like_gt(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".txt") and (name.startswith(("gt_", "poly_gt_"))
                                      or Path(name[:-4]).suffix in IMAGE_SUFFIXES)


def _warn_unused_gt(gt_dirs: Sequence[Path], used: Collection[Path]) -> None:
    """Ground-truth files without an image are left out of the score: said, since the recall
    is then over fewer words than the user annotated (an image not copied, a renamed one)."""
    unused = sorted({p for d in dict.fromkeys(gt_dirs) for p in d.iterdir()  # root may be listed twice
                     if p.is_file() and _looks_like_gt(p) and p not in used}, key=_natural_key)
    if unused:
        warnings.warn(f"{len(unused)} ground-truth file(s) have no image and are not scored "
                      f"(e.g. {unused[0]})", DbrtWarning, stacklevel=3)


def _guess_kind(samples: Sequence[Sample]) -> str:
    quads = all(len(p) == 4 for s in samples for p in s.gt.polygons)
    return "icdar2015" if quads else "totaltext"


def read_json_dataset(path: Path, images_dir: Optional[Path] = None) -> Dataset:
    """The realdev JSON list; images next to the JSON or in its `images/` folder."""
    path = Path(path)
    try:
        records = read_gt_records(path)
    except GroundTruthError as exc:
        raise DatasetError(f"dataset JSON {path}: {exc}") from exc
    folders = [Path(images_dir)] if images_dir else [path.parent / "images", path.parent]
    sources = path.parent / "SOURCES.json"
    transcriptions = _sources_texts(sources)
    _check_listed_once(path, records)
    samples = []
    for rec in records:
        name = rec.image
        texts, origin = (rec.texts, path) if rec.texts else (transcriptions.get(name, ()), sources)
        gt = GroundTruth(rec.polygons, rec.ignore, _record_texts(rec, origin, texts))
        short = [k for k, p in enumerate(gt.polygons) if len(p) < 3]
        if short:  # the protocol cannot score them: ignored, but not without a word
            warnings.warn(f"{path}: {name}: polygon(s) {short} have fewer than 3 points and are "
                          "not scored", DbrtWarning, stacklevel=2)
        image = next((f / name for f in folders if (f / name).is_file()), folders[0] / name)
        if not image.is_file():
            raise DatasetError(f"{path}: image {name} not found in {', '.join(map(str, folders))}")
        samples.append(Sample(name, image, gt, path))
    return Dataset(path.resolve().parent.name, "json", tuple(samples))  # "gt.json": its folder's


def _record_texts(rec, origin: Path, texts: Sequence[str]) -> Tuple[str, ...]:
    """The transcriptions of a gt.json record, from `origin` (the gt.json or SOURCES.json), in
    the order of its polygons; () when their count is not the polygons' (which text belongs to
    which word is then unknown), said: --e2e could never count those words as read right."""
    if texts and len(texts) != len(rec.polygons):
        warnings.warn(f"{origin}: {rec.image} has {len(texts)} transcriptions for "
                      f"{len(rec.polygons)} polygons: its transcriptions are left out",
                      DbrtWarning, stacklevel=4)
        return ()
    return tuple(texts)


def _check_listed_once(path: Path, records) -> None:
    """An image listed twice (two annotation files merged) would have its words scored twice."""
    first = {}
    for index, rec in enumerate(records):
        if rec.image in first:
            raise DatasetError(f"{path}: records {first[rec.image]} and {index} are both for image "
                               f"{rec.image}: its words would count twice; keep one record per image")
        first[rec.image] = index


def _sources_texts(path: Path) -> dict:
    """image -> transcriptions from a SOURCES.json next to the gt.json (realdev keeps them
    there, in the order of its polygons); {} when there is none."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(records, list):
        return {}
    return {r["image"]: list(r["texts"]) for r in records
            if isinstance(r, dict) and "image" in r and isinstance(r.get("texts"), list)}


def open_dataset(path, gt_dir: Optional[Path] = None, fmt: str = "auto") -> Dataset:
    """A dataset from a gt.json file, a folder holding gt.json, or an ICDAR / Total-Text folder."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    if gt_dir is not None and not Path(gt_dir).is_dir():
        raise DatasetError(f"ground-truth folder not found: {gt_dir}")
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(f"{path} is a file; pass a dataset folder or a gt.json")
        if fmt not in ("auto", "json"):  # it was read as a gt.json all the same
            raise DatasetError(f"--format {fmt} is for image folders with ground-truth files; "
                               f"{path} is a gt.json: drop --format")
        json_file = path
    elif fmt in ("auto", "json") and (path / "gt.json").is_file():
        json_file = path / "gt.json"
    elif fmt == "json":
        raise DatasetError(f"no gt.json in {path}")
    else:
        json_file = None
    if json_file is not None and gt_dir is not None:
        raise DatasetError(f"{json_file} holds its own ground truth; a separate ground-truth "
                           "folder is for ICDAR / Total-Text image folders")
    dataset = read_json_dataset(json_file) if json_file else read_folder_dataset(path, gt_dir, fmt)
    if not len(dataset):
        raise DatasetError(f"no images in {json_file or path}")
    return dataset
