"""The ICDAR 2015 detection protocol on arbitrary polygons, as MhLiao/DB's evaluator applies it.

Per image:
1. Polygons that are not simple (self-intersecting, fewer than 3 distinct points, zero area)
   are dropped, ground truth and detections alike.
2. A detection whose area lies mostly inside one "do not care" ground-truth polygon
   (intersection / detection area > `area_precision`, 0.5) is ignored: neither a hit nor a
   false alarm.
3. One-to-one matching: ground truth in order, then detections in order, the first pair of
   unmatched, cared-for polygons with IoU > `iou` (0.5) is a match. Like the reference this is
   greedy, not an optimal assignment, and the comparisons are strict (IoU exactly 0.5 misses).

Recall = matches / cared-for ground truth, precision = matches / cared-for detections, summed
over all images for the overall numbers; hmean is their harmonic mean. An image with no cared-for
ground truth has recall 1 and precision 1 (0 when it has cared-for detections), as in the reference.
Recall is also broken down by word height (the short side of a ground-truth polygon's
minimum-area rectangle, image pixels): `EvalResult.recall_by_height`; misses and false alarms
by what went wrong (pipeline.eval_errors): `EvalResult.error_counts`.

Polygon areas and intersections: pipeline.polygons (pyclipper, no shapely).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .detections import Detections
from .eval_errors import (FALSE_ALARM_KINDS, MISS_KINDS, count_kinds, errors_line, false_alarm_kind,
                          miss_kind)
from .polygons import (bounding_boxes, boxes_overlap_matrix, is_simple_polygon,
                       overlapping_intersection_area, polygon_area)

IOU_THRESHOLD = 0.5
AREA_PRECISION_THRESHOLD = 0.5
HEIGHT_EDGES = (8.0, 16.0, 32.0)  # word-height ranges of recall_by_height, image pixels


# -- results ------------------------------------------------------------------------------------

def _hmean(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ImageEval:
    """Protocol outcome of one image. Indices refer to the caller's gt / detection order;
    `detections`, when scored from a Detections, are the boxes the detection indices point at."""

    name: str
    gt_count: int
    det_count: int
    pairs: Tuple[Tuple[int, int, float], ...]   # (gt index, det index, IoU)
    gt_dont_care: Tuple[int, ...]
    det_dont_care: Tuple[int, ...]
    gt_invalid: Tuple[int, ...]
    det_invalid: Tuple[int, ...]
    gt_heights: Tuple[float, ...] = ()  # per ground truth: its word height (see word_height)
    # per missed word / false alarm, in the order of `missed` / `false_alarms`: what went wrong
    # (pipeline.eval_errors); None when the image was scored without explaining (tuning)
    miss_kinds: Optional[Tuple[str, ...]] = None
    false_alarm_kinds: Optional[Tuple[str, ...]] = None
    detections: Optional[Detections] = field(default=None, compare=False, repr=False)

    @property
    def matched(self) -> int:
        return len(self.pairs)

    @property
    def gt_care(self) -> int:
        return self.gt_count - len(self.gt_invalid) - len(self.gt_dont_care)

    @property
    def det_care(self) -> int:
        return self.det_count - len(self.det_invalid) - len(self.det_dont_care)

    @property
    def recall(self) -> float:
        return 1.0 if self.gt_care == 0 else self.matched / self.gt_care

    @property
    def precision(self) -> float:
        if self.gt_care == 0:
            return 0.0 if self.det_care > 0 else 1.0
        return 0.0 if self.det_care == 0 else self.matched / self.det_care

    @property
    def hmean(self) -> float:
        return _hmean(self.precision, self.recall)

    @property
    def missed(self) -> Tuple[int, ...]:
        """Cared-for ground truth without a match."""
        skip = {p[0] for p in self.pairs} | set(self.gt_dont_care) | set(self.gt_invalid)
        return tuple(i for i in range(self.gt_count) if i not in skip)

    @property
    def false_alarms(self) -> Tuple[int, ...]:
        """Cared-for detections without a match."""
        skip = {p[1] for p in self.pairs} | set(self.det_dont_care) | set(self.det_invalid)
        return tuple(i for i in range(self.det_count) if i not in skip)

    def to_dict(self) -> dict:
        return {"image": self.name, "precision": self.precision, "recall": self.recall,
                "hmean": self.hmean, "gt_care": self.gt_care, "det_care": self.det_care,
                "matched": self.matched,
                "pairs": [{"gt": g, "det": d, "iou": round(iou, 4)} for g, d, iou in self.pairs],
                "missed": list(self.missed), "false_alarms": list(self.false_alarms),
                "gt_dont_care": list(self.gt_dont_care), "det_dont_care": list(self.det_dont_care),
                "gt_invalid": list(self.gt_invalid), "det_invalid": list(self.det_invalid),
                **({} if self.miss_kinds is None else
                   {"missed_kinds": list(self.miss_kinds),
                    "false_alarm_kinds": list(self.false_alarm_kinds)}),
                # the boxes "pairs", "false_alarms", ... index, as dbrt run writes them
                **({} if self.detections is None else {"detections": self.detections.to_records()})}


class SummedScores:
    """Precision / recall / hmean of counts summed over images: `hits` (matches, or correct
    readings end to end) over cared-for detections and cared-for ground truth."""

    hits: int
    gt_care: int
    det_care: int

    @property
    def recall(self) -> float:
        return 0.0 if self.gt_care == 0 else self.hits / self.gt_care

    @property
    def precision(self) -> float:
        return 0.0 if self.det_care == 0 else self.hits / self.det_care

    @property
    def hmean(self) -> float:
        return _hmean(self.precision, self.recall)


@dataclass(frozen=True)
class EvalResult(SummedScores):
    """Overall protocol numbers (matches summed over images) and the per-image outcomes."""

    images: Tuple[ImageEval, ...]

    @property
    def matched(self) -> int:
        return sum(im.matched for im in self.images)

    @property
    def gt_care(self) -> int:
        return sum(im.gt_care for im in self.images)

    @property
    def det_care(self) -> int:
        return sum(im.det_care for im in self.images)

    hits = matched

    def recall_by_height(self, edges: Sequence[float] = HEIGHT_EDGES) -> List[dict]:
        """Recall of the cared-for ground truth per word-height range (image pixels): where a
        detector loses words, and whether a larger input size would find them."""
        bounds = [0.0, *edges, float("inf")]
        rows = [{"min_px": lo, "max_px": hi, "words": 0, "found": 0} for lo, hi in zip(bounds, bounds[1:])]
        for im in self.images:
            found = {g for g, _, _ in im.pairs}
            skip = set(im.gt_dont_care) | set(im.gt_invalid)
            for g, height in enumerate(im.gt_heights):
                if g not in skip:
                    row = rows[int(np.searchsorted(edges, height, side="right"))]
                    row["words"] += 1
                    row["found"] += g in found
        for row in rows:
            row["recall"] = row["found"] / row["words"] if row["words"] else None
        return rows

    def height_summary(self) -> str:
        """One line: recall per word-height range, e.g. '<8 px 0/3, 8-16 px 37/98 (0.38), ...'."""
        parts = []
        for row in self.recall_by_height():
            share = "" if row["recall"] is None else f" ({row['recall']:.2f})"
            parts.append(f"{height_range(row)} px {row['found']}/{row['words']}{share}")
        return "recall by word height: " + ", ".join(parts)

    def error_counts(self) -> Optional[dict]:
        """{"missed": {kind: n}, "false_alarms": {kind: n}} summed over the images (kinds: see
        pipeline.eval_errors); None when an image was scored without explaining."""
        if any(im.miss_kinds is None for im in self.images):
            return None
        return {"missed": count_kinds((k for im in self.images for k in im.miss_kinds), MISS_KINDS),
                "false_alarms": count_kinds((k for im in self.images for k in im.false_alarm_kinds),
                                            FALSE_ALARM_KINDS)}

    def errors_summary(self) -> Optional[str]:
        """One line: misses and false alarms by kind (None when not explained)."""
        counts = self.error_counts()
        return None if counts is None else errors_line(counts["missed"], counts["false_alarms"])

    def summary(self) -> str:
        return (f"precision {self.precision:.4f}  recall {self.recall:.4f}  hmean {self.hmean:.4f}  "
                f"({self.matched} matched, {self.gt_care} ground truth, {self.det_care} detections, "
                f"{len(self.images)} images)")

    def to_dict(self, per_image: bool = True) -> dict:
        out = {"precision": self.precision, "recall": self.recall, "hmean": self.hmean,
               "matched": self.matched, "gt_care": self.gt_care, "det_care": self.det_care,
               "images": len(self.images),
               "recall_by_height": [{**r, "max_px": None if r["max_px"] == float("inf") else r["max_px"]}
                                    for r in self.recall_by_height()]}
        errors = self.error_counts()
        if errors is not None:
            out["errors"] = errors
        if per_image:
            out["per_image"] = [im.to_dict() for im in self.images]
        return out


# -- the protocol -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Truth:
    """One image's ground truth made ready to score detections against (`prepare_truth`):
    threshold tuning scores the same image under every setting of its grid."""

    polygons: Tuple[np.ndarray, ...]  # float64 (n, 2), the caller's order
    invalid: Tuple[int, ...]          # not simple polygons
    dont_care: Tuple[int, ...]        # valid, marked "do not care"
    cared: Tuple[int, ...]            # valid and cared for, in order
    heights: Tuple[float, ...]        # word_height of each
    areas: Tuple[float, ...]          # polygon_area of each
    bounds: Tuple[np.ndarray, np.ndarray]  # (n, 2) minimum and maximum corners


def prepare_truth(gt_polygons: Sequence[np.ndarray], gt_ignore: Sequence[bool]) -> Truth:
    """Ground-truth polygons (any (n, 2) arrays) with their "do not care" flags -> Truth."""
    gts = tuple(np.asarray(p, np.float64).reshape(-1, 2) for p in gt_polygons)
    ignore = [bool(f) for f in gt_ignore]
    if len(ignore) != len(gts):
        raise ValueError(f"{len(gts)} ground-truth polygons but {len(ignore)} ignore flags")
    invalid = tuple(i for i, p in enumerate(gts) if not is_simple_polygon(p))
    ok = [i for i in range(len(gts)) if i not in invalid]
    return Truth(gts, invalid, tuple(i for i in ok if ignore[i]), tuple(i for i in ok if not ignore[i]),
                 tuple(word_height(p) for p in gts), tuple(polygon_area(p) for p in gts), bounding_boxes(gts))


def evaluate_image(gt_polygons: Sequence[np.ndarray], gt_ignore: Sequence[bool],
                   det_polygons: Sequence[np.ndarray], name: str = "", iou: float = IOU_THRESHOLD,
                   area_precision: float = AREA_PRECISION_THRESHOLD) -> ImageEval:
    """Score one image: ground-truth polygons with their "do not care" flags against detected
    polygons (a `Detections`, or polygons: each an (n, 2) array in frame pixels)."""
    return score_image(prepare_truth(gt_polygons, gt_ignore), det_polygons, name, iou, area_precision)


def score_image(truth: Truth, det_polygons: Sequence[np.ndarray], name: str = "",
                iou: float = IOU_THRESHOLD, area_precision: float = AREA_PRECISION_THRESHOLD,
                explain: bool = True) -> ImageEval:
    """evaluate_image against prepared ground truth. Pairs whose bounding boxes do not overlap
    have intersection 0 without a clipper call (the bounding boxes of all pairs in one step).
    explain: also sort the misses and false alarms by kind (threshold tuning skips it)."""
    gts = truth.polygons
    detections = det_polygons if isinstance(det_polygons, Detections) else None
    det_polygons = getattr(det_polygons, "polygons", det_polygons)  # a Detections, or its polygons
    dets = [np.asarray(p, np.float64).reshape(-1, 2) for p in det_polygons]
    det_invalid = tuple(i for i, p in enumerate(dets) if not is_simple_polygon(p))
    det_ok = [i for i in range(len(dets)) if i not in det_invalid]
    overlap = boxes_overlap_matrix(truth.bounds, bounding_boxes(dets)).tolist()
    det_area = {d: polygon_area(dets[d]) for d in det_ok}

    def inside_fraction(d: int, g: int) -> float:  # share of the detection's area inside g
        area = det_area[d]
        if area == 0 or not overlap[g][d]:
            return 0.0
        return overlapping_intersection_area(dets[d], gts[g]) / area

    clipped: dict = {}  # (g, d) -> area: explaining an error reuses what matching clipped

    def intersection(g: int, d: int) -> float:
        if not overlap[g][d]:
            return 0.0
        if (g, d) not in clipped:
            clipped[g, d] = overlapping_intersection_area(gts[g], dets[d])
        return clipped[g, d]

    def pair_iou(g: int, d: int) -> float:  # polygon_iou(gts[g], dets[d])
        inter = intersection(g, d)
        union = truth.areas[g] + det_area[d] - inter
        return 0.0 if union <= 0 else inter / union

    det_dont_care = tuple(d for d in det_ok if any(inside_fraction(d, g) > area_precision
                                                   for g in truth.dont_care))
    det_cared = [d for d in det_ok if d not in det_dont_care]
    pairs = _greedy_match(truth.cared, det_cared, pair_iou, iou)
    result = ImageEval(name, len(gts), len(dets), pairs, truth.dont_care, det_dont_care,
                       truth.invalid, det_invalid, truth.heights, detections=detections)
    if not explain:
        return result
    return dataclasses.replace(
        result,
        miss_kinds=tuple(miss_kind(g, det_cared, intersection, truth.areas, det_area)
                         for g in result.missed),
        false_alarm_kinds=tuple(false_alarm_kind(d, truth.cared, truth.dont_care, intersection,
                                                 truth.areas, det_area[d])
                                for d in result.false_alarms))


def height_range(row: dict) -> str:
    """'<8', '8-16' or '>=32' for a recall_by_height row (its open end inf, or None in JSON)."""
    lo, hi = row["min_px"], row["max_px"]
    if not lo:
        return f"<{hi:g}"
    return f">={lo:g}" if hi is None or hi == float("inf") else f"{lo:g}-{hi:g}"


def word_height(polygon: np.ndarray) -> float:
    """A word's height: the short side of its polygon's minimum-area rectangle (for a curved
    word's polygon, more than its letters' height)."""
    import cv2

    if len(polygon) < 3:
        return 0.0
    return float(min(cv2.minAreaRect(polygon.astype(np.float32))[1]))


def _greedy_match(gt_idx: Sequence[int], det_idx: Sequence[int], pair_iou: Callable, iou: float):
    pairs, used = [], set()
    for g in gt_idx:
        for d in det_idx:
            if d in used:
                continue
            value = pair_iou(g, d)
            if value > iou:
                pairs.append((g, d, value))
                used.add(d)
                break
    return tuple(pairs)


def evaluate(ground_truths: Iterable, detections: Iterable[Detections],
             names: Optional[Sequence[str]] = None, iou: float = IOU_THRESHOLD,
             area_precision: float = AREA_PRECISION_THRESHOLD) -> EvalResult:
    """Score a dataset. `ground_truths` yields objects with `.polygons` and `.ignore`
    (pipeline.datasets.GroundTruth); `detections` yields one Detections per image."""
    ground_truths, detections = list(ground_truths), list(detections)
    if len(ground_truths) != len(detections):
        raise ValueError(f"{len(ground_truths)} ground truths but {len(detections)} detection sets")
    results = []
    for i, (gt, dets) in enumerate(zip(ground_truths, detections)):
        name = names[i] if names is not None else str(i)
        results.append(evaluate_image(gt.polygons, gt.ignore, dets, name, iou, area_precision))
    return EvalResult(tuple(results))


def evaluate_detector(detect: Callable[[np.ndarray], Detections], dataset,
                      on_image: Optional[Callable] = None, iou: float = IOU_THRESHOLD,
                      area_precision: float = AREA_PRECISION_THRESHOLD) -> EvalResult:
    """Run `detect(image) -> Detections` over a pipeline.datasets.Dataset and score it.

    `on_image(sample, image, detections, image_eval)` is called after each image (progress,
    visualisation, saving detections).
    """
    results = []
    for sample in dataset:
        image = sample.read_image()
        dets = detect(image)
        result = evaluate_image(sample.gt.polygons, sample.gt.ignore, dets, sample.name,
                                iou, area_precision)
        results.append(result)
        if on_image is not None:
            on_image(sample, image, dets, result)
    return EvalResult(tuple(results))
