"""Property tests for data validation: valid data passes; each kind of corruption is named.

Frames go through CSV bytes, the same path `ml data validate` takes on real files.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.config import DataSettings, ValidateSettings
from ml.tasks.text_classification.checks import CHECKS, validate_bytes

DATA = DataSettings(source="unused")
LIMITS = ValidateSettings(min_examples_per_class=3, min_text_chars=10, max_text_chars=400)

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)
LABELS = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=2, max_size=12).filter(
        lambda s: s.strip("-")
    ),
    min_size=2,
    max_size=4,
    unique=True,
)


@st.composite
def datasets(draw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A valid (train, holdout) pair: unique ids and texts, every class well supported."""
    labels = draw(LABELS)
    rows = []
    for label in labels:
        for _ in range(draw(st.integers(LIMITS.min_examples_per_class, 6))):
            rows.append(label)
    holdout_labels = draw(st.lists(st.sampled_from(labels), min_size=1, max_size=6))
    all_labels = rows + holdout_labels
    ids = draw(
        st.lists(
            st.integers(1, 10**6), min_size=len(all_labels), max_size=len(all_labels), unique=True
        )
    )
    records = []
    for i, (row_id, label) in enumerate(zip(ids, all_labels, strict=True)):
        title = " ".join(draw(st.lists(WORDS, min_size=1, max_size=4)))
        description = " ".join(draw(st.lists(WORDS, min_size=0, max_size=8)))
        # The row number keeps texts unique whatever words were drawn.
        records.append(
            {
                "id": row_id,
                "title": f"{title} sample {i:04d}",
                "description": description,
                "tag": label,
            }
        )
    frame = pd.DataFrame(records)
    return frame.iloc[: len(rows)].reset_index(drop=True), frame.iloc[len(rows) :].reset_index(
        drop=True
    )


def to_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def kinds(train: bytes, holdout: bytes, data: DataSettings = DATA) -> set[str]:
    problems, *_ = validate_bytes(train, holdout, data, LIMITS)
    return {p.check for p in problems}


FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(datasets())
def test_valid_data_passes(pair):
    train, holdout = pair
    problems, labels, counts, rows = validate_bytes(
        to_bytes(train), to_bytes(holdout), DATA, LIMITS
    )
    assert problems == []
    assert labels == sorted(train["tag"].unique())
    assert rows == {"train": len(train), "holdout": len(holdout)}
    assert sum(counts["train"].values()) == len(train)


# Each corruption: (train, holdout) frames -> (train bytes, holdout bytes, data settings).
Corruption = Callable[[pd.DataFrame, pd.DataFrame], tuple[bytes, bytes, DataSettings]]


def _frames(train, holdout, data=DATA):
    return to_bytes(train), to_bytes(holdout), data


def _set(frame, row, column, value):
    frame = frame.astype({column: object}).copy()
    frame.loc[row, column] = value
    return frame


def malformed_csv(train, holdout):
    broken = to_bytes(holdout) + b'1,"a row,with,too,many,fields",x,y,z,extra\n'
    return to_bytes(train), broken, DATA


def invalid_utf8(train, holdout):
    raw = to_bytes(train).replace(b"sample 0000", b"sample \xff\xfe00", 1)
    return raw, to_bytes(holdout), DATA


def mojibake(train, holdout):
    return _frames(_set(train, 0, "title", "CafÃ© rÃ©sumÃ© classifier"), holdout)


def control_characters(train, holdout):
    return _frames(_set(train, 0, "description", "null byte \x00 inside text"), holdout)


def empty_file(train, holdout):
    return to_bytes(train), to_bytes(holdout.iloc[0:0]), DATA


def missing_column(train, holdout):
    return _frames(train.drop(columns=["tag"]), holdout)


def missing_id(train, holdout):
    return _frames(_set(train, 0, "id", None), holdout)


def invalid_id(train, holdout):
    return _frames(_set(train, 0, "id", "not-a-number"), holdout)


def duplicate_id(train, holdout):
    return _frames(_set(train, 1, "id", train.loc[0, "id"]), holdout)


def missing_label(train, holdout):
    return _frames(_set(train, 0, "tag", None), holdout)


def unknown_label_in_holdout(train, holdout):
    return _frames(train, _set(holdout, 0, "tag", "label-never-seen-in-training"))


def unknown_label_declared(train, holdout):
    declared = DataSettings(
        source="unused", labels=sorted(set(train["tag"]) - {train.loc[0, "tag"]})
    )
    return *_frames(train, holdout)[:2], declared


def empty_text(train, holdout):
    return _frames(_set(_set(train, 0, "title", "   "), 0, "description", None), holdout)


