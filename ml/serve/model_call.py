"""The model side of a replica, for any task: the loaded model as one swappable object, the
batched model call (isolated per input), and the answer and log records of one request.

Every model call runs on one thread (`inference`). Torch's OpenMP pool belongs to the thread
that uses it: hopping between the default executor's threads builds one pool per thread, and
their spinning workers oversubscribe the cores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.serve.isolate import ItemFailed, call_isolated

if TYPE_CHECKING:
    import numpy as np

    from ml.config import Settings
    from ml.serve.loader import ModelInfo
    from ml.tasks.base import Predictor, Task

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Loaded:
    """A model and its facts, swapped as one object so a batch never mixes two versions."""

    classifier: Predictor
    info: ModelInfo
    uri: str
    quantize: bool
    runtime: str
    task: Task
    # One input the model answers (the task's smoke input): tells a broken model from bad input.
    canary: list[Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return dict(getattr(self.classifier, "meta", None) or {})


def load(
    uri: str,
    settings: Settings,
    tracking_uri: str | None,
    quantize: bool,
    runtime: str,
    device: str | None,
    threads: int,
) -> Loaded:
    from ml.serve.loader import load_classifier, task_of_predictor
    from ml.tasks.request import RequestError

    classifier, info = load_classifier(uri, tracking_uri, quantize, device, threads, runtime)
    task = task_of_predictor(classifier)
    meta = getattr(classifier, "meta", None) or {}
    try:
        canary, _ = task.parse_request(*task.smoke_request(settings), settings, meta)
    except RequestError:  # the params' smoke input does not fit this model: no probe
        canary = None
    return Loaded(classifier, info, uri, quantize, runtime, task, canary[:1] if canary else None)


def as_batch(items: Sequence[Any]) -> Any:
    """The predictor's input for a list of items: arrays stacked (images), else a list (texts)."""
    if items and hasattr(items[0], "shape"):
        import numpy as np

        return np.stack(list(items))
    return list(items)


def run_model(loaded: Loaded, items: list[Any], batch_size: int) -> list[tuple[Any, Any]]:
    """(probabilities, features or None) per item; features where the task logs them (a
    second forward pass, so only then)."""
    inputs = as_batch(items)
    probabilities = loaded.classifier.predict_proba(inputs, batch_size)
    features_of = getattr(loaded.classifier, "features", None)
    wanted = getattr(loaded.task, "log_features", False) and callable(features_of)
    features = features_of(inputs) if wanted else None
    return [
        (probabilities[i], None if features is None else features[i]) for i in range(len(items))
    ]


async def predict_isolated(
    loaded: Loaded, items: list[Any], inference: ThreadPoolExecutor, batch_size: int
) -> list[tuple[np.ndarray, Any, Loaded] | ItemFailed]:
    """One gathered batch through the model, off the event loop; a failing input fails alone."""

    async def call(part: list[Any]) -> list[tuple[Any, Any]]:
        # In a thread: the loop keeps queueing the next batch while this one computes.
        return await asyncio.get_running_loop().run_in_executor(
            inference, run_model, loaded, part, batch_size
        )

    results = await call_isolated(call, items, loaded.canary)
    failures = [r for r in results if isinstance(r, ItemFailed)]
    if failures:
        # The error type only: the input may be private (serve.log_text).
        logger.warning(
            "model call failed on %d of %d inputs (%s); the rest were answered",
            len(failures),
            len(items),
            type(failures[0].error).__name__,
        )
    return [r if isinstance(r, ItemFailed) else (r[0], r[1], loaded) for r in results]


def prediction(labels: Sequence[str], row: Any) -> dict[str, Any]:
    """The shared response item: label, confidence, probabilities by label."""
    best = int(row.argmax())
    probs = {label: float(p) for label, p in zip(labels, row, strict=True)}
    return {"label": labels[best], "confidence": float(row[best]), "probabilities": probs}


def log_fields(
    items: list[Any], results: list[tuple[Any, Any, Loaded]], settings: Settings
) -> list[dict[str, Any]]:
    """The task's per-input log fields, with the features the model call returned."""
    import numpy as np

    task = results[0][2].task
    features = [f for _, f, _ in results]
    stacked = None if any(f is None for f in features) else np.stack(features)
    return task.log_fields(items, settings, stacked)
