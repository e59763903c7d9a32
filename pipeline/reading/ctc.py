"""CTC: the character set of a recognizer and greedy decoding over a whole batch.

A CTC recognizer (CRNN, SVTR, PP-OCR rec) outputs, per crop, T time steps of C class scores:
class 0 is the blank, classes 1..n the dictionary's characters and, in PaddleOCR's models, one
last class the space. Greedy decoding takes the best class per step, merges repeats and drops
blanks; a word's confidence is the mean probability of the characters it kept (PaddleOCR's).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np

from engine.errors import ModelError


@dataclass(frozen=True)
class Charset:
    """The classes of a CTC model: index 0 the blank, then the characters (a trailing space when
    the model has one more class than the dictionary has characters)."""

    classes: Tuple[str, ...]

    @classmethod
    def from_characters(cls, characters: Sequence[str], num_classes: int,
                        source: str = "the dictionary") -> "Charset":
        """Match a dictionary to a model's class count: blank + characters (+ space)."""
        chars = list(characters)
        if num_classes == len(chars) + 2:
            return cls(("",) + tuple(chars) + (" ",))
        if num_classes == len(chars) + 1:
            return cls(("",) + tuple(chars))
        raise ModelError(
            f"{source} has {len(chars)} characters but the recognizer has {num_classes} classes "
            f"(expected {len(chars) + 1}: blank + characters, or {len(chars) + 2} with a space)")

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], num_classes: int) -> "Charset":
        """A dictionary file: one character per line (UTF-8), PaddleOCR's format."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"recognizer dictionary not found: {path}")
        try:  # utf-8-sig: a byte-order mark (Windows editors write one) is no character
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ModelError(f"recognizer dictionary {path} is not UTF-8 text") from exc
        return cls.from_characters(_lines(text), num_classes, f"dictionary {path}")

    def __len__(self) -> int:
        return len(self.classes)


def _lines(text: str) -> List[str]:
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def characters_from_metadata(metadata: dict) -> List[str]:
    """The dictionary a PP-OCR ONNX (as RapidOCR ships it) carries in its `character` metadata;
    empty when it has none."""
    return _lines(metadata.get("character", ""))


# An FP16 engine's softmax may round a sure step to 1.000977 (float16's next value after 1);
# taken for logits, a whole batch's confidences fell to softmax-of-probabilities (~1e-4).
PROBABILITY_OVERSHOOT = 1e-3


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities: PP-OCR models end in a softmax, other CTC exports give logits."""
    if scores.size and (scores.min() < 0 or scores.max() > 1 + PROBABILITY_OVERSHOOT):
        shifted = scores - scores.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)
    return scores


def ctc_greedy_decode(scores: np.ndarray, charset: Charset) -> Tuple[List[str], np.ndarray]:
    """(N, T, C) class scores (probabilities or logits) -> N texts and (N,) float32 confidences.

    Best class per step, repeats merged, blanks dropped, all in array operations over the batch;
    a confidence is the mean probability of the kept steps (0 for an empty text).
    """
    scores = np.asarray(scores)
    if scores.ndim != 3 or scores.shape[2] != len(charset):
        raise ModelError(f"CTC scores must be (N, T, {len(charset)}), got {scores.shape}")
    n, t, _ = scores.shape
    if n == 0 or t == 0:
        return [""] * n, np.zeros(n, np.float32)
    probs = as_probabilities(scores.astype(np.float32, copy=False))
    best = probs.argmax(axis=2)                              # (N, T)
    best_p = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    keep = best != 0
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]               # merge repeats
    rows, steps = np.nonzero(keep)
    counts = np.bincount(rows, minlength=n)
    sums = np.bincount(rows, weights=best_p[rows, steps], minlength=n)
    confidence = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
    lookup = np.asarray(charset.classes, dtype=object)
    chars = lookup[best[rows, steps]]
    ends = np.cumsum(counts)
    texts = ["".join(chars[end - count:end]) for end, count in zip(ends, counts)]
    return texts, confidence