def text_too_short(train, holdout):
    return _frames(_set(_set(train, 0, "title", "tiny"), 0, "description", None), holdout)


def text_too_long(train, holdout):
    return _frames(_set(train, 0, "description", "word " * LIMITS.max_text_chars), holdout)


def duplicate_text(train, holdout):
    copy = train.copy()
    same_label = copy.index[(copy["tag"] == copy.loc[0, "tag"]) & (copy.index != 0)][0]
    copy.loc[same_label, ["title", "description"]] = copy.loc[0, ["title", "description"]].values
    return _frames(copy, holdout)


def conflicting_labels(train, holdout):
    copy = train.copy()
    other = copy.index[copy["tag"] != copy.loc[0, "tag"]][0]
    # Case and spacing differences do not make a text different.
    copy.loc[other, "title"] = "  " + copy.loc[0, "title"].upper()
    copy.loc[other, "description"] = copy.loc[0, "description"]
    return _frames(copy, holdout)


def too_few_examples(train, holdout):
    label = train.loc[0, "tag"]
    keep = train[train["tag"] != label]
    return _frames(pd.concat([train.iloc[[0]], keep]).reset_index(drop=True), holdout)


def missing_class(train, holdout):
    declared = DataSettings(source="unused", labels=[*sorted(set(train["tag"])), "absent-class"])
    return *_frames(train, holdout)[:2], declared


def leakage_id(train, holdout):
    return _frames(train, _set(holdout, 0, "id", train.loc[0, "id"]))


def leakage_text(train, holdout):
    copy = holdout.copy()
    copy.loc[0, ["title", "description"]] = train.loc[0, ["title", "description"]].values
    return _frames(train, copy)


CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "malformed_csv": (malformed_csv, "malformed_csv"),
    "invalid_utf8": (invalid_utf8, "bad_encoding"),
    "mojibake": (mojibake, "bad_encoding"),
    "control_characters": (control_characters, "bad_encoding"),
    "empty_file": (empty_file, "empty_file"),
    "missing_column": (missing_column, "missing_column"),
    "missing_id": (missing_id, "missing_id"),
    "invalid_id": (invalid_id, "invalid_id"),
    "duplicate_id": (duplicate_id, "duplicate_id"),
    "missing_label": (missing_label, "missing_label"),
    "unknown_label_in_holdout": (unknown_label_in_holdout, "unknown_label"),
    "unknown_label_declared": (unknown_label_declared, "unknown_label"),
    "empty_text": (empty_text, "empty_text"),
    "text_too_short": (text_too_short, "text_too_short"),
    "text_too_long": (text_too_long, "text_too_long"),
    "duplicate_text": (duplicate_text, "duplicate_text"),
    "conflicting_labels": (conflicting_labels, "conflicting_labels"),
    "too_few_examples": (too_few_examples, "too_few_examples"),
    "missing_class": (missing_class, "missing_class"),
    "leakage_id": (leakage_id, "leakage_id"),
    "leakage_text": (leakage_text, "leakage_text"),
}


def test_corruptions_cover_every_named_check():
    expected = {kind for _, kind in CORRUPTIONS.values()}
    assert len(CORRUPTIONS) >= 15
    # missing_file is a file-system condition, exercised in test_real_data.py.
    assert expected == set(CHECKS) - {"missing_file"}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@FAST
@given(pair=datasets())
def test_each_corruption_is_named(name, pair):
    corrupt, expected_kind = CORRUPTIONS[name]
    train, holdout, data = corrupt(*pair)
    found = kinds(train, holdout, data)
    assert expected_kind in found, f"{name}: expected {expected_kind}, got {sorted(found)}"


@FAST
@given(
    pair=datasets(),
    picks=st.lists(
        st.sampled_from(["missing_id", "text_too_long", "leakage_id", "mojibake"]),
        min_size=2,
        max_size=4,
        unique=True,
    ),
)
def test_every_problem_is_listed_not_just_the_first(pair, picks):
    """Several independent corruptions at once: all of them are reported together."""
    train, holdout = pair
    train = train.copy()
    holdout = holdout.copy()
    if "missing_id" in picks:
        train = _set(train, 1, "id", None)
    if "text_too_long" in picks:
        train = _set(train, 2, "description", "word " * LIMITS.max_text_chars)
    if "leakage_id" in picks:
        holdout = _set(holdout, 0, "id", train.loc[0, "id"])
    if "mojibake" in picks:
        train = _set(train, 0, "title", "naÃ¯ve bayes baseline")
    expected = {"mojibake": "bad_encoding"}
    found = kinds(to_bytes(train), to_bytes(holdout))
    assert {expected.get(p, p) for p in picks} <= found
