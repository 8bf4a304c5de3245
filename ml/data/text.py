"""How a row becomes the text the model sees; shared by validation, training and serving."""

from __future__ import annotations

import re

import pandas as pd

_WHITESPACE = re.compile(r"\s+")


def combine_text(frame: pd.DataFrame, columns: list[str], separator: str = " ") -> pd.Series:
    """Join the text columns of each row (missing cells count as empty), whitespace collapsed."""
    parts = frame[columns].fillna("").astype(str)
    joined = parts.agg(separator.join, axis=1) if len(frame) else pd.Series([], dtype=str)
    return joined.str.replace(_WHITESPACE, " ", regex=True).str.strip()


def normalise_text(text: pd.Series) -> pd.Series:
    """A key for "same text" comparisons: case and whitespace differences do not count."""
    return text.str.casefold().str.replace(_WHITESPACE, " ", regex=True).str.strip()
