"""The image task's data checks on the four raw IDX files: every problem, with counts and
example indices (the image's index in its file).

Files are checked from their bytes, so a test can corrupt a file in memory and validate it the
way `ml data validate` validates data/raw/.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.data.validate import MAX_EXAMPLES, Problem, ValidationReport
from ml.io import sha256_file
from ml.tasks.image_classification import idx

if TYPE_CHECKING:
    import numpy as np

    from ml.config import Settings

# The four files by role; "train"/"holdout" hold the images, "*_labels" their label ids.
ROLES = ("train", "train_labels", "holdout", "holdout_labels")

# What each check catches; the report lists these.
CHECKS: dict[str, str] = {
    "missing_file": "a data file is absent from data/raw/ (ingest did not run)",
    "bad_gzip": "the file is not gzip-compressed, or the gzip stream is damaged or truncated",
    "bad_idx": "the IDX header (magic number, dimensions) does not describe the file's bytes",
    "wrong_dtype": "images are not unsigned bytes, or labels are not integers",
    "wrong_dimensions": "images are not N x image.height x image.width, or labels not one per row",
    "empty_file": "the file holds no images or labels",
    "count_mismatch": "an images file and its labels file hold different numbers of rows",
    "undeclared_labels": "data.labels does not name the classes (the names of label ids 0..k-1)",
    "unknown_label": "a label id outside the declared classes 0..len(data.labels)-1",
    "blank_image": "an image whose pixels all have one value",
    "duplicate_image": "a share of a file's images above validate.max_duplicate_share repeats "
    "another image of the same file (by content hash)",
    "conflicting_labels": "the same image (by content hash) with different labels in one file",
    "leakage_image": "a share of the holdout above validate.max_leakage_share is also in train "
    "(by content hash)",
    "too_few_examples": "a class has fewer training images than validate.min_examples_per_class",
    "missing_class": "a declared class has no training images",
}


@dataclass
class _File:
    """One decoded split: its images and labels (None where they failed their checks)."""

    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)


def _indices(mask: np.ndarray) -> list[int]:
    import numpy as np

    return [int(i) for i in np.flatnonzero(mask)[:MAX_EXAMPLES]]


def _decode(raw: bytes | None, role: str, problems: list[Problem]) -> np.ndarray | None:
    if raw is None:
        problems.append(Problem("missing_file", role, "file not found; run `ml data ingest`", 0))
        return None
    try:
        return idx.parse(idx.decompress(raw, role), role)
    except idx.IdxError as exc:
        problems.append(Problem(exc.kind, role, str(exc), 0))
        return None


def _check_images(array: np.ndarray, role: str, settings: Settings) -> list[Problem]:
    height, width = settings.image.height, settings.image.width
    problems = []
    if array.dtype.kind != "u" or array.dtype.itemsize != 1:
        problems.append(
            Problem(
                "wrong_dtype",
                role,
                f"images are {array.dtype}, expected unsigned bytes (IDX type 0x08, magic "
                f"{idx.IMAGES_MAGIC})",
                len(array),
            )
        )
    if array.ndim != 3 or array.shape[1:] != (height, width):
        problems.append(
            Problem(
                "wrong_dimensions",
                role,
                f"images have shape {list(array.shape)}, expected N x {height} x {width} "
                "(image.height x image.width); is this the images file?",
                len(array),
            )
        )
    return problems


def _check_labels(array: np.ndarray, role: str) -> list[Problem]:
    problems = []
    if array.dtype.kind not in "ui":
        problems.append(
            Problem("wrong_dtype", role, f"labels are {array.dtype}, expected integers", len(array))
        )
    if array.ndim != 1:
        problems.append(
            Problem(
                "wrong_dimensions",
                role,
                f"labels have shape {list(array.shape)}, expected one label per image (1 "
                f"dimension, magic {idx.LABELS_MAGIC}); is this the labels file?",
                len(array),
            )
        )
    return problems


def decode_split(
    images_raw: bytes | None, labels_raw: bytes | None, name: str, settings: Settings
) -> _File:
    """Decode one images file and its labels file, with every format problem found."""
    out = _File()
    images = _decode(images_raw, name, out.problems)
    labels = _decode(labels_raw, f"{name}_labels", out.problems)
    if images is not None:
        found = _check_images(images, name, settings)
        out.problems += found
        out.images = None if found else images
    if labels is not None:
        found = _check_labels(labels, f"{name}_labels")
        out.problems += found
        out.labels = None if found else labels.astype("int64")
    for attribute, role in (("images", name), ("labels", f"{name}_labels")):
        array = getattr(out, attribute)
        if array is not None and len(array) == 0:
            out.problems.append(Problem("empty_file", role, "the file holds no rows", 0))
            setattr(out, attribute, None)
    if out.images is not None and out.labels is not None and len(out.images) != len(out.labels):
        n_images, n_labels = len(out.images), len(out.labels)
        out.problems.append(
            Problem(
                "count_mismatch",
                name,
                f"{n_images} images but {n_labels} labels in {name}_labels; the files must "
                "come from the same release (indices without a partner shown)",
                abs(n_images - n_labels),
                list(range(min(n_images, n_labels), max(n_images, n_labels)))[:MAX_EXAMPLES],
            )
        )
        out.labels = None
    return out


def content_keys(images: np.ndarray) -> np.ndarray:
    """The sha256 of each image's bytes, as an object array of 32-byte digests."""
    import numpy as np

    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([hashlib.sha256(row).digest() for row in flat], dtype=object)


