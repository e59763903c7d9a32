"""Training datasets: synthetic scenes made on the fly, ICDAR2015-format folders, text-mask
folders, and a weighted mix of them.

All yield dicts of compact NumPy arrays (a quarter of the bytes of float32 maps, which is what a
GPU run's loader has to move): `image` (S, S, 3) BGR uint8, the DB targets `gt`, `mask`,
`thresh_mask` as uint8 0/1 and `thresh_map` as float16. `model_batch` (export.train.loop) turns
a batch into what the model and the loss take: the image normalised as the model expects (BGR
minus the DB mean, / 255, NCHW float32) and float32 targets, on the training device.
Sample i of a SynthDataset depends only on (seed, i): runs are reproducible whatever the
number of DataLoader workers.

ICDAR2015 folder layout (either works): `DIR/img_1.jpg` + `DIR/gt_img_1.txt`, or
`DIR/images/img_1.jpg` + `DIR/gts/gt_img_1.txt` (also `DIR/gt/`). Each gt line is
`x1,y1,x2,y2,x3,y3,x4,y4,transcription`; transcription `###` marks a "do not care" word.
A `gt.json` (`[{"image", "polygons", "ignore"}]`) in DIR is read instead when present.

Mask folder layout: `DIR/NAME.jpg` + `DIR/NAME_mask.png`, a binary mask of the SHRUNK word
regions (DB's probability target already; no polygons, no do-not-care marks). Those samples
train the probability and binary maps only: the threshold map's target is defined on the
border band of each word's full polygon, which a shrunk mask does not give, so their
`thresh_mask` is zero and the threshold branch learns from the polygon sources of the mix.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from engine.errors import DbrtError
from dbnet.files import IMAGE_SUFFIXES
from dbnet.gt_icdar import dont_care, parse_icdar_line
from dbnet.gt_json import GroundTruthError, read_gt_records
from dbnet.spec import DB_MEAN_BGR

from ..synth.scene import SceneConfig, make_scene
from .augment import DB_PAPER, AugmentConfig, augment
from .labels import SHRINK_RATIO, THRESH_MIN, make_targets



def normalise(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR uint8 -> (3, H, W) float32, DB normalisation, in one OpenCV pass
    (NumPy's subtract / divide / transpose copies took ~5 ms a 640 px crop)."""
    return cv2.dnn.blobFromImage(image, 1 / 255.0, mean=tuple(DB_MEAN_BGR), swapRB=False)[0]


def compact(targets: dict, image: np.ndarray) -> dict:
    """make_targets' float32 maps + the uint8 crop -> one compact training sample."""
    sample = {k: targets[k].astype(np.uint8) for k in ("gt", "mask", "thresh_mask")}
    sample["thresh_map"] = targets["thresh_map"].astype(np.float16)
    sample["image"] = np.ascontiguousarray(image)
    return sample


def make_sample(rng, image, polygons, ignore, crop: int, aug: AugmentConfig,
                shrink_ratio: float = SHRINK_RATIO) -> dict:
    image, polygons, ignore = augment(rng, image, polygons, ignore, crop, aug)
    return compact(make_targets(polygons, ignore, crop, crop, shrink_ratio=shrink_ratio), image)


class SynthDataset:
    """`length` synthetic training samples; sample i is made from seed (seed, i).

    `scene` is a SceneConfig or a function rng -> SceneConfig (a mix, `scene_sampler`)."""

    def __init__(self, length: int, crop: int = 320, seed: int = 0, scene_size: int = 0,
                 scene=SceneConfig(), aug: AugmentConfig = AugmentConfig(),
                 shrink_ratio: float = SHRINK_RATIO):
        self.length, self.crop, self.seed = length, crop, seed
        self.scene_size = scene_size or int(crop * 1.25)
        self.scene, self.aug, self.shrink_ratio = scene, aug, shrink_ratio

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng((self.seed, i))
        config = self.scene(rng) if callable(self.scene) else self.scene
        scene = make_scene(rng, self.scene_size, self.scene_size, config)
        return make_sample(rng, scene.image, scene.polygons, [False] * len(scene.polygons),
                           self.crop, self.aug, self.shrink_ratio)


def _read_icdar_txt(path: Path) -> Tuple[List[np.ndarray], List[bool]]:
    """Read as `dbrt eval` reads it (dbnet.gt_icdar): a line of coordinates only is a word,
    "###" a do-not-care one, a line that is neither an error naming it."""
    polys, ignore = [], []
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            points, transcription = parse_icdar_line(line, 8)
        except GroundTruthError as exc:
            raise DbrtError(f"{path}, line {number}: {exc}") from None
        polys.append(points)
        ignore.append(dont_care(transcription))
    return polys, ignore


def icdar_gt_path(root: Path, image: Path) -> Path:
    for folder in (image.parent, root / "gts", root / "gt"):
        candidate = folder / f"gt_{image.stem}.txt"
        if candidate.exists():
            return candidate
    raise DbrtError(f"no ground truth gt_{image.stem}.txt for {image} (see ICDAR2015 layout)")


