"""The drift reference: what production traffic is compared with.

- Texts: the training splits named by `monitor.reference_splits` (train + val), combined the way
  the model sees them (`ml.data.text.combine_text`). Their lengths, their out-of-vocabulary rates
  (leave-one-out: a word counts as unseen when no *other* reference text has it) and their
  sentence embeddings.
- Predictions: the model's predicted labels and confidences on `monitor.prediction_reference_split`
  (val by default): rows the model was not fitted on, because confidence on its own training rows
  is inflated and would make every production window look "less confident". Without a model dir
  the label reference is the training labels and the confidence signal is skipped (reported).

Embeddings come from the base encoder (all-MiniLM-L6-v2, mean pooled, L2-normalised), not the
fine-tuned classifier: the reference stays valid across retrained model versions, and a
general-purpose sentence space keeps out-of-domain texts apart instead of mapping them onto the
classifier's few classes. Embeddings and predictions are cached under `monitor.cache_dir`, keyed
by the sha256 of the texts (and of the model weights for predictions), so repeated runs are fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.monitor.drift import MonitorError, document_frequency, oov_rates

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# texts -> (predicted labels, confidences)
Predictor = Callable[[list[str]], tuple[list[str], "np.ndarray"]]


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


def texts_key(texts: Sequence[str], *extra: str) -> str:
    digest = hashlib.sha256()
    for part in extra:
        digest.update(f"{part}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass
class Reference:
    features: pd.DataFrame  # text_length, oov_rate, label, confidence (NaN: no model)
    embeddings: np.ndarray
    vocabulary: Counter[str]
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


def build_reference(
    texts: Sequence[str],
    train_labels: Sequence[str],
    embeddings: np.ndarray,
    prediction_labels: Sequence[str] | None = None,
    prediction_confidence: Sequence[float] | None = None,
    info: dict[str, Any] | None = None,
) -> Reference:
    """Pure assembly of a Reference from texts, their embeddings and (optionally) predictions."""
    import numpy as np
    import pandas as pd

    vocabulary = document_frequency(texts)
    n = len(texts)
    if prediction_labels is not None and len(prediction_labels):
        # Evidently compares each column's distribution; rows are not paired. The prediction
        # reference (fewer rows) is tiled to the text reference's length so every row is
        # complete (a categorical column must not hold missing values: they become a category).
        tile = np.resize(np.arange(len(prediction_labels)), n)
        labels = [str(prediction_labels[i]) for i in tile]
        confidence = np.asarray(prediction_confidence, dtype=float)[tile]
    else:
        labels, confidence = [str(v) for v in train_labels], np.full(n, np.nan)
    features = pd.DataFrame(
        {
            "text_length": [float(len(t)) for t in texts],
            "oov_rate": oov_rates(list(texts), vocabulary, leave_one_out=True),
            "label": pd.Series(labels, dtype=object),
            "confidence": confidence,
        }
    )
    return Reference(features, np.asarray(embeddings, dtype=np.float32), vocabulary, info or {})


def _read_split(settings: Settings, name: str) -> pd.DataFrame:
    import pandas as pd

    path = settings.path(settings.data.splits_dir) / name
    if not path.is_file():
        raise MonitorError(f"reference split {path} not found; run `ml data split` first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def model_predictor(model_dir: Path) -> Predictor:
    from ml.train.model import TextClassifier

    classifier = TextClassifier.load(model_dir)

    def predict(texts: list[str]):
        probabilities = classifier.predict_proba(texts)
        best = probabilities.argmax(axis=1)
        return [classifier.labels[i] for i in best], probabilities.max(axis=1)

    return predict


def _model_fingerprint(model_dir: Path) -> str:
    from ml.io import sha256_file

    weights = model_dir / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else "unknown"


def load_reference(
    settings: Settings,
    model_dir: str | Path | None = None,
    predictor: Predictor | None = None,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> Reference:
    """The reference for `settings`, from the cache when the texts (and model) are unchanged."""
    import numpy as np

    from ml.data.text import combine_text

    cfg, data = settings.monitor, settings.data
    frames = [_read_split(settings, name) for name in cfg.reference_splits]
    texts = [t for frame in frames for t in combine_text(frame, data.text_columns)]
    labels = [str(v) for frame in frames for v in frame[data.label_column]]
    if not texts:
        raise MonitorError(f"reference splits {cfg.reference_splits} hold no rows")
    cache = settings.path(cfg.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)

    key = texts_key(texts, cfg.embedding_model, str(cfg.embedding_max_length))
    emb_path = cache / f"embeddings-{key[:24]}.npy"
    if emb_path.is_file():
        embeddings, embeddings_cached = np.load(emb_path), True
    else:
        if embed is None:
            embeddings = embed_texts(texts, cfg.embedding_model, cfg.embedding_max_length)
        else:
            embeddings = embed(texts)
        tmp = emb_path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, embeddings)
        os.replace(tmp, emb_path)
        embeddings_cached = False

    pred_labels = pred_conf = None
    prediction_source = "training labels (no model: confidence drift not checked)"
    resolved = Path(model_dir or cfg.model_dir or settings.model.dir)
    resolved = resolved if resolved.is_absolute() else settings.path(resolved)
    if predictor is not None or (resolved / "meta.json").is_file():
        pred_frame = _read_split(settings, cfg.prediction_reference_split)
        pred_texts = list(combine_text(pred_frame, data.text_columns))
        fingerprint = "custom" if predictor is not None else _model_fingerprint(resolved)
        pkey = texts_key(pred_texts, fingerprint)
        pred_path = cache / f"predictions-{pkey[:24]}.json"
        if predictor is None and pred_path.is_file():
            cached = json.loads(pred_path.read_text())
            pred_labels, pred_conf = cached["labels"], cached["confidence"]
        else:
            labels_out, conf_out = (predictor or model_predictor(resolved))(pred_texts)
            pred_labels, pred_conf = list(labels_out), [float(c) for c in conf_out]
            if predictor is None:
                from ml.io import write_json

                write_json(pred_path, {"labels": pred_labels, "confidence": pred_conf})
        prediction_source = (
            f"model predictions on {cfg.prediction_reference_split} "
            f"({'custom predictor' if predictor is not None else resolved})"
        )
    info = {
        "splits": list(cfg.reference_splits),
        "rows": len(texts),
        "texts_sha256": key,
        "embedding_model": cfg.embedding_model,
        "embedding_max_length": cfg.embedding_max_length,
        "embeddings_cached": embeddings_cached,
        "prediction_rows": len(pred_labels) if pred_labels is not None else 0,
        "prediction_source": prediction_source,
    }
    return build_reference(texts, labels, embeddings, pred_labels, pred_conf, info)
