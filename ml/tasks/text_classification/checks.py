"""The text task's data checks: schema and content of the raw train and holdout CSV files.

Every problem is collected (never just the first) with a row count and examples. Column and type
checks are a pandera schema; cross-file checks (leakage, class support) are plain pandas on top.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pandas as pd

from ml.config import DataSettings, ValidateSettings
from ml.data.text import combine_text, normalise_text
from ml.data.validate import MAX_EXAMPLES, Problem
from ml.data.validate import examples as _examples

# What each check catches; `ml data validate --help` and the docs list these.
CHECKS: dict[str, str] = {
    "missing_file": "a data file is absent from data/raw/ (ingest did not run)",
    "malformed_csv": "the file does not parse as CSV",
    "bad_encoding": "invalid UTF-8, replacement characters, mojibake or control characters",
    "empty_file": "the file has a header but no rows",
    "missing_column": "a required column (id, label, text) is absent",
    "missing_id": "an id cell is empty",
    "invalid_id": "an id is not an integer",
    "duplicate_id": "the same id appears on more than one row",
    "missing_label": "a label cell is empty",
    "unknown_label": "a label outside the declared set (or, for the holdout, unseen in training)",
    "empty_text": "all text columns of a row are empty",
    "text_too_short": "the combined text is shorter than validate.min_text_chars",
    "text_too_long": "the combined text is longer than validate.max_text_chars",
    "duplicate_text": "the same text appears on more than one row of a file",
    "conflicting_labels": "the same text appears with different labels",
    "too_few_examples": "a class has fewer training rows than validate.min_examples_per_class",
    "missing_class": "a declared label has no training rows",
    "leakage_id": "an id appears in both train and holdout",
    "leakage_text": "a text appears in both train and holdout",
}

_MOJIBAKE = re.compile(r"Ã[\x80-\xbf]|â€|Â[\x80-\xbf ]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_csv_checked(raw: bytes, name: str) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Decode and parse CSV bytes; encoding and parse failures become problems, not exceptions."""
    problems: list[Problem] = []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8-sig", errors="replace")
        problems.append(
            Problem(
                "bad_encoding",
                name,
                f"not valid UTF-8 (first bad byte at offset {exc.start}); re-save the file as "
                "UTF-8",
                text.count("\ufffd"),
                [raw[max(0, exc.start - 20) : exc.start + 20].decode("utf-8", "replace")],
            )
        )
    control = _CONTROL.findall(text)
    if control:
        lines = sorted({text.count("\n", 0, m.start()) + 1 for m in _CONTROL.finditer(text)})
        problems.append(
            Problem(
                "bad_encoding",
                name,
                f"control characters {sorted(set(map(repr, control)))} in the file (line numbers "
                "shown); remove them",
                len(lines),
                lines[:MAX_EXAMPLES],
            )
        )
        # Parsers stop at NUL bytes; blank the characters so the remaining checks still run.
        text = _CONTROL.sub(" ", text)
    if not text.strip():
        return None, [*problems, Problem("empty_file", name, "the file is empty", 0)]
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        message = str(exc).strip().splitlines()[0]
        return None, [*problems, Problem("malformed_csv", name, f"cannot parse CSV: {message}", 0)]
    return frame, problems


def _schema(data: DataSettings, labels: list[str]) -> Any:
    import pandera.pandas as pa

    label_checks = [pa.Check.isin(labels)] if labels else []
    return pa.DataFrameSchema(
        {
            data.id_column: pa.Column("Int64", coerce=True, nullable=False, unique=True),
            data.label_column: pa.Column(str, nullable=False, checks=label_checks),
            **{column: pa.Column(str, nullable=True) for column in data.text_columns},
        },
        strict=False,
    )


def _schema_problems(frame: pd.DataFrame, name: str, data: DataSettings, labels: list[str]):
    """Run the pandera schema lazily and name each kind of failure."""
    import pandera.errors

    try:
        _schema(data, labels).validate(frame, lazy=True)
        return []
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases
    problems = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        check = str(check)
        failing = group["failure_case"]
        if check.startswith("column_in_dataframe"):
            missing = list(failing.astype(str))
            problems.append(
                Problem(
                    "missing_column",
                    name,
                    f"required column(s) {missing} absent; columns present: {list(frame.columns)}",
                    0,
                    missing,
                )
            )
        elif check.startswith("coerce_dtype"):
            problems.append(
                Problem(
                    "invalid_id",
                    name,
                    f"{column!r} must hold integers",
                    len(group),
                    _examples(failing),
                )
            )
        elif check == "not_nullable":
            kind = "missing_id" if column == data.id_column else "missing_label"
            problems.append(
                Problem(
                    kind, name, f"empty {column!r} cells", len(group), _examples(group["index"])
                )
            )
        elif check == "field_uniqueness":
            problems.append(
                Problem(
                    "duplicate_id",
                    name,
                    f"{failing.nunique()} id(s) repeated across {len(group)} rows",
                    len(group),
                    _examples(failing.drop_duplicates()),
                )
            )
        elif check.startswith("isin"):
            unknown = sorted(set(failing.astype(str)))
            problems.append(
                Problem(
                    "unknown_label",
                    name,
                    f"labels outside the known set {labels}: {unknown}",
                    len(group),
                    _examples(unknown),
                )
            )
        elif check.startswith("dtype"):
            continue  # text read as str cannot mismatch; a coerce failure is reported above
        else:
            problems.append(
                Problem(check, name, f"{column}: {check}", len(group), _examples(failing))
            )
    return problems