def _content_problems(
    images: np.ndarray, labels: np.ndarray | None, keys: np.ndarray, name: str, settings: Settings
) -> list[Problem]:
    import pandas as pd

    problems = []
    # blank as in drift.image_statistics (every pixel the same), without its float statistics.
    flat = images.reshape(len(images), -1)
    blank = flat.min(axis=1) == flat.max(axis=1)
    if blank.any():
        problems.append(
            Problem(
                "blank_image",
                name,
                f"{int(blank.sum())} constant (blank) image(s) (indices shown); remove them",
                int(blank.sum()),
                _indices(blank),
            )
        )
    series = pd.Series(keys)
    repeats = series.duplicated(keep="first").to_numpy()
    share, limit = repeats.mean(), settings.validate_.max_duplicate_share
    if share > limit:
        problems.append(
            Problem(
                "duplicate_image",
                name,
                f"{int(repeats.sum())} image(s) repeat an earlier image of the file (share "
                f"{share:.4f} > validate.max_duplicate_share {limit}; indices of repeats shown)",
                int(repeats.sum()),
                _indices(repeats),
            )
        )
    if labels is not None:
        per_key = pd.Series(labels).groupby(series).nunique()
        conflicting = series.isin(per_key.index[per_key > 1]).to_numpy()
        if conflicting.any():
            problems.append(
                Problem(
                    "conflicting_labels",
                    name,
                    f"{int(conflicting.sum())} image(s) that appear with different labels "
                    "(indices shown)",
                    int(conflicting.sum()),
                    _indices(conflicting),
                )
            )
    return problems


def _label_problems(labels: np.ndarray, name: str, classes: list[str]) -> list[Problem]:
    import numpy as np

    if not classes:
        return [
            Problem(
                "undeclared_labels",
                name,
                f"data.labels is empty; list the class names in label-id order (ids seen: "
                f"{sorted(int(i) for i in np.unique(labels))[:20]})",
                len(labels),
            )
        ]
    unknown = (labels < 0) | (labels >= len(classes))
    if not unknown.any():
        return []
    ids = sorted(int(i) for i in np.unique(labels[unknown]))
    return [
        Problem(
            "unknown_label",
            f"{name}_labels",
            f"label ids {ids[:10]} outside 0..{len(classes) - 1} (data.labels names "
            f"{len(classes)} classes; indices shown)",
            int(unknown.sum()),
            _indices(unknown),
        )
    ]


