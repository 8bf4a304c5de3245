"""Classification metrics from labels and probabilities: pure functions, no model, no files.

Every function takes label *names* (not indices) plus the ordered label list, so a model whose
label order differs from the holdout's is scored correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The headline metrics every report, gate and registry tag uses, in display order.
HEADLINE = (
    "accuracy",
    "f1_weighted",
    "precision_weighted",
    "recall_weighted",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "ece",
)


def expected_calibration_error(
    y_true: Sequence[str], y_pred: Sequence[str], confidence: Sequence[float], bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins: sum over bins of |accuracy - mean confidence|,
    weighted by the bin's share of rows. Returns (ece, per-bin rows for a reliability chart)."""
    conf = np.asarray(confidence, dtype=float)
    correct = np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)
    n = len(conf)
    if n == 0:
        return 0.0, []
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; confidence 0 falls in the first bin.
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    ece = 0.0
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        row = {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count}
        if count:
            accuracy = float(correct[mask].mean())
            mean_conf = float(conf[mask].mean())
            ece += count / n * abs(accuracy - mean_conf)
            row.update(accuracy=accuracy, confidence=mean_conf)
        rows.append(row)
    return float(ece), rows


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidence: Sequence[float],
    labels: Sequence[str],
    ece_bins: int = 10,
) -> dict[str, Any]:
    """Overall, per-class, confusion matrix and calibration for one set of predictions.

    `labels` fixes the order of the per-class table and the confusion matrix; labels predicted
    but not in `labels` (a model trained on another label set) count as errors.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = [str(y) for y in y_true]
    y_pred = [str(y) for y in y_pred]
    if len(y_true) != len(y_pred) or len(y_true) != len(confidence):
        raise ValueError(
            f"y_true, y_pred and confidence differ in length: "
            f"{len(y_true)}, {len(y_pred)}, {len(confidence)}"
        )
    labels = list(labels)
    n = len(y_true)
    overall: dict[str, float] = {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if n else 0.0
    }
    for average in ("weighted", "macro"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        overall[f"precision_{average}"] = float(p)
        overall[f"recall_{average}"] = float(r)
        overall[f"f1_{average}"] = float(f)
    ece, reliability = expected_calibration_error(y_true, y_pred, confidence, ece_bins)
    overall["ece"] = ece
    overall["num_samples"] = n

    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, label in enumerate(labels)
    }
    matrix = confusion_matrix(y_true, y_pred, labels=labels) if n else np.zeros((0, 0))
    return {
        "overall": {k: overall[k] for k in (*HEADLINE, "num_samples")},
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "matrix": matrix.astype(int).tolist()},
        "calibration": {"bins": ece_bins, "ece": ece, "reliability": reliability},
    }