def read_icdar_folder(root) -> List[Tuple[Path, List[np.ndarray], List[bool]]]:
    """[(image path, polygons, ignore flags)] of an ICDAR2015-format folder (or gt.json)."""
    root = Path(root)
    if not root.is_dir():
        raise DbrtError(f"dataset folder not found: {root}")
    if (root / "gt.json").exists():
        return _read_gt_json(root / "gt.json")
    folder = root / "images" if (root / "images").is_dir() else root
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DbrtError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    _check_every_gt_has_its_image(root, folder, images)
    return [(img, *_read_icdar_txt(icdar_gt_path(root, img))) for img in images]


def _check_every_gt_has_its_image(root: Path, folder: Path, images: List[Path]) -> None:
    """A gt_NAME.txt without its image (one not copied, a renamed one) would be left out of
    training without a word, its words never learnt: an error naming it, as a mask folder's
    mask without its photo is."""
    stems = {image.stem for image in images}
    for gt_folder in sorted({folder, root / "gts", root / "gt"}):
        for gt in sorted(gt_folder.glob("gt_*.txt")) if gt_folder.is_dir() else ():
            if gt.stem[len("gt_"):] not in stems:
                raise DbrtError(f"ground truth {gt} has no image {gt.stem[len('gt_'):]}.jpg (or "
                                f"another image suffix) in {folder}")


def _check_readable(paths) -> None:
    """Every file is one OpenCV can decode (by its header): an unreadable one otherwise
    stops the run only when training first samples it, many steps in."""
    for path in paths:
        if not cv2.haveImageReader(str(path)):
            raise DbrtError(f"cannot read image {path}: not an image OpenCV can decode, or unreadable")


def _read_gt_json(path: Path) -> List[Tuple[Path, List[np.ndarray], List[bool]]]:
    """A gt.json's [{image, polygons, ignore?}] records, every image checked to exist up front
    (a missing one would otherwise surface only when training first samples it)."""
    base = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    try:
        items = [(base / r.image, list(r.polygons), list(r.ignore)) for r in read_gt_records(path)]
    except GroundTruthError as exc:
        raise DbrtError(f"cannot read training ground truth {path}: {exc}") from exc
    missing = [str(img) for img, _, _ in items if not img.is_file()]
    if missing:
        raise DbrtError(f"{path}: {len(missing)} image(s) not found, e.g. {missing[0]}")
    if not items:
        raise DbrtError(f"{path} lists no images")
    return items


class _FolderDataset:
    """`length` random crops of a folder's items, cycling through them; a subclass names the
    folder reader as `read`."""

    def __init__(self, root, length: int, crop: int = 640, seed: int = 0,
                 aug: AugmentConfig = DB_PAPER, shrink_ratio: float = SHRINK_RATIO):
        self.items = self.read(root)
        _check_readable(path for item in self.items for path in item if isinstance(path, Path))
        self.length, self.crop, self.seed, self.aug = length, crop, seed, aug
        self.shrink_ratio = shrink_ratio  # polygon folders; a mask folder's masks are shrunk already

    def __len__(self) -> int:
        return self.length


