"""Drift features of the image-classification task (ml/monitor/drift.py calls these).

Signals:
  - embedding      the CNN's penultimate activations, logged per prediction as `embedding`,
                   against those of the same model on `monitor.prediction_reference_split`.
  - mean_intensity pixel mean / 255 of each image; contrast: pixel std / 255 (RMS contrast).
  - blank_share    the share of constant (blank) images.
  - label          predicted classes; confidence: the top-class probability.

The reference: the image statistics of `monitor.reference_splits` (train + val); the model's
predictions and penultimate features on the prediction reference split (val: rows the model was
not fitted on, whose features and confidence are what production looks like). The features are
the served model's own, so the reference is built with the model that wrote the log
(`--model-dir` / monitor.model_dir / model.dir); without a model dir the label reference is the
training labels and the embedding and confidence signals are reported as not checked.
Predictions and features are cached under `monitor.cache_dir`, keyed by the sha256 of the images
and of the model weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ml.monitor.signals import (
    MonitorError,
    Reference,
    WindowFeatures,
    digest,
    model_fingerprint,
    reference_split_path,
    resolve_model_dir,
    seeded_sample,
    tiled,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.config import Settings

COLUMN_SIGNALS: dict[str, str] = {
    "mean_intensity": "wasserstein",
    "contrast": "wasserstein",
    "blank_share": "jensenshannon",
    "label": "jensenshannon",
    "confidence": "wasserstein",
}
CATEGORICAL = frozenset({"blank_share", "label"})


class ImagePredictor(Protocol):
    labels: list[str]

    def predict_proba(self, inputs: Any, batch_size: int = 64) -> np.ndarray: ...

    def features(self, inputs: Any) -> np.ndarray: ...


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (uint8 N x H x W): mean_intensity = pixel mean / 255, contrast = pixel std / 255,
    blank = every pixel the same. The prediction log and the drift reference both use these."""
    import numpy as np

    flat = np.asarray(images).reshape(len(images), -1)
    pixels = flat.astype(np.float32) / 255.0
    return {
        "mean_intensity": pixels.mean(axis=1).astype(np.float64),
        "contrast": pixels.std(axis=1).astype(np.float64),
        "blank": flat.min(axis=1) == flat.max(axis=1),
    }


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def record_problem(record: dict[str, Any]) -> str:
    """'' when a log record has what the image features need, else what is wrong."""
    for key in ("mean_intensity", "contrast"):
        if not _number(record.get(key)):
            return f"{key} {record.get(key)!r} is not a number"
    if not isinstance(record.get("blank"), bool):
        return f"blank {record.get('blank')!r} is not true/false"
    embedding = record.get("embedding")
    if embedding is not None and (
        not isinstance(embedding, list) or not embedding or not all(map(_number, embedding))
    ):
        return "embedding is not a list of numbers"
    return ""


def _split(settings: Settings, name: str):
    from ml.tasks import task_of

    return task_of(settings).read_split(settings, reference_split_path(settings, name))


def _model_outputs(settings: Settings, images: np.ndarray, resolved: Path, predictor: Any):
    """(predicted labels, confidences, penultimate features) of the model on `images`; cached
    by the images and the model weights unless a custom predictor is given."""
    import numpy as np

    cfg = settings.monitor
    fingerprint = "custom" if predictor is not None else model_fingerprint(resolved)
    key = digest(np.ascontiguousarray(images).tobytes(), fingerprint)
    path = settings.path(cfg.cache_dir) / f"image-outputs-{key[:24]}.npz"
    if predictor is None and path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            labels = [str(v) for v in cached["labels"]]
            return labels, cached["confidence"], cached["features"]
    if predictor is None:
        from ml.tasks import task_of

        predictor = task_of(settings).load_predictor(resolved)
    probabilities = np.asarray(predictor.predict_proba(images))
    labels = [str(predictor.labels[i]) for i in probabilities.argmax(axis=1)]
    confidence = probabilities.max(axis=1).astype(np.float64)
    features = np.asarray(predictor.features(images), dtype=np.float32)
    if fingerprint != "custom":
        from ml.io import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, labels=np.array(labels), confidence=confidence, features=features)
    return labels, confidence, features


