"""End-to-end scoring (detection + recognition), the ICDAR 2015 "end-to-end" protocol:

* detections and ground truth are matched one-to-one exactly as for detection
  (pipeline.evaluate: IoU > 0.5, detections mostly inside a `###` region ignored, `###` ground
  truth not counted);
* a match is correct when the transcriptions are equal after normalising both the same way
  (surrounding whitespace stripped, case folded), where, as the Robust Reading Competition's
  script allows, the ground truth may also drop one of `!?.:,*"()·[]/'` at its start and / or its
  end (`EXIT.` is read correctly as `EXIT`); other punctuation, accents and inner spaces count;
* a detection whose reading is empty is not an output of the system and is dropped first;
* precision = correct / cared-for detections, recall = correct / cared-for ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .detections import Detections
from .evaluate import AREA_PRECISION_THRESHOLD, IOU_THRESHOLD, ImageEval, SummedScores, evaluate_image


def normalise(text: str) -> str:
    return text.strip().casefold()


EDGE_SPECIALS = '!?.:,*"()·[]/\''  # the RRC script's special characters
EDGE_PUNCTUATION = frozenset(EDGE_SPECIALS)


def transcription_match(truth: str, read: str) -> bool:
    """`read` matches `truth`: equal once normalised, or equal to the truth without one special
    character at its start, its end, or both (the ground truth side only)."""
    truth, read = normalise(truth), normalise(read)
    if truth == read:
        return True
    head = truth[:1] in EDGE_PUNCTUATION and len(truth) > 1
    tail = truth[-1:] in EDGE_PUNCTUATION and len(truth) > 1
    candidates = [truth[1:] if head else None, truth[:-1] if tail else None,
                  truth[1:-1] if head and tail else None]
    return read in [c for c in candidates if c is not None]


def untranscribed(gt) -> int:
    """How many cared-for words of a GroundTruth have no transcription: words no reading can
    match, which would lower the end-to-end recall without a word."""
    return sum(1 for text, ignored in zip(gt.texts, gt.ignore) if not ignored and not text.strip())


@dataclass(frozen=True)
class E2EImage:
    detection: ImageEval
    correct: int
    wrong: Tuple[Tuple[str, str], ...]  # (ground truth, read) of matched boxes read wrongly
    # what the detector found and read, empty readings included (they are not scored)
    detections: Optional[Detections] = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The numbers of the per-image line `dbrt eval --e2e` prints, and the detection's;
        the image's detections and readings as `dbrt run --read` writes them."""
        det = self.detection
        return {"image": det.name, "correct": self.correct, "gt_care": det.gt_care,
                "det_care": det.det_care, "matched": det.matched,
                "wrong": [{"gt": g, "read": r} for g, r in self.wrong],
                **({} if self.detections is None else {"detections": self.detections.to_records()})}


@dataclass(frozen=True)
class E2EResult(SummedScores):
    images: Tuple[E2EImage, ...]

    @property
    def correct(self) -> int:
        return sum(im.correct for im in self.images)

    @property
    def gt_care(self) -> int:
        return sum(im.detection.gt_care for im in self.images)

    @property
    def det_care(self) -> int:
        return sum(im.detection.det_care for im in self.images)

    hits = correct

    def summary(self) -> str:
        return (f"end-to-end precision {self.precision:.4f}  recall {self.recall:.4f}  hmean "
                f"{self.hmean:.4f}  ({self.correct} read correctly, {self.gt_care} ground truth, "
                f"{self.det_care} detections with text, {len(self.images)} images)")

    def to_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "hmean": self.hmean,
                "correct": self.correct, "gt_care": self.gt_care, "det_care": self.det_care,
                "images": len(self.images),
                "wrong": [{"image": im.detection.name, "gt": g, "read": r}
                          for im in self.images for g, r in im.wrong],
                "per_image": [im.to_dict() for im in self.images]}


def e2e_image(gt_polygons: Sequence[np.ndarray], gt_ignore: Sequence[bool],
              gt_texts: Sequence[str], detections: Detections, name: str = "",
              iou: float = IOU_THRESHOLD,
              area_precision: float = AREA_PRECISION_THRESHOLD) -> E2EImage:
    """Score one image; `detections` must carry texts (a Detector that reads)."""
    texts = detections.texts
    if len(texts) != len(detections):
        raise ValueError("end-to-end scoring needs detections with texts (read=True)")
    kept = detections[np.asarray([bool(t.strip()) for t in texts], bool).reshape(-1)]
    result = evaluate_image(gt_polygons, gt_ignore, kept.polygons, name, iou, area_precision)
    read = kept.texts
    correct, wrong = 0, []
    for g, d, _ in result.pairs:
        if transcription_match(gt_texts[g], read[d]):
            correct += 1
        else:
            wrong.append((gt_texts[g], read[d]))
    return E2EImage(result, correct, tuple(wrong), detections)


def evaluate_e2e(detect: Callable[[np.ndarray], Detections], dataset,
                 on_image: Optional[Callable] = None, iou: float = IOU_THRESHOLD,
                 area_precision: float = AREA_PRECISION_THRESHOLD) -> E2EResult:
    """Run `detect(image)` (detections with texts) over a pipeline.datasets.Dataset whose ground
    truth has transcriptions, and score it end to end. `on_image(sample, image, detections,
    e2e_image)` is called after each image."""
    images = []
    for sample in dataset:
        image = sample.read_image()
        dets = detect(image)
        scored = e2e_image(sample.gt.polygons, sample.gt.ignore, sample.gt.texts, dets,
                           sample.name, iou, area_precision)
        images.append(scored)
        if on_image is not None:
            on_image(sample, image, dets, scored)
    return E2EResult(tuple(images))
