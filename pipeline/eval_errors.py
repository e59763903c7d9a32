"""Why a word was missed or a box was a false alarm: the protocol's errors sorted by what the
detector did wrong, so a user knows whether a larger input, other thresholds or more training
would help.

Missed words (cared-for ground truth without a match):
- "merged":    more than half of the word lies inside one box at least twice its area: the box
               spans neighbouring words or a whole line (words whose shrunk
               regions touch; a higher --thresh separates some)
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
    """One line, e.g. 'missed 129: 70 not found, 48 in a larger box, ...; false alarms 78: ...'."""
    def part(counts: Dict[str, int], words: Dict[str, str]) -> str:
        listed = ", ".join(f"{n} {words[k]}" for k, n in counts.items() if n)
        return f"{sum(counts.values())}" + (f": {listed}" if listed else "")
    return f"missed {part(missed, MISS_WORDS)}; false alarms {part(false_alarms, FALSE_ALARM_WORDS)}"
