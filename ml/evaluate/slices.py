"""Slicing functions: which holdout rows belong to a named slice (configured in params.yaml).

A slice is scored with the same metrics as the whole holdout, so a model that is good on
average but bad on, say, very short texts shows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ml.config import SliceSettings

_WORD = re.compile(r"\w+")


def _word_count(text: str) -> int:
    return len(_WORD.findall(text))


def short_text(texts: Sequence[str], spec: SliceSettings) -> np.ndarray:
    """At most `words` words."""
    return np.array([_word_count(t) <= spec.words for t in texts], dtype=bool)


def long_text(texts: Sequence[str], spec: SliceSettings) -> np.ndarray:
    """At least `words` words."""
    return np.array([_word_count(t) >= spec.words for t in texts], dtype=bool)


def keywords(texts: Sequence[str], spec: SliceSettings) -> np.ndarray:
    """Mentions any keyword as a whole word, case-insensitive."""
    pattern = re.compile(
        r"\b(?:" + "|".join(re.escape(k) for k in spec.keywords) + r")\b", re.IGNORECASE
    )
    return np.array([bool(pattern.search(t)) for t in texts], dtype=bool)


SLICING_FUNCTIONS: dict[str, Callable[[Sequence[str], SliceSettings], np.ndarray]] = {
    "short_text": short_text,
    "long_text": long_text,
    "keywords": keywords,
}


def describe(spec: SliceSettings) -> str:
    if spec.function == "short_text":
        return f"≤ {spec.words} words"
    if spec.function == "long_text":
        return f"≥ {spec.words} words"
    return "mentions " + ", ".join(spec.keywords)


def slice_metrics(
    texts: Sequence[str],
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    specs: Sequence[SliceSettings],
) -> dict[str, dict[str, Any]]:
    """Per slice: size, share of the holdout, accuracy and weighted/macro F1 (None when empty)."""
    from sklearn.metrics import f1_score

    y_true_arr = np.asarray([str(y) for y in y_true], dtype=object)
    y_pred_arr = np.asarray([str(y) for y in y_pred], dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        mask = SLICING_FUNCTIONS[spec.function](texts, spec)
        n = int(mask.sum())
        row: dict[str, Any] = {
            "description": describe(spec),
            "num_samples": n,
            "share": n / len(texts) if len(texts) else 0.0,
            "accuracy": None,
            "f1_weighted": None,
            "f1_macro": None,
        }
        if n:
            t, p = list(y_true_arr[mask]), list(y_pred_arr[mask])
            # Macro F1 over the labels present in the slice: a slice without a class should not
            # be scored 0 on it.
            present = [label for label in labels if label in set(t) | set(p)]
            row["accuracy"] = float(np.mean(y_true_arr[mask] == y_pred_arr[mask]))
            row["f1_weighted"] = float(
                f1_score(t, p, labels=present, average="weighted", zero_division=0)
            )
            row["f1_macro"] = float(
                f1_score(t, p, labels=present, average="macro", zero_division=0)
            )
        out[spec.name] = row
    return out
