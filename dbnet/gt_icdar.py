"""ICDAR 2015 ground-truth lines, read alike for evaluation (pipeline.datasets) and training
(export.train.data): `x1,y1,...,x4,y4[,transcription]`, the transcription possibly holding
commas. As the official ICDAR 2015 evaluation reads them: a quoted transcription is unquoted,
and a word is "do not care" when it is exactly "###" (`dont_care`); other layouts (MhLiao's
conversions) also take "#" and surrounding spaces. A coordinate that is not a finite number
or lies absurdly far (dbnet.gt_json.check_coordinates) is an error, in both.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

import numpy as np

from .gt_json import GroundTruthError, check_coordinates

DONT_CARE_TEXTS = ("###", "#")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_icdar_line(line: str, n_coords: Optional[int] = 8) -> Tuple[np.ndarray, str]:
    """One `x1,y1,...,xn,yn,transcription` line -> ((n, 2) points, transcription); a line of
    coordinates only (detection labels) has the transcription "".

    With `n_coords=None` (MhLiao's Total-Text conversion) the coordinates are the longest even
    run of leading numbers that leaves a transcription field.
    """
    fields = line.lstrip().lstrip("\ufeff").rstrip("\r\n").split(",")
    if n_coords is None:
        numeric = 0
        while numeric < len(fields) - 1 and _is_number(fields[numeric].strip()):
            numeric += 1
        n_coords = numeric - numeric % 2
    if n_coords < 6 or len(fields) < n_coords or not all(_is_number(f) for f in fields[:n_coords]):
        raise GroundTruthError(f"expected {n_coords or 'at least 6'} coordinates and a "
                               f"transcription, got {line.strip()[:80]!r}")
    points = check_coordinates([float(f) for f in fields[:n_coords]]).astype(np.float32).reshape(-1, 2)
    text = ",".join(fields[n_coords:])
    quoted = re.fullmatch(r'\s*"(.*)"\s*', text)
    if quoted:  # the official reader's unquoting
        text = quoted.group(1).replace("\\\\", "\\").replace('\\"', '"')
    return points, text


def dont_care(text: str, official: bool = True) -> bool:
    """Whether a transcription marks a word nobody is scored on: exactly "###" in official
    ICDAR 2015 files (" ###" and "#" are words there), "###" or "#" give or take spaces
    elsewhere."""
    return text == "###" if official else text.strip() in DONT_CARE_TEXTS