def _content_problems(
    frame: pd.DataFrame, name: str, data: DataSettings, limits: ValidateSettings
) -> list[Problem]:
    problems: list[Problem] = []
    text_cells = frame[data.text_columns].fillna("").astype(str)
    text = combine_text(frame, data.text_columns)
    ids = frame[data.id_column]

    def add(kind: str, mask: pd.Series, message: str) -> None:
        if mask.any():
            problems.append(Problem(kind, name, message, int(mask.sum()), _examples(ids[mask])))

    bad_chars = text_cells.apply(
        lambda col: (
            col.str.contains("\ufffd", regex=False)
            | col.str.contains(_MOJIBAKE)
            | col.str.contains(_CONTROL)
        )
    ).any(axis=1)
    add(
        "bad_encoding",
        bad_chars,
        "replacement characters, mojibake (UTF-8 read as Latin-1) or control characters in text; "
        "example ids shown",
    )
    lengths = text.str.len()
    add("empty_text", lengths == 0, f"rows whose {data.text_columns} are all empty (ids shown)")
    add(
        "text_too_short",
        (lengths > 0) & (lengths < limits.min_text_chars),
        f"text shorter than {limits.min_text_chars} characters (ids shown)",
    )
    add(
        "text_too_long",
        lengths > limits.max_text_chars,
        f"text longer than {limits.max_text_chars} characters (ids shown)",
    )
    key = normalise_text(text)
    nonempty = key != ""
    add(
        "duplicate_text",
        key.duplicated(keep=False) & nonempty,
        "the same text on several rows (ids shown); keep one of each",
    )
    labels_per_text = frame[nonempty].groupby(key[nonempty])[data.label_column].nunique()
    conflicting = key.isin(labels_per_text[labels_per_text > 1].index)
    add("conflicting_labels", conflicting, "the same text with different labels (ids shown)")
    return problems


def _leakage_problems(train: pd.DataFrame, holdout: pd.DataFrame, data: DataSettings):
    problems = []
    shared_ids = sorted(set(train[data.id_column].dropna()) & set(holdout[data.id_column].dropna()))
    if shared_ids:
        problems.append(
            Problem(
                "leakage_id",
                "train+holdout",
                f"{len(shared_ids)} id(s) in both train and holdout",
                len(shared_ids),
                _examples(shared_ids),
            )
        )
    train_text = set(normalise_text(combine_text(train, data.text_columns)))
    holdout_text = normalise_text(combine_text(holdout, data.text_columns))
    leaked = holdout_text.isin(train_text - {""})
    if leaked.any():
        problems.append(
            Problem(
                "leakage_text",
                "train+holdout",
                f"{int(leaked.sum())} holdout text(s) also in train (holdout ids shown)",
                int(leaked.sum()),
                _examples(holdout[data.id_column][leaked]),
            )
        )
    return problems


def validate_frames(
    train: pd.DataFrame | None,
    holdout: pd.DataFrame | None,
    data: DataSettings,
    limits: ValidateSettings,
) -> tuple[list[Problem], list[str], dict[str, dict[str, int]]]:
    """All checks on parsed frames. Returns (problems, label set, class counts per file)."""
    problems: list[Problem] = []
    required = [data.id_column, data.label_column, *data.text_columns]
    usable: dict[str, pd.DataFrame] = {}
    for name, frame in (("train", train), ("holdout", holdout)):
        if frame is None:
            continue
        if frame.empty:
            problems.append(Problem("empty_file", name, "the file has a header but no rows", 0))
            continue
        usable[name] = frame

    declared = list(data.labels)
    labels = declared
    if not labels and "train" in usable and data.label_column in usable["train"]:
        labels = sorted(usable["train"][data.label_column].dropna().astype(str).unique())

    counts: dict[str, dict[str, int]] = {}
    for name, frame in usable.items():
        # Train labels are "known" by definition when no set is declared.
        known = labels if (declared or name == "holdout") else []
        problems += _schema_problems(frame, name, data, known)
        if any(column not in frame.columns for column in required):
            continue  # content checks need every required column
        problems += _content_problems(frame, name, data, limits)
        counts[name] = {
            str(k): int(v) for k, v in frame[data.label_column].value_counts().sort_index().items()
        }

    if "train" in counts:
        train_counts = counts["train"]
        weak = {k: v for k, v in train_counts.items() if v < limits.min_examples_per_class}
        if weak:
            problems.append(
                Problem(
                    "too_few_examples",
                    "train",
                    f"classes below {limits.min_examples_per_class} training rows: {weak}",
                    sum(weak.values()),
                    _examples(sorted(weak)),
                )
            )
        absent = [label for label in declared if label not in train_counts]
        if absent:
            problems.append(
                Problem(
                    "missing_class", "train", f"declared labels with no rows: {absent}", 0, absent
                )
            )
    if "train" in counts and "holdout" in counts:
        problems += _leakage_problems(usable["train"], usable["holdout"], data)
    return problems, labels, counts


def validate_bytes(
    train: bytes | None, holdout: bytes | None, data: DataSettings, limits: ValidateSettings
) -> tuple[list[Problem], list[str], dict[str, dict[str, int]], dict[str, int]]:
    """Parse and check raw file contents (None: file absent).

    Returns (problems, label set, class counts per file, row counts per file)."""
    problems: list[Problem] = []
    frames: dict[str, pd.DataFrame | None] = {}
    for name, raw in (("train", train), ("holdout", holdout)):
        if raw is None:
            problems.append(
                Problem("missing_file", name, "file not found; run `ml data ingest`", 0)
            )
            frames[name] = None
            continue
        frames[name], read_problems = read_csv_checked(raw, name)
        problems += read_problems
    content, labels, counts = validate_frames(frames["train"], frames["holdout"], data, limits)
    rows = {name: (0 if frame is None else len(frame)) for name, frame in frames.items()}
    return problems + content, labels, counts, rows
