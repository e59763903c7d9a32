"""The text a track's readings vote for.

Each reading adds its `text_score` to its text's weight, and the heaviest text wins. A reading
read clearly in a few frames (`whole_reading`) also carries the weight of the readings it
extends by letters or digits at their start or end: it is the whole word, which the box or an
occluder cut short in the other frames, and those frames agree with it (`MATTE` / `MATTER`,
`Fre` / `Fres`, `ack` / `black`). A word merged with the next one (`PRIVATE SY`), a symbol taken
in (`#BLACK`) or a letter added in a frame or two (`PRIVATES`) carries nothing more.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

# a reading carries the weight of those it extends when read in this many frames at least...
WHOLE_MIN_READINGS = 3
# ... with this mean confidence at least
WHOLE_MIN_CONFIDENCE = 0.9


def winner(votes: Dict[str, float], counts: Dict[str, int]) -> Tuple[Optional[str], float]:
    """(text, weight) of the vote, the weight with that of the readings the text extends
    where it is a whole reading; (None, 0.0) for no readings."""
    if not votes:
        return None, 0.0
    weights = {text: weight(text, votes, counts) for text in votes}
    text = max(weights, key=weights.get)
    return text, weights[text]


def weight(text: str, votes: Dict[str, float], counts: Dict[str, int]) -> float:
    """`text`'s weight in the vote: its own, plus that of the readings it extends if it is a
    whole reading (read in enough frames, clearly enough)."""
    n = counts.get(text, 0)
    if n < WHOLE_MIN_READINGS or votes[text] / n < WHOLE_MIN_CONFIDENCE:
        return votes[text]
    return votes[text] + sum(w for part, w in votes.items() if extends(text, part))


def extends(longer: str, shorter: str) -> bool:
    """Whether `longer` is `shorter` with letters or digits added at its start or its end."""
    if len(longer) <= len(shorter) or not shorter:
        return False
    if longer.startswith(shorter):
        added = longer[len(shorter):]
    elif longer.endswith(shorter):
        added = longer[:-len(shorter)]
    else:
        return False
    return added.isalnum()
