"""Drift features of the text-classification task (ml/monitor/drift.py calls these).

Signals:
  - embedding   sentence embeddings (base MiniLM-L6 encoder, mean pooled) of a seeded sample of
                the window's texts against those of the reference texts.
  - text_length characters per text.
  - oov_rate    each text's share of word tokens never seen in the reference texts.
  - label       predicted classes; confidence: the top-class probability.

The reference:
- Texts: the splits named by `monitor.reference_splits` (train + val) as the model reads them
  (`read_split`). Their lengths, their out-of-vocabulary rates (leave-one-out: a word counts as
  unseen when no *other* reference text has it) and their sentence embeddings.
- Predictions: the model's predicted labels and confidences on `monitor.prediction_reference_split`
  (val by default): rows the model was not fitted on, because confidence on its own training rows
  is inflated and would make every production window look "less confident". Without a model dir
  the label reference is the training labels and the confidence signal is skipped (reported).

Embeddings come from the base encoder, not the fine-tuned classifier: the reference stays valid
across retrained model versions, and a general-purpose sentence space keeps out-of-domain texts
apart instead of mapping them onto the classifier's few classes. Embeddings and predictions are
cached under `monitor.cache_dir`, keyed by the sha256 of the texts (and of the model weights for
predictions), so repeated runs are fast.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.monitor.signals import (
    MonitorError,
    Reference,
    WindowFeatures,
    load_npy,
    model_fingerprint,
    reference_split_path,
    resolve_model_dir,
    save_npy,
    seeded_sample,
    tiled,
)
from ml.monitor.text_stats import document_frequency, embed_texts, oov_rates, texts_key

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.config import Settings

COLUMN_SIGNALS: dict[str, str] = {
    "text_length": "wasserstein",
    "oov_rate": "wasserstein",
    "label": "jensenshannon",
    "confidence": "wasserstein",
}
# texts -> (predicted labels, confidences)
TextPredictor = Callable[[list[str]], tuple[list[str], "np.ndarray"]]
Embed = Callable[[list[str]], "np.ndarray"]


def record_problem(record: dict[str, Any]) -> str:
    """'' when a log record has what the text features need, else what is wrong."""
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        return "text is not a string"
    length = record.get("text_length")
    if text is None and (isinstance(length, bool) or not isinstance(length, int | float)):
        return "neither text nor a numeric text_length"
    if text is None and not math.isfinite(float(length)):
        return f"text_length {length!r} is not a number"
    return ""


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
        labels = [str(v) for v in tiled(list(prediction_labels), n)]
        confidence = np.asarray(tiled(list(prediction_confidence), n), dtype=float)
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
    return Reference(
        features,
        np.asarray(embeddings, dtype=np.float32),
        dict(COLUMN_SIGNALS),
        frozenset({"label"}),
        info or {},
        context=vocabulary,
    )


def _split_texts(settings: Settings, name: str) -> tuple[list[str], list[str]]:
    from ml.tasks import task_of

    examples = task_of(settings).read_split(settings, reference_split_path(settings, name))
    return [str(t) for t in examples.inputs], [str(v) for v in examples.labels or []]


def _embeddings(settings: Settings, texts: list[str], embed: Embed | None):
    """(embeddings, from the cache?) of the reference texts."""
    cfg = settings.monitor
    key = texts_key(texts, cfg.embedding_model, str(cfg.embedding_max_length))
    path = settings.path(cfg.cache_dir) / f"embeddings-{key[:24]}.npy"
    cached = load_npy(path)
    if cached is not None:
        return cached, True, key
    if embed is None:
        embeddings = embed_texts(texts, cfg.embedding_model, cfg.embedding_max_length)
    else:
        embeddings = embed(texts)
    save_npy(path, embeddings)
    return embeddings, False, key


def _model_predictor(settings: Settings, model_dir: Path) -> TextPredictor:
    from ml.tasks import task_of

    classifier = task_of(settings).load_predictor(model_dir)

    def predict(texts: list[str]):
        probabilities = classifier.predict_proba(texts)
        best = probabilities.argmax(axis=1)
        return [classifier.labels[i] for i in best], probabilities.max(axis=1)

    return predict


def _predictions(settings: Settings, resolved: Path, predictor: TextPredictor | None):
    """(labels, confidences, source) of the model on the prediction reference split, cached by
    the texts and the model weights."""
    from ml.io import write_json

    cfg = settings.monitor
    pred_texts, _ = _split_texts(settings, cfg.prediction_reference_split)
    fingerprint = "custom" if predictor is not None else model_fingerprint(resolved)
    key = texts_key(pred_texts, fingerprint)
    path = settings.path(cfg.cache_dir) / f"predictions-{key[:24]}.json"
    if predictor is None and path.is_file():
        cached = json.loads(path.read_text())
        labels, confidence = cached["labels"], cached["confidence"]
    else:
        labels_out, conf_out = (predictor or _model_predictor(settings, resolved))(pred_texts)
        labels, confidence = list(labels_out), [float(c) for c in conf_out]
        if predictor is None:
            write_json(path, {"labels": labels, "confidence": confidence})
    source = (
        f"model predictions on {cfg.prediction_reference_split} "
        f"({'custom predictor' if predictor is not None else resolved})"
    )
    return labels, confidence, source


def load_reference(
    settings: Settings,
    model_dir: str | Path | None = None,
    predictor: TextPredictor | None = None,
    embed: Embed | None = None,
) -> Reference:
    """The reference for `settings`, from the cache when the texts (and model) are unchanged."""
    cfg = settings.monitor
    texts, labels = [], []
    for name in cfg.reference_splits:
        split_texts, split_labels = _split_texts(settings, name)
        texts += split_texts
        labels += split_labels
    if not texts:
        raise MonitorError(f"reference splits {cfg.reference_splits} hold no rows")
    embeddings, embeddings_cached, key = _embeddings(settings, texts, embed)

    pred_labels = pred_conf = None
    prediction_source = "training labels (no model: confidence drift not checked)"
    resolved = resolve_model_dir(settings, model_dir)
    if predictor is not None or (resolved / "meta.json").is_file():
        pred_labels, pred_conf, prediction_source = _predictions(settings, resolved, predictor)
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


def window_features(window: pd.DataFrame, vocabulary: Counter[str]) -> pd.DataFrame:
    """text_length, oov_rate, label, confidence for every record of the window."""
    import pandas as pd

    texts = _texts(window)
    logged = pd.to_numeric(window.get("text_length", pd.Series(dtype=float)), errors="coerce")
    length = pd.Series([len(t) if t is not None else None for t in texts], dtype=float)
    return pd.DataFrame(
        {
            "text_length": length.fillna(logged.reset_index(drop=True)).to_numpy(),
            "oov_rate": oov_rates(texts, vocabulary),
            "label": window["label"].astype(str).to_numpy(),
            "confidence": window["confidence"].astype(float).to_numpy(),
        }
    )


def _texts(window: pd.DataFrame) -> list[str | None]:
    column = window["text"] if "text" in window else [None] * len(window)
    return [t if isinstance(t, str) else None for t in column]


def drift_features(
    records: pd.DataFrame, settings: Settings, reference: Reference, embed: Embed | None = None
) -> WindowFeatures:
    """The window's column features (every record) and the embeddings of a seeded sample of
    its texts (embedding is the slow part)."""
    import numpy as np

    cfg = settings.monitor
    started = time.perf_counter()
    columns = window_features(records, reference.context)
    texts = _texts(records)
    timings = {"features": time.perf_counter() - started}
    started = time.perf_counter()
    present = [i for i, t in enumerate(texts) if t]
    chosen = seeded_sample(present, cfg.embedding_sample, cfg.seed)
    if embed is None:

        def embed(batch: list[str]) -> np.ndarray:
            return embed_texts(batch, cfg.embedding_model, cfg.embedding_max_length)

    embeddings = embed([texts[i] for i in chosen]) if chosen else np.zeros((0, 1), dtype=np.float32)
    timings["embedding"] = time.perf_counter() - started
    return WindowFeatures(
        columns,
        np.asarray(embeddings, dtype=np.float32),
        note="too few texts in the window (text logging off?)",
        timings=timings,
    )
