"""Text slices: which holdout rows belong to a named slice (evaluate.slices in params).

A slice is scored with the same metrics as the whole holdout (ml/evaluate/slices.py), so a
model that is good on average but bad on, say, very short texts shows it. Words are counted
over the combined text the model reads (title + description).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ml.config import Settings, SliceSettings
    from ml.tasks.base import Examples

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


SLICE_FUNCTIONS: dict[str, Callable[[Sequence[str], SliceSettings], np.ndarray]] = {
    "short_text": short_text,
    "long_text": long_text,
    "keywords": keywords,
}


def slice_masks(settings: Settings, examples: Examples) -> dict[str, np.ndarray]:
    texts = list(examples.inputs)
    return {
        spec.name: SLICE_FUNCTIONS[spec.function](texts, spec) for spec in settings.evaluate.slices
    }


def prediction_columns(examples: Examples) -> dict[str, Sequence[Any]]:
    return {"text": list(examples.inputs)}
