"""Split: a deterministic, stratified train/validation split of the training file.

The holdout file is never split or sampled: it is copied as the test set, so every model is
evaluated on exactly the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ml.config import Settings
from ml.data.validate import read_csv_checked
from ml.errors import UserError
from ml.io import atomic_path, sha256_file, write_json

SPLIT_FILES = ("train.csv", "val.csv", "test.csv")


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


def _read(path: Path) -> pd.DataFrame:
    frame, problems = read_csv_checked(path.read_bytes(), path.name)
    if frame is None or problems:
        raise SplitError(f"{path} cannot be read: {problems}; run `ml data validate`")
    return frame


def split(settings: Settings) -> SplitResult:
    data = settings.data
    report_path = settings.path(settings.validate_.report)
    if not report_path.is_file():
        raise SplitError(f"{report_path} not found; run `ml data validate` first")
    report = json.loads(report_path.read_text())
    if not report.get("passed"):
        raise SplitError(
            f"data validation failed ({len(report.get('problems', []))} problem(s), see "
            f"{report_path}); fix the data and rerun `ml data validate`"
        )
    raw_dir = settings.path(data.raw_dir)
    train_path = raw_dir / data.train_file
    recorded = report.get("files", {}).get("train", {}).get("sha256")
    if recorded and recorded != sha256_file(train_path):
        raise SplitError(f"{train_path} changed after validation; rerun `ml data validate`")

    columns = [data.id_column, *data.text_columns, data.label_column]
    full = _read(train_path)[columns]
    holdout = _read(raw_dir / data.holdout_file)[columns]
    train, val = stratified_split(
        full, data.label_column, settings.split.val_fraction, settings.split.seed
    )

    out_dir = settings.path(data.splits_dir)
    for name, frame in zip(SPLIT_FILES, (train, val, holdout), strict=True):
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    labels = sorted(full[data.label_column].unique())
    write_json(
        out_dir / "labels.json",
        {"label_column": data.label_column, "labels": labels},
    )
    return SplitResult(len(train), len(val), len(holdout), labels)
