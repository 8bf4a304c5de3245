"""What drift monitoring compares, for any task: the reference, a window's features, the scores.

A leaf module (no stage or task imports): ml/monitor/drift.py reads the log window and decides;
each task's drift module (ml/tasks/<task>/drift.py) builds its Reference and its WindowFeatures
from these types, so the two never import each other.

Scores:
  - embedding  Evidently's MMD^2 embedding-drift method (RBF kernel, median bandwidth) between a
               seeded sample of the window's embeddings and the reference embeddings.
  - columns    one Evidently `ValueDrift` per column signal the task names (Wasserstein distance /
               reference std for numbers, Jensen-Shannon distance for categories), in one Report
               over every row of the window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.config import DriftThresholds, Settings


class MonitorError(UserError):
    """The drift check cannot run (log unreadable, reference missing); the message says why."""


@dataclass
class Signal:
    name: str
    method: str
    score: float | None
    threshold: float
    drifted: bool
    available: bool = True
    rows: int = 0
    note: str = ""


@dataclass
class Reference:
    """What a window is compared with.

    features: one column per column signal (NaN or missing values: that signal has no reference).
    embeddings: the reference embeddings (0 rows: the embedding signal is not checked).
    signals: column signal name -> Evidently drift method, in report order.
    categorical: the column signals whose values are categories (the rest are numbers).
    context: what the task's drift_features needs besides (text: the reference vocabulary).
    """

    features: pd.DataFrame
    embeddings: np.ndarray
    signals: dict[str, str]
    categorical: frozenset[str] = frozenset()
    info: dict[str, Any] = field(default_factory=dict)
    context: Any = None
    embedding_note: str = ""

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


@dataclass
class WindowFeatures:
    """A window as its task's drift features: what the signals score.

    columns: one column per column signal, one row per record.
    embeddings: the embedded sample's rows (0 rows: none; `note` says why).
    info: facts about the window the summary shows (e.g. records with text).
    timings: seconds spent per step, merged into the summary's timings.
    """

    columns: pd.DataFrame
    embeddings: np.ndarray
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# --- helpers the tasks share --------------------------------------------------------------------


def seeded_sample(candidates: Sequence[int], size: int | None, seed: int) -> list[int]:
    """A seeded sample (without replacement, sorted) of `candidates`; all of them when they are
    no more than `size` (or size is None)."""
    import numpy as np

    candidates = list(candidates)
    if size is None or len(candidates) <= size:
        return candidates
    chosen = np.random.default_rng(seed).choice(len(candidates), size=size, replace=False)
    return sorted(candidates[i] for i in chosen)


def tiled(values: Sequence[Any], n: int) -> list[Any]:
    """`values` repeated (cycled) to length n.

    Evidently compares each column's distribution; rows are not paired. A shorter reference
    column (predictions on the val split beside statistics of train + val) is tiled to the
    frame's length so every row is complete: a categorical column must not hold missing values,
    they would become a category of their own."""
    import numpy as np

    index = np.resize(np.arange(len(values)), n)
    return [values[i] for i in index]


def reference_split_path(settings: Settings, name: str) -> Path:
    """A `monitor.reference_splits` entry as a file: a split name (train, val, test) is that
    split of the configured task; anything else is a file name under data.splits_dir."""
    from ml.data.splits import SPLITS, split_path, splits_dir

    path = split_path(settings, name) if name in SPLITS else splits_dir(settings) / name
    if not path.is_file():
        raise MonitorError(
            f"reference split {path} not found; run `ml data split` first, or name this task's "
            f"splits in monitor.reference_splits / prediction_reference_split ({', '.join(SPLITS)}"
            f" are data/splits/<name>{split_path(settings, 'train').suffix})"
        )
    return path


def digest(*parts: str | bytes) -> str:
    """sha256 over the parts (each ended by a NUL byte): a cache key."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    from ml.io import sha256_file

    weights = model_dir / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else "unknown"


