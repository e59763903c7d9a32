"""Why a word was missed or a box was a false alarm: the protocol's errors sorted by what the
detector did wrong, so a user knows whether a larger input, other thresholds or more training
would help; and `draw_errors`, the picture of one image's errors tagged with their kinds.

Missed words (cared-for ground truth without a match):
- "merged":    more than half of the word lies inside one box at least twice its area: the box
               spans neighbouring words or a whole line (their regions in the probability map
               touch; a larger input or a higher --thresh separates some)
- "split":     two or more boxes each hold a part of the word, none most of it (letters boxed
               apart: large lettering with wide gaps)
- "partial":   one box overlaps the word but holds too little of it or too much beside it
- "not_found": no box holds as much as a tenth of the word (the model does not respond to it:
               too small for the input size, blurred, an unusual script or font)

False alarms (cared-for detections without a match):
- "several_words": the box holds most of two or more words (the other side of "merged")
- "on_word":       the box overlaps a cared-for word without matching it (a piece of the word or
                   a box shifted off it)
- "dont_care":     the box overlaps "do not care" text, but less than half of it lies there
- "background":    the box overlaps no ground truth (non-text, or text the annotation left out)
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Sequence, Tuple

import numpy as np

MISS_KINDS = ("merged", "split", "partial", "not_found")
FALSE_ALARM_KINDS = ("several_words", "on_word", "dont_care", "background")
MOSTLY = 0.5   # "most of": more than half of an area
PART = 0.1     # "a part of": more than a tenth of an area
LARGER = 2.0   # a box "much larger" than a word: at least this many times its area

# intersection(g, d) -> area of ground truth g inside detection d (0 when they do not overlap)
Intersection = Callable[[int, int], float]


def miss_kind(g: int, dets: Iterable[int], inter: Intersection, gt_areas: Sequence[float],
              det_areas: Dict[int, float]) -> str:
    """The kind of a missed word g among the detections `dets` (valid, not do-not-care)."""
    area = gt_areas[g]
    if area <= 0:
        return "not_found"
    parts = 0
    for d in dets:
        shared = inter(g, d)
        if shared / area > MOSTLY:
            return "merged" if det_areas[d] >= LARGER * area else "partial"
        parts += shared / area > PART
    return "split" if parts >= 2 else "partial" if parts == 1 else "not_found"


def false_alarm_kind(d: int, cared: Sequence[int], dont_care: Sequence[int], inter: Intersection,
                     gt_areas: Sequence[float], det_area: float) -> str:
    """The kind of a false alarm d against the cared-for and do-not-care ground truth."""
    if det_area <= 0:
        return "background"
    held = [g for g in (*cared, *dont_care) if gt_areas[g] > 0 and inter(g, d) / gt_areas[g] > MOSTLY]
    if len(held) >= 2:
        return "several_words"
    if any(inter(g, d) / det_area > PART for g in cared):
        return "on_word"
    if any(inter(g, d) / det_area > PART for g in dont_care):
        return "dont_care"
    return "background"


def count_kinds(kinds: Iterable[str], names: Tuple[str, ...]) -> Dict[str, int]:
    """{kind: count} over `names`, in that order, zeros included."""
    counts = dict.fromkeys(names, 0)
    for kind in kinds:
        counts[kind] += 1
    return counts


MISS_WORDS = {"merged": "in a larger box", "split": "split", "partial": "partly boxed",
              "not_found": "not found"}
FALSE_ALARM_WORDS = {"several_words": "over several words", "on_word": "on a word",
                     "dont_care": "on do-not-care text", "background": "on background"}


def errors_line(missed: Dict[str, int], false_alarms: Dict[str, int]) -> str:
    """One line, e.g. 'missed 129: 43 in a larger box, ..., 74 not found; false alarms 78: ...'."""
    def part(counts: Dict[str, int], words: Dict[str, str]) -> str:
        listed = ", ".join(f"{n} {words[k]}" for k, n in counts.items() if n)
        return f"{sum(counts.values())}" + (f": {listed}" if listed else "")
    return f"missed {part(missed, MISS_WORDS)}; false alarms {part(false_alarms, FALSE_ALARM_WORDS)}"


# -- the picture ---------------------------------------------------------------------------------

COLOURS = {  # BGR
    "hit": (0, 200, 0), "missed": (0, 0, 255), "false_alarm": (0, 165, 255),
    "dont_care": (160, 160, 160), "detection": (255, 128, 0),
}


def draw_errors(image: np.ndarray, gt_polygons: Sequence[np.ndarray], det_polygons: Sequence[np.ndarray],
                result, thickness: int = 2) -> np.ndarray:
    """A copy of `image` with matched ground truth green, misses red, false alarms orange,
    matched detections blue and "do not care" regions grey; each miss and false alarm tagged
    with its kind when `result` (a pipeline.evaluate.ImageEval) was explained."""
    import cv2

    out = image.copy()
    dets = list(det_polygons)

    def points(polys, i):
        return np.round(np.asarray(polys[i], np.float64)).astype(np.int32).reshape(-1, 1, 2)

    def draw(polys, indices, colour):
        pts = [points(polys, i) for i in indices]
        if pts:
            cv2.polylines(out, pts, True, colour, thickness, cv2.LINE_AA)

    def tag(polys, indices, kinds, colour):
        for i, kind in zip(indices, kinds or ()):
            x, y = points(polys, i).reshape(-1, 2).min(0)
            cv2.putText(out, kind.replace("_", " "), (int(x), max(10, int(y) - 3)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)

    draw(gt_polygons, result.gt_dont_care, COLOURS["dont_care"])
    draw(gt_polygons, [p[0] for p in result.pairs], COLOURS["hit"])
    draw(dets, [p[1] for p in result.pairs], COLOURS["detection"])
    draw(gt_polygons, result.missed, COLOURS["missed"])
    draw(dets, result.false_alarms, COLOURS["false_alarm"])
    tag(gt_polygons, result.missed, result.miss_kinds, COLOURS["missed"])
    tag(dets, result.false_alarms, result.false_alarm_kinds, COLOURS["false_alarm"])
    return out
