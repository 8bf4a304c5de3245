"""Slice metrics: each configured slice of the holdout scored with the holdout's own metrics.

Which rows a slice holds is the task's (`Task.slice_masks`, ml/tasks/*/evaluation.py: text by
length or keywords, images by brightness or a group of classes); scoring them is shared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml.config import SliceSettings


def slice_metrics(
    masks: Mapping[str, np.ndarray],
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    specs: Sequence[SliceSettings],
) -> dict[str, dict[str, Any]]:
    """Per slice: size, share of the holdout, accuracy and weighted/macro F1 (None when empty)."""
    from sklearn.metrics import f1_score

    y_true_arr = np.asarray([str(y) for y in y_true], dtype=object)
    y_pred_arr = np.asarray([str(y) for y in y_pred], dtype=object)
    total = len(y_true_arr)
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        mask = np.asarray(masks[spec.name], dtype=bool)
        if mask.shape != (total,):
            raise ValueError(f"slice {spec.name!r}: mask of shape {mask.shape}, expected {total}")
        n = int(mask.sum())
        row: dict[str, Any] = {
            "description": spec.description,
            "num_samples": n,
            "share": n / total if total else 0.0,
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