def resolve_model_dir(settings: Settings, model_dir: str | Path | None) -> Path:
    """--model-dir, else monitor.model_dir, else model.dir (project-relative)."""
    resolved = Path(model_dir or settings.monitor.model_dir or settings.model.dir)
    return resolved if resolved.is_absolute() else settings.path(resolved)


def load_npy(path: Path) -> np.ndarray | None:
    import numpy as np

    return np.load(path) if path.is_file() else None


def save_npy(path: Path, array: np.ndarray) -> None:
    import numpy as np

    from ml.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


# --- scores -------------------------------------------------------------------------------------


def embedding_signal(
    reference: np.ndarray,
    current: np.ndarray,
    threshold: float,
    min_rows: int,
    note: str = "",
    reference_sample: int | None = None,
    seed: int = 0,
) -> Signal:
    """Evidently's MMD embedding-drift method (called directly: the EmbeddingsDrift metric
    always computes a t-SNE plot, ~20 s for a few hundred rows on 2 cores). The reference is a
    seeded sample of `reference_sample` rows when it has more (the kernel matrix is quadratic)."""
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd

    if len(current) < min(min_rows, 10) or len(reference) < 10:
        why = note or (
            "no reference embeddings" if len(reference) < 10 else "too few embeddings in the window"
        )
        return Signal("embedding", "mmd", None, threshold, False, False, len(current), why)
    if current.shape[1] != reference.shape[1]:
        raise MonitorError(
            f"the window's embeddings have {current.shape[1]} dimensions, the reference's "
            f"{reference.shape[1]}: the log comes from another model than the reference; pass "
            "that model with --model-dir (monitor.model_dir)"
        )
    rows = seeded_sample(range(len(reference)), reference_sample, seed)
    score, _, _ = mmd(threshold=threshold)(pd.DataFrame(current), pd.DataFrame(reference[rows]))
    score = float(score)
    return Signal("embedding", "mmd", score, threshold, score > threshold, True, len(current))


def column_report(
    reference: Reference, current: pd.DataFrame, thresholds: DriftThresholds
) -> tuple[Any, list[Signal]]:
    """An Evidently Report with one ValueDrift per available column signal; (snapshot, signals).
    A column absent on either side (no text logged; no reference predictions) is unavailable."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    signals: list[Signal] = []
    metrics, used = [], []
    for name, method in reference.signals.items():
        threshold = float(getattr(thresholds, name))
        ref = reference.features[name].dropna() if name in reference.features else ()
        cur = current[name].dropna() if name in current else ()
        if len(ref) < 10 or len(cur) < 10:
            note = "no reference values" if len(ref) < 10 else "no values in the window"
            signals.append(Signal(name, method, None, threshold, False, False, len(cur), note))
            continue
        metrics.append(ValueDrift(column=name, method=method, threshold=threshold))
        used.append(name)
    if not metrics:
        return None, signals
    categorical = [c for c in used if c in reference.categorical]
    definition = DataDefinition(
        numerical_columns=[c for c in used if c not in reference.categorical],
        categorical_columns=categorical,
    )

    def dataset(frame: pd.DataFrame):
        frame = frame[used].copy()
        for column in categorical:
            frame[column] = frame[column].astype(str)
        return Dataset.from_pandas(frame, data_definition=definition)

    snapshot = Report(metrics, include_tests=True).run(
        current_data=dataset(current), reference_data=dataset(reference.features)
    )
    values = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            values[config["column"]] = float(metric["value"])
    for name in used:
        threshold = float(getattr(thresholds, name))
        score = values[name]
        rows = int(current[name].notna().sum())
        signals.append(
            Signal(name, reference.signals[name], score, threshold, score >= threshold, True, rows)
        )
    order = {name: i for i, name in enumerate(reference.signals)}
    return snapshot, sorted(signals, key=lambda s: order[s.name])
