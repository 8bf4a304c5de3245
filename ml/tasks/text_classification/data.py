"""The text task's data: its source files, their validation, the CSV splits and the one reader.

read_split is the one reader of a text split for every stage (training, evaluation, the gate,
monitoring): cells are read as text with only empty cells missing, so a title "NA" or "null"
is text the model sees, not a missing value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.data.splits import SplitReadError, labels_path, require_split, split_path
from ml.data.validate import ValidationReport
from ml.io import atomic_path, sha256_file, write_json
from ml.tasks.base import Examples

if TYPE_CHECKING:
    import pandas as pd

    from ml.config import Settings
    from ml.data.split import SplitResult


def source_files(settings: Settings) -> list[str]:
    return [settings.data.train_file, settings.data.holdout_file]


def _raw_paths(settings: Settings) -> dict[str, Path]:
    raw_dir = settings.path(settings.data.raw_dir)
    return {
        "train": raw_dir / settings.data.train_file,
        "holdout": raw_dir / settings.data.holdout_file,
    }


def validate(settings: Settings) -> ValidationReport:
    """Every check of ml/tasks/text_classification/checks.py on data/raw/{train,holdout}."""
    from ml.tasks.text_classification.checks import CHECKS, validate_bytes

    data = settings.data
    paths = _raw_paths(settings)
    contents = {name: (p.read_bytes() if p.is_file() else None) for name, p in paths.items()}
    problems, labels, counts, rows = validate_bytes(
        contents["train"], contents["holdout"], data, settings.validate_
    )
    files = {
        name: {
            "path": str(Path(data.raw_dir) / path.name),
            "sha256": sha256_file(path),
            "rows": rows[name],
        }
        for name, path in paths.items()
        if contents[name] is not None
    }
    return ValidationReport(not problems, labels, files, counts, problems, dict(CHECKS))


def _read_raw(path: Path) -> pd.DataFrame:
    from ml.data.split import SplitError
    from ml.tasks.text_classification.checks import read_csv_checked

    frame, problems = read_csv_checked(path.read_bytes(), path.name)
    if frame is None or problems:
        raise SplitError(f"{path} cannot be read: {problems}; run `ml data validate`")
    return frame


def write_splits(settings: Settings) -> SplitResult:
    """train/val from the train file (stratified, seeded), the holdout file as test."""
    from ml.data.split import SplitResult, stratified_split, stratified_subset

    data, cfg = settings.data, settings.split
    raw = _raw_paths(settings)
    columns = [data.id_column, *data.text_columns, data.label_column]
    full = _read_raw(raw["train"])[columns]
    holdout = _read_raw(raw["holdout"])[columns]
    full = stratified_subset(full, data.label_column, cfg.max_train_rows, cfg.seed)
    holdout = stratified_subset(holdout, data.label_column, cfg.max_holdout_rows, cfg.seed)
    train, val = stratified_split(full, data.label_column, cfg.val_fraction, cfg.seed)

    for name, frame in (("train", train), ("val", val), ("test", holdout)):
        with atomic_path(split_path(settings, name)) as tmp:
            frame.to_csv(tmp, index=False)
    labels = sorted(full[data.label_column].unique())
    write_json(labels_path(settings), {"label_column": data.label_column, "labels": labels})
    return SplitResult(len(train), len(val), len(holdout), labels)


def _ids(column: pd.Series) -> list[Any]:
    """Ids as ints where every id is one (validation requires it), else as read."""
    try:
        return [int(v) for v in column]
    except ValueError:
        return column.tolist()


def _capped(frame: pd.DataFrame, label_column: str, max_rows: int) -> pd.DataFrame:
    """The first rows of each class in proportion (every class kept), in class order."""
    import pandas as pd

    parts = [
        group.head(max(1, max_rows * len(group) // len(frame)))
        for _, group in frame.groupby(label_column, sort=True)
    ]
    return pd.concat(parts).head(max_rows)


def read_split(settings: Settings, path: Path, max_rows: int | None = None) -> Examples:
    """A text split (train/val/test .csv) as Examples: inputs are the combined text of
    data.text_columns (ml.data.text.combine_text), labels the class names, ids the id column,
    details the raw text columns. max_rows: a capped read that keeps every class."""
    import pandas as pd

    from ml.data.text import combine_text

    data = settings.data
    frame = pd.read_csv(require_split(path), dtype=str, keep_default_na=False, na_values=[""])
    needed = [data.id_column, *data.text_columns, data.label_column]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise SplitReadError(f"{path} lacks column(s) {absent}; rerun `ml data split`")
    if max_rows is not None and len(frame) > max_rows:
        frame = _capped(frame, data.label_column, max_rows)
    texts = frame[data.text_columns].fillna("")
    return Examples(
        inputs=combine_text(frame, data.text_columns).tolist(),
        labels=frame[data.label_column].fillna("").astype(str).tolist(),
        ids=_ids(frame[data.id_column]),
        details={column: texts[column].tolist() for column in data.text_columns},
    )
