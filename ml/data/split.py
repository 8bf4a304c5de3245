"""Split: a deterministic, stratified train/validation split of the training file.

The holdout file is never split: it becomes the test set, so every model is evaluated on the
same rows (a seeded stratified subset of it only when split.max_holdout_rows asks, for tests).
The task writes the files (ml/tasks/<task>/data.py) with the helpers below; this stage checks
first that the raw data passed validation and has not changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from ml.config import Settings


class SplitError(UserError):
    """The split cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class SplitResult:
    train_rows: int
    val_rows: int
    test_rows: int
    labels: list[str]


def stratified_split(
    frame: pd.DataFrame, label_column: str, val_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-class shuffle with a fixed seed; each class gives round(n * val_fraction) rows
    (at least one) to validation. Row order in each output follows the input order."""
    import pandas as pd

    val_index: list[int] = []
    for label in sorted(frame[label_column].unique()):
        rows = frame.index[frame[label_column] == label]
        if len(rows) < 2:
            raise SplitError(f"class {label!r} has {len(rows)} row(s); a split needs at least 2")
        shuffled = pd.Series(rows).sample(frac=1.0, random_state=seed)
        take = min(len(rows) - 1, max(1, round(len(rows) * val_fraction)))
        val_index.extend(shuffled.iloc[:take])
    is_val = frame.index.isin(val_index)
    return frame[~is_val], frame[is_val]


def stratified_subset(
    frame: pd.DataFrame, label_column: str, max_rows: int | None, seed: int
) -> pd.DataFrame:
    """A seeded subset of about max_rows rows with the class mix of `frame` (every class kept);
    `frame` itself when max_rows is None or not smaller. Row order follows the input order."""
    if max_rows is None or max_rows >= len(frame):
        return frame
    _, subset = stratified_split(frame, label_column, max_rows / len(frame), seed)
    return subset


def split(settings: Settings) -> SplitResult:
    """Check the raw data passed validation unchanged, then write the task's split files."""
    from ml.data.validate import require_validated
    from ml.tasks import task_of

    require_validated(settings)
    return task_of(settings).write_splits(settings)