def _support_problems(counts: dict[str, int], settings: Settings) -> list[Problem]:
    problems = []
    minimum = settings.validate_.min_examples_per_class
    weak = {k: v for k, v in counts.items() if 0 < v < minimum}
    if weak:
        problems.append(
            Problem(
                "too_few_examples",
                "train",
                f"classes below {minimum} training images: {weak}",
                sum(weak.values()),
                sorted(weak)[:MAX_EXAMPLES],
            )
        )
    absent = [label for label, n in counts.items() if n == 0]
    if absent:
        problems.append(
            Problem(
                "missing_class", "train", f"declared classes with no images: {absent}", 0, absent
            )
        )
    return problems


def _leakage(train_keys: np.ndarray, holdout_keys: np.ndarray, settings: Settings):
    import numpy as np

    seen = set(train_keys)
    leaked = np.fromiter((key in seen for key in holdout_keys), bool, len(holdout_keys))
    share, limit = leaked.mean(), settings.validate_.max_leakage_share
    if not leaked.any() or share <= limit:
        return []
    return [
        Problem(
            "leakage_image",
            "train+holdout",
            f"{int(leaked.sum())} holdout image(s) also in train (share {share:.4f} > "
            f"validate.max_leakage_share {limit}; holdout indices shown)",
            int(leaked.sum()),
            _indices(leaked),
        )
    ]


def validate_contents(
    contents: dict[str, bytes | None], settings: Settings
) -> tuple[list[Problem], dict[str, dict[str, int]], dict[str, int]]:
    """Every check on the four files' bytes (role -> bytes, None: absent).

    Returns (problems, class counts per split, rows per role)."""
    import numpy as np

    classes = list(settings.data.labels)
    problems: list[Problem] = []
    counts: dict[str, dict[str, int]] = {}
    rows: dict[str, int] = {}
    keys: dict[str, np.ndarray] = {}
    for name in ("train", "holdout"):
        split = decode_split(contents.get(name), contents.get(f"{name}_labels"), name, settings)
        problems += split.problems
        labels = split.labels
        if labels is not None:
            rows[f"{name}_labels"] = len(labels)
            found = _label_problems(labels, name, classes)
            problems += found
            if found:
                labels = None
        if split.images is not None:
            rows[name] = len(split.images)
            keys[name] = content_keys(split.images)
            problems += _content_problems(split.images, labels, keys[name], name, settings)
        if labels is not None and split.images is not None:
            ids = np.bincount(labels, minlength=len(classes))
            counts[name] = {label: int(ids[i]) for i, label in enumerate(classes)}
    if "train" in counts:
        problems += _support_problems(counts["train"], settings)
    if "train" in keys and "holdout" in keys:
        problems += _leakage(keys["train"], keys["holdout"], settings)
    return problems, counts, rows


def raw_paths(settings: Settings) -> dict[str, Path]:
    from ml.tasks.image_classification.data import source_files

    raw_dir = settings.path(settings.data.raw_dir)
    return {role: raw_dir / name for role, name in zip(ROLES, source_files(settings), strict=True)}


def validate_files(settings: Settings) -> ValidationReport:
    """Validate data/raw/'s four IDX files (the report the generic validate stage writes)."""
    paths = raw_paths(settings)
    contents = {role: (p.read_bytes() if p.is_file() else None) for role, p in paths.items()}
    problems, counts, rows = validate_contents(contents, settings)
    files: dict[str, Any] = {
        role: {
            "path": str(Path(settings.data.raw_dir) / path.name),
            "sha256": sha256_file(path),
            "rows": rows.get(role, 0),
        }
        for role, path in paths.items()
        if contents[role] is not None
    }
    return ValidationReport(
        not problems, list(settings.data.labels), files, counts, problems, dict(CHECKS)
    )