def load_reference(
    settings: Settings, model_dir: str | Path | None = None, predictor: Any = None
) -> Reference:
    """The image reference for `settings` (see the module docstring)."""
    import numpy as np
    import pandas as pd

    cfg = settings.monitor
    splits = [_split(settings, name) for name in cfg.reference_splits]
    images = np.concatenate([np.asarray(s.inputs) for s in splits]) if splits else np.zeros(0)
    if len(images) == 0:
        raise MonitorError(f"reference splits {cfg.reference_splits} hold no images")
    stats = image_statistics(images)
    n = len(images)
    labels: list[str] = [str(v) for s in splits for v in (s.labels or [])]
    confidence = np.full(n, np.nan)
    embeddings = np.zeros((0, 1), dtype=np.float32)
    source = "training labels (no model: embedding and confidence drift not checked)"
    resolved = resolve_model_dir(settings, model_dir)
    if predictor is not None or (resolved / "meta.json").is_file():
        val = np.asarray(_split(settings, cfg.prediction_reference_split).inputs)
        pred_labels, pred_conf, embeddings = _model_outputs(settings, val, resolved, predictor)
        labels = tiled(pred_labels, n)
        confidence = np.asarray(tiled(list(pred_conf), n), dtype=float)
        where = "custom predictor" if predictor is not None else resolved
        source = f"model predictions and features on {cfg.prediction_reference_split} ({where})"
    features = pd.DataFrame(
        {
            "mean_intensity": stats["mean_intensity"],
            "contrast": stats["contrast"],
            "blank_share": pd.Series([str(bool(b)) for b in stats["blank"]], dtype=object),
            "label": pd.Series(labels, dtype=object),
            "confidence": confidence,
        }
    )
    info = {
        "splits": list(cfg.reference_splits),
        "rows": n,
        "blank_share": float(stats["blank"].mean()),
        "embedding_rows": len(embeddings) if embeddings.shape[1] > 1 else 0,
        "prediction_rows": len(embeddings) if embeddings.shape[1] > 1 else 0,
        "prediction_source": source,
    }
    note = "" if embeddings.shape[1] > 1 else "no model: the reference has no features"
    return Reference(
        features, embeddings, dict(COLUMN_SIGNALS), CATEGORICAL, info, embedding_note=note
    )


def _embeddings(column: Sequence[Any], size: int, seed: int) -> np.ndarray:
    """A seeded sample of the logged embeddings as a matrix (0 rows when none were logged)."""
    import numpy as np

    present = [i for i, e in enumerate(column) if isinstance(e, list) and e]
    chosen = seeded_sample(present, size, seed)
    if not chosen:
        return np.zeros((0, 1), dtype=np.float32)
    widths = {len(column[i]) for i in chosen}
    if len(widths) > 1:
        raise MonitorError(
            f"the window's embeddings have different lengths {sorted(widths)}: the log mixes "
            "models; narrow the window (--since) to one model version"
        )
    return np.asarray([column[i] for i in chosen], dtype=np.float32)


def drift_features(
    records: pd.DataFrame, settings: Settings, reference: Reference, embed: Any = None
) -> WindowFeatures:
    """The window's logged image statistics, predictions and a seeded sample of its logged
    embeddings (`embed` is unused: the serving replica computed them with the model)."""
    import pandas as pd

    cfg = settings.monitor
    started = time.perf_counter()
    column = records["embedding"] if "embedding" in records else [None] * len(records)
    embeddings = _embeddings(list(column), cfg.embedding_sample, cfg.seed)
    columns = pd.DataFrame(
        {
            "mean_intensity": records["mean_intensity"].astype(float).to_numpy(),
            "contrast": records["contrast"].astype(float).to_numpy(),
            "blank_share": [str(bool(b)) for b in records["blank"]],
            "label": records["label"].astype(str).to_numpy(),
            "confidence": records["confidence"].astype(float).to_numpy(),
        }
    )
    note = reference.embedding_note or "no embeddings in the window's records"
    return WindowFeatures(
        columns,
        embeddings,
        note=note,
        info={"records_with_embedding": int(sum(isinstance(e, list) for e in column))},
        timings={"features": time.perf_counter() - started},
    )
