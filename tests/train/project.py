"""Build small, real project folders (params.yaml + data/splits) for the training tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ml.data.split import stratified_split

LABEL_COLUMN = "tag"
TEXT_COLUMNS = ["title", "description"]


def shared_data_dir() -> Path:
    env = os.environ.get("ML_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def make_project(
    root: Path,
    *,
    rows_per_class: int = 8,
    val_per_class: int = 3,
    test_per_class: int = 3,
    max_length: int = 24,
    epochs: int = 1,
    num_workers: int = 2,
    tracking_uri: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A project with a few dozen real Made-With-ML rows; returns its params.yaml path."""
    source = shared_data_dir() / "madewithml"
    full = pd.read_csv(source / "dataset.csv")
    holdout = pd.read_csv(source / "holdout.csv")
    columns = ["id", *TEXT_COLUMNS, LABEL_COLUMN]
    per_class = rows_per_class + val_per_class
    sample = full.groupby(LABEL_COLUMN, group_keys=False).head(per_class)[columns]
    train, val = stratified_split(sample, LABEL_COLUMN, val_per_class / per_class, seed=1)
    test = holdout.groupby(LABEL_COLUMN, group_keys=False).head(test_per_class)[columns]
    splits = root / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    train.to_csv(splits / "train.csv", index=False)
    val.to_csv(splits / "val.csv", index=False)
    test.to_csv(splits / "test.csv", index=False)
    labels = sorted(full[LABEL_COLUMN].unique())
    (splits / "labels.json").write_text(
        json.dumps({"label_column": LABEL_COLUMN, "labels": labels})
    )
    params: dict[str, Any] = {
        "data": {"source": str(source), "text_columns": TEXT_COLUMNS, "label_column": LABEL_COLUMN},
        "mlflow": {"tracking_uri": tracking_uri or "sqlite:///mlflow.db", "experiment": "test"},
        "ray": {"storage_path": "ray_results"},
        "model": {"base": "all-minilm-l6-v2", "max_length": max_length, "dir": "models/model"},
        "train": {
            "epochs": epochs,
            "batch_size": 8,
            "lr": 3e-4,
            "num_workers": num_workers,
            "cpus_per_worker": 1,
            "early_stopping_patience": 0,
            "max_failures": 2,
        },
    }
    for section, values in (extra or {}).items():
        params.setdefault(section, {}).update(values)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
