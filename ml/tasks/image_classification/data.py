"""The image task's data: the four IDX files, their validation, the .npz splits and their reader.

A split is data/splits/<name>.npz holding `images` (uint8 N x H x W), `labels` (int64 ids into
data.labels) and `ids` (int64: the image's index in its source IDX file).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ml.data.splits import SplitReadError, labels_path, require_split, split_path
from ml.io import atomic_path, write_json
from ml.tasks.base import Examples
from ml.tasks.image_classification import idx

if TYPE_CHECKING:
    import numpy as np

    from ml.config import Settings
    from ml.data.split import SplitResult
    from ml.data.validate import ValidationReport

SPLIT_ARRAYS = ("images", "labels", "ids")


def source_files(settings: Settings) -> list[str]:
    """The four IDX .gz files: train images and labels, holdout images and labels."""
    from ml.config import ConfigError

    data = settings.data
    if not data.train_labels_file or not data.holdout_labels_file:
        raise ConfigError(
            "the image-classification task needs data.train_labels_file and "
            "data.holdout_labels_file (the IDX label files), e.g. train-labels-idx1-ubyte.gz "
            "and t10k-labels-idx1-ubyte.gz; see configs/fashion-mnist.yaml"
        )
    return [data.train_file, data.train_labels_file, data.holdout_file, data.holdout_labels_file]


def _capped(labels: np.ndarray, max_rows: int) -> np.ndarray:
    """Row positions of a capped read: the first rows of each class in proportion, every class
    kept, in file order."""
    import numpy as np

    keep: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rows[: max(1, max_rows * len(rows) // len(labels))])
    return np.sort(np.concatenate(keep))[:max_rows]


def read_split(settings: Settings, path: Path, max_rows: int | None = None) -> Examples:
    """An image split (.npz) as Examples: inputs uint8 N x H x W, labels the class names,
    ids the source-file indices, details mean_intensity and contrast per image."""
    import numpy as np

    names = list(settings.data.labels)
    try:
        with np.load(require_split(path), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in SPLIT_ARRAYS}
    except KeyError as exc:
        raise SplitReadError(f"{path} lacks array {exc}; rerun `ml data split`") from exc
    except (OSError, ValueError) as exc:
        raise SplitReadError(
            f"{path} is not a split archive ({exc}); rerun `ml data split`"
        ) from exc
    images, labels, ids = arrays["images"], arrays["labels"], arrays["ids"]
    if images.ndim != 3 or images.dtype != np.uint8 or not len(images) == len(labels) == len(ids):
        raise SplitReadError(
            f"{path} holds images {images.dtype} {list(images.shape)}, {len(labels)} labels and "
            f"{len(ids)} ids; expected uint8 N x H x W with one label and id each. Rerun "
            "`ml data split`"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise SplitReadError(
            f"{path} has label ids outside data.labels ({len(names)} names); the params' "
            "labels changed since the split: rerun `ml data split`"
        )
    if max_rows is not None and len(labels) > max_rows:
        rows = _capped(labels, max_rows)
        images, labels, ids = images[rows], labels[rows], ids[rows]
    from ml.tasks.image_classification.drift import image_statistics

    stats = image_statistics(images)
    return Examples(
        inputs=images,
        labels=[names[i] for i in labels],
        ids=[int(i) for i in ids],
        details={key: stats[key].tolist() for key in ("mean_intensity", "contrast")},
    )


def validate(settings: Settings) -> ValidationReport:
    from ml.tasks.image_classification.checks import validate_files

    return validate_files(settings)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (np.load reads it) written atomically, its bytes a function of the arrays alone
    (fixed zip timestamps), so an unchanged split keeps its DVC hash."""
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)


def _load_raw(settings: Settings, images_role: str) -> tuple[np.ndarray, np.ndarray]:
    from ml.data.split import SplitError
    from ml.tasks.image_classification.checks import raw_paths

    paths = raw_paths(settings)
    try:
        return idx.read(paths[images_role]), idx.read(paths[f"{images_role}_labels"])
    except (OSError, idx.IdxError) as exc:
        raise SplitError(f"cannot read the raw files: {exc}; run `ml data validate`") from exc


def _subset_rows(labels: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    import numpy as np
    import pandas as pd

    from ml.data.split import stratified_subset

    frame = pd.DataFrame({"label": labels})
    return stratified_subset(frame, "label", max_rows, seed).index.to_numpy(dtype=np.int64)


def write_splits(settings: Settings) -> SplitResult:
    """Stratified, seeded train/val from the train files; the holdout files as test (seeded
    stratified subsets where split.max_train_rows / max_holdout_rows ask)."""
    import numpy as np
    import pandas as pd

    from ml.data.split import SplitResult, stratified_split

    cfg = settings.split
    images, labels = _load_raw(settings, "train")
    test_images, test_labels = _load_raw(settings, "holdout")
    pool = _subset_rows(labels, cfg.max_train_rows, cfg.seed)
    frame = pd.DataFrame({"label": labels[pool]}, index=pool)
    train, val = stratified_split(frame, "label", cfg.val_fraction, cfg.seed)
    test = _subset_rows(test_labels, cfg.max_holdout_rows, cfg.seed)
    splits = {
        "train": (images, labels, train.index.to_numpy(dtype=np.int64)),
        "val": (images, labels, val.index.to_numpy(dtype=np.int64)),
        "test": (test_images, test_labels, test),
    }
    for name, (source, ids, rows) in splits.items():
        arrays = {"images": source[rows], "labels": ids[rows].astype(np.int64), "ids": rows}
        write_npz(split_path(settings, name), arrays)
    names = list(settings.data.labels)
    write_json(labels_path(settings), {"label_column": "label", "labels": names})
    return SplitResult(len(train), len(val), len(test), names)
