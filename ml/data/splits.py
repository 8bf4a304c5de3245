"""The one home for split names and paths: data/splits/{train,val,test}<task suffix>.

Every stage that reads or writes a split (split, train, evaluate, gate, monitor, registry) asks
here, so a task's split format (text: .csv, image: .npz) is named in one place, its Task.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ml.errors import UserError

if TYPE_CHECKING:
    from ml.config import Settings

SPLITS: tuple[str, ...] = ("train", "val", "test")
LABELS_FILE = "labels.json"


class SplitReadError(UserError):
    """A split file is missing or not in the form `ml data split` writes; rerun the split."""


def splits_dir(settings: Settings) -> Path:
    return settings.path(settings.data.splits_dir)


def split_path(settings: Settings, name: str) -> Path:
    """data/splits/<name><suffix> for split `name` (one of SPLITS) of the configured task."""
    from ml.tasks import task_of

    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
    return splits_dir(settings) / f"{name}{task_of(settings).split_suffix}"


def split_paths(settings: Settings) -> dict[str, Path]:
    """Every split's path by name."""
    return {name: split_path(settings, name) for name in SPLITS}


def labels_path(settings: Settings) -> Path:
    """data/splits/labels.json: the label set the split saw (written by `ml data split`)."""
    return splits_dir(settings) / LABELS_FILE


def require_split(path: Path) -> Path:
    """`path`, or a SplitReadError saying to run the split first."""
    if not path.is_file():
        raise SplitReadError(f"split file not found: {path}; run `ml data split` first")
    return path
