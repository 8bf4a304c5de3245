"""Text statistics for drift monitoring: word tokens, the reference vocabulary, out-of-vocabulary
rates and sentence embeddings (base MiniLM-L6 encoder, mean pooled, L2-normalised).

Kept apart from any one task (the text-classification task's drift features use them; another
task on text inputs can too) and importable without torch or transformers, which load only when
something is embedded.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def document_frequency(texts: Iterable[str]) -> Counter[str]:
    """In how many texts each word token occurs (the reference vocabulary)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(set(tokens(text)))
    return counts


def oov_rates(texts: Sequence[str | None], vocabulary: Counter[str], leave_one_out: bool = False):
    """Share of each text's word tokens that are not in the vocabulary (NaN without text).

    With leave_one_out (for the reference texts themselves) a token counts as unseen when no
    *other* reference text has it, so the reference is not scored against its own words."""
    import numpy as np

    floor = 1 if leave_one_out else 0
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        if text is None:
            continue
        words = tokens(text)
        if words:
            out[i] = sum(vocabulary.get(w, 0) <= floor for w in words) / len(words)
        else:
            out[i] = 0.0
    return out


def texts_key(texts: Sequence[str], *extra: str) -> str:
    """sha256 of the texts (and `extra`, e.g. the encoder's name): a cache key."""
    import hashlib

    digest = hashlib.sha256()
    for part in extra:
        digest.update(f"{part}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


@lru_cache(maxsize=2)
def _encoder(model_name: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ml.train.model import resolve_base_model

    hf_logging.set_verbosity_error()
    source = resolve_base_model(model_name)
    return AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()


def embed_texts(
    texts: Sequence[str],
    model_name: str = "all-minilm-l6-v2",
    max_length: int = 64,
    batch_size: int = 64,
) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (float32, one row per text, input order);
    texts are batched by length so padding stays small."""
    import numpy as np
    import torch

    tokenizer, model = _encoder(model_name)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
