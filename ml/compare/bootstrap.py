"""Seeded paired bootstrap of metric differences between two models on the same rows.

Both models are scored on each resample of the holdout's rows, so row difficulty cancels and the
interval reflects only how the two disagree. Resamples are row-count weights: every metric here
is a function of per-class counts (true, predicted, true positive), and a weight matrix times
one-hot columns yields those counts for a whole block of resamples at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"
# The headline metrics with an interval (ECE has none: it is not a function of the counts).
HEADLINE = (
    "f1_weighted",
    "accuracy",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "precision_macro",
    "recall_macro",
)
# Bounds this close to zero are zero: identical predictions give exactly 0, sums give 1e-17.
EPSILON = 1e-12
# Resample weights held in memory at once (rows x resamples per block).
BLOCK_CELLS = 2_000_000


def verdict_word(low: float, high: float) -> str:
    """ "better"/"worse" only when the whole interval is on one side of zero."""
    if low > EPSILON:
        return BETTER
    if high < -EPSILON:
        return WORSE
    return NO_DIFFERENCE


@dataclass(frozen=True)
class Interval:
    """challenger - champion for one metric: the point difference and its bootstrap interval."""

    metric: str
    old: float
    new: float
    diff: float
    low: float
    high: float
    se: float
    level: float
    new_se: float  # the challenger's own spread over the resamples (the MDD without a champion)

    @property
    def word(self) -> str:
        return verdict_word(self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "word": self.word}


def _encode(values: Sequence[Any], index: dict[str, int], k: int) -> np.ndarray:
    """One-hot rows over the labels; a label outside them (another label set) is all zeros."""
    codes = np.array([index.get(str(v), -1) for v in values], dtype=np.int64)
    onehot = np.zeros((len(codes), k))
    known = codes >= 0
    onehot[np.flatnonzero(known), codes[known]] = 1.0
    return onehot


def _scores(weights: np.ndarray, columns: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Metrics for each row of `weights` from the stacked [true | predicted | tp] columns;
    F1 of a class neither present nor predicted is 0, as sklearn's zero_division=0 makes it."""
    counts = weights @ columns
    true, predicted, tp = counts[:, :k], counts[:, k : 2 * k], counts[:, 2 * k :]

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    total = true.sum(axis=1)
    scores = {"accuracy": tp.sum(axis=1) / total}
    per_class = {
        "f1": ratio(2 * tp, true + predicted),
        "precision": ratio(tp, predicted),
        "recall": ratio(tp, true),
    }
    for name, values in per_class.items():
        scores[f"{name}_weighted"] = (values * true).sum(axis=1) / total
        scores[f"{name}_macro"] = values.mean(axis=1)
    scores["class_f1"] = per_class["f1"]
    return scores


def _weights(rng: np.random.Generator, rows: int, count: int) -> np.ndarray:
    """`count` bootstrap resamples of `rows` rows, as how often each row was drawn."""
    draws = rng.integers(0, rows, size=(count, rows)) + (np.arange(count) * rows)[:, None]
    return np.bincount(draws.ravel(), minlength=count * rows).reshape(count, rows).astype(float)


def paired_bootstrap(
    y_true: Sequence[Any],
    old_pred: Sequence[Any],
    new_pred: Sequence[Any],
    labels: Sequence[str],
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """Percentile intervals of new - old: (headline metric -> Interval, class -> F1 Interval)."""
    rows = len(y_true)
    if rows == 0 or len(old_pred) != rows or len(new_pred) != rows:
        raise ValueError(
            f"paired predictions need the same non-empty rows: {rows}, {len(old_pred)}, "
            f"{len(new_pred)}"
        )
    labels = list(dict.fromkeys([*map(str, labels), *sorted({str(y) for y in y_true})]))
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    true = _encode(y_true, index, k)
    stacks = []
    for pred in (old_pred, new_pred):
        onehot = _encode(pred, index, k)
        stacks.append(np.hstack([true, onehot, true * onehot]))
    point = [_scores(np.ones((1, rows)), s, k) for s in stacks]
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_CELLS // rows)
    diffs: dict[str, list[np.ndarray]] = {}
    spread: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, block):
        weights = _weights(rng, rows, min(block, resamples - start))
        old, new = (_scores(weights, s, k) for s in stacks)
        for name in new:
            diffs.setdefault(name, []).append(new[name] - old[name])
            spread.setdefault(name, []).append(new[name])
    tail = (1 - level) / 2 * 100
    joined = {name: np.concatenate(parts) for name, parts in diffs.items()}
    alone = {name: np.concatenate(parts) for name, parts in spread.items()}

    def sd(samples: np.ndarray) -> float:
        return float(samples.std(ddof=1)) if len(samples) > 1 else 0.0

    def interval(
        metric: str, old: float, new: float, samples: np.ndarray, own: np.ndarray
    ) -> Interval:
        low, high = np.percentile(samples, [tail, 100 - tail])
        return Interval(
            metric, old, new, new - old, float(low), float(high), sd(samples), level, sd(own)
        )

    headline = {
        m: interval(m, float(point[0][m][0]), float(point[1][m][0]), joined[m], alone[m])
        for m in HEADLINE
    }
    present = set(map(str, y_true))
    per_class = {
        label: interval(
            label,
            float(point[0]["class_f1"][0, i]),
            float(point[1]["class_f1"][0, i]),
            joined["class_f1"][:, i],
            alone["class_f1"][:, i],
        )
        for i, label in enumerate(labels)
        if label in present
    }
    return headline, per_class
