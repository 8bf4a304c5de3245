"""Tokenising for the text task: fixed-width token ids, read by Ray Data and the DataLoaders.

Plain `tokenizers` where it can (no transformers import in the processes that tokenise)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

# Tokenised columns carried through Ray Data and DataLoaders (token_type_ids are all zeros for a
# single-segment input, and the model defaults them, so they are not carried).
TOKEN_COLUMNS = ("input_ids", "attention_mask")


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Token ids padded to max_length (fixed width, so Ray Data blocks stay rectangular);
    `trim_padding` then cuts each batch to its longest row (dynamic padding)."""
    encoded = tokenizer(
        [str(t) for t in texts],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    return {name: encoded[name].astype(np.int64) for name in TOKEN_COLUMNS}


# Tokenizer classes whose tokenizer.json holds their whole pipeline (normaliser, WordPiece,
# [CLS]/[SEP] template), so the `tokenizers` library alone gives AutoTokenizer's ids.
_TOKENIZER_JSON_CLASSES = {"BertTokenizer", "BertTokenizerFast"}


class TokenizerFile:
    """A model folder's tokenizer.json run by the `tokenizers` library, callable the way
    `tokenize` calls a transformers tokenizer (fixed-width padding, truncation, numpy)."""

    def __init__(self, path: str | os.PathLike[str], pad_token: str) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(os.fspath(path))
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{path}: pad token {pad_token!r} is not in the vocabulary")
        self._pad = (pad_id, pad_token)
        self._width: int | None = None

    def __call__(
        self,
        texts: list[str],
        *,
        padding: str,
        truncation: bool,
        max_length: int,
        return_tensors: str,
    ) -> dict[str, np.ndarray]:
        if (padding, truncation, return_tensors) != ("max_length", True, "np"):
            raise NotImplementedError("TokenizerFile pads to max_length and returns numpy only")
        if self._width != max_length:
            self._tokenizer.enable_truncation(max_length)
            self._tokenizer.enable_padding(
                length=max_length, pad_id=self._pad[0], pad_token=self._pad[1]
            )
            self._width = max_length
        encodings = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64).reshape(
                len(encodings), max_length
            ),
            "attention_mask": np.array(
                [e.attention_mask for e in encodings], dtype=np.int64
            ).reshape(len(encodings), max_length),
        }


def load_tokenizer(source: str) -> Any:
    """The tokenizer of a model folder or Hugging Face id, for `tokenize`.

    A folder whose tokenizer.json is a BERT-style pipeline padded on the right is run by the
    `tokenizers` library directly (tests check it gives AutoTokenizer's ids): loading it takes
    0.07 s, where importing transformers for AutoTokenizer costs ~3 s of CPU, paid by every Ray
    Data worker that tokenises. Anything else goes through AutoTokenizer."""
    import json
    from pathlib import Path

    folder = Path(source)
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    pad_token = config.get("pad_token", "[PAD]")
    if isinstance(pad_token, dict):  # an AddedToken written out in full
        pad_token = pad_token.get("content", "[PAD]")
    if (
        (folder / "tokenizer.json").is_file()
        and config.get("tokenizer_class") in _TOKENIZER_JSON_CLASSES
        and config.get("padding_side", "right") == "right"
    ):
        return TokenizerFile(folder / "tokenizer.json", pad_token)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)