class IcdarDataset(_FolderDataset):
    """Random crops of an ICDAR2015-format folder."""

    read = staticmethod(read_icdar_folder)

    def __getitem__(self, i: int) -> dict:
        path, polys, ignore = self.items[i % len(self.items)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DbrtError(f"cannot read image {path}")
        rng = np.random.default_rng((self.seed, i))
        return make_sample(rng, image, polys, ignore, self.crop, self.aug, self.shrink_ratio)


MASK_SUFFIX = "_mask.png"


def is_mask_folder(root) -> bool:
    return any(Path(root).glob(f"*{MASK_SUFFIX}"))


def read_mask_folder(root) -> List[Tuple[Path, Path]]:
    """[(image path, mask path)] of a mask folder: every photo (any image suffix, any case, as
    ICDAR folders) with its NAME_mask.png; a photo without one, or a mask without its photo, is
    an error naming it (one was dropped without a word, a .JPG photo called missing)."""
    root = Path(root)
    masks = {m.name[:-len(MASK_SUFFIX)]: m for m in root.glob(f"*{MASK_SUFFIX}")
             if not m.name.startswith(".")}
    images: dict = {}
    for path in sorted(root.iterdir()):  # not hidden files (macOS ._NAME copies)
        if (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.endswith(MASK_SUFFIX)
                and not path.name.startswith(".")):
            if path.stem in images:
                raise DbrtError(f"photos {images[path.stem].name} and {path.name} in {root} "
                                f"would share the mask {path.stem}{MASK_SUFFIX}")
            images[path.stem] = path
    if not masks:
        raise DbrtError(f"no *{MASK_SUFFIX} files in {root}")
    for stem in sorted(set(masks) ^ set(images)):
        if stem in masks:
            raise DbrtError(f"mask {masks[stem]} has no photo {stem}.jpg (or another image "
                            "suffix) next to it")
        raise DbrtError(f"photo {images[stem]} has no mask {stem}{MASK_SUFFIX} next to it")
    return [(images[stem], masks[stem]) for stem in sorted(masks)]


def _mask_boxes(mask: np.ndarray) -> List[np.ndarray]:
    """Bounding quads of the mask's components: where the crop should look for text."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for x, y, w, h, _ in stats[1:n]:
        boxes.append(np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]]))
    return boxes


def mask_sample(mask: np.ndarray, image: np.ndarray) -> dict:
    """A compact sample from a shrunk-text mask: probability target = the mask, no threshold
    target (made in the compact types directly: no float32 maps to convert)."""
    shape = mask.shape
    return {"gt": (mask > 0).view(np.uint8), "mask": np.ones(shape, np.uint8),
            "thresh_map": np.full(shape, THRESH_MIN, np.float16),
            "thresh_mask": np.zeros(shape, np.uint8), "image": np.ascontiguousarray(image)}


def read_masked_photo(image_path: Path, mask_path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(BGR image, 0/1 uint8 mask at the image's size) of one photo of a mask folder."""
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if image is None or mask is None:
        raise DbrtError(f"cannot read {image_path if image is None else mask_path}")
    if mask.shape != image.shape[:2]:
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return image, (mask > 127).astype(np.uint8)


class MaskDataset(_FolderDataset):
    """Random crops of a mask folder (see the module docstring)."""

    read = staticmethod(read_mask_folder)

    def __getitem__(self, i: int) -> dict:
        image, mask = read_masked_photo(*self.items[i % len(self.items)])
        boxes = _mask_boxes(mask)
        rng = np.random.default_rng((self.seed, i))
        image, _, _, (mask,) = augment(rng, image, boxes, [False] * len(boxes), self.crop, self.aug,
                                       masks=[mask])
        return mask_sample(mask, image)


def parse_source(spec: str) -> Tuple[str, float]:
    """'synth', 'FOLDER' or either with '=WEIGHT' -> (source, weight)."""
    name, sep, weight = spec.rpartition("=") if "=" in spec else (spec, "", "1")
    try:
        value = float(weight)
    except ValueError:
        raise DbrtError(f"--data {spec!r}: the weight after '=' must be a number") from None
    if not 0 < value < float("inf"):  # NaN fails too; inf made every other source's share 0
        raise DbrtError(f"--data {spec!r}: the weight must be a positive, finite number")
    return name, value


def open_source(name: str, length: int, crop: int, seed: int, scene="default",
                scale: Tuple[float, float] = DB_PAPER.scale, shrink_ratio: float = SHRINK_RATIO):
    """One training source by name: 'synth', a mask folder or an ICDAR2015-format folder; real
    folders get the DB paper's augmentation with the log-uniform size change `scale`; synthetic
    and ICDAR polygons are shrunk by DB's `shrink_ratio` (a mask folder's masks come shrunk)."""
    if name == "synth":
        from ..synth.scene import scene_sampler

        return SynthDataset(length, crop=crop, seed=seed, scene=scene_sampler(scene),
                            shrink_ratio=shrink_ratio)
    if not Path(name).is_dir():
        raise DbrtError(f"--data {name!r}: not 'synth' and not a folder")
    aug = dataclasses.replace(DB_PAPER, scale=tuple(scale))
    if is_mask_folder(name):
        return MaskDataset(name, length, crop=crop, seed=seed, aug=aug)
    return IcdarDataset(name, length, crop=crop, seed=seed, aug=aug, shrink_ratio=shrink_ratio)


class MixedDataset:
    """Sample i comes from source k with probability weight_k / sum(weights); which source and
    which of its samples depend only on (seed, i), so a run is reproducible and resumable."""

    def __init__(self, sources: Sequence, weights: Sequence[float], length: int, seed: int = 0):
        if len(sources) != len(weights) or not sources:
            raise DbrtError("a mixed dataset needs one weight per source")
        p = np.asarray(weights, np.float64)
        if not (np.isfinite(p).all() and (p > 0).all()):
            raise DbrtError(f"mixed dataset weights must be positive, finite numbers, got {list(weights)}")
        self.sources = list(sources)
        p = p / p.max()  # first: the sum of two weights of 1e308 overflows to inf (NaN shares)
        self.cumulative = np.cumsum(p / p.sum())
        self.length, self.seed = length, seed

    def __len__(self) -> int:
        return self.length

    def pick(self, i: int) -> Tuple[int, int]:
        rng = np.random.default_rng((self.seed, i, 7))
        k = int(min(np.searchsorted(self.cumulative, rng.random(), side="right"), len(self.sources) - 1))
        return k, int(rng.integers(0, 2 ** 31 - 1))

    def __getitem__(self, i: int) -> dict:
        k, j = self.pick(i)
        return self.sources[k][j]
