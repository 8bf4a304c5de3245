"""The drift reference: what production traffic is compared with.

Each task builds its own from its splits and model (`Task.drift_reference`; the text task's
in ml/tasks/text_classification/drift.py, the image task's beside it): the statistics of the
`monitor.reference_splits`, the model's predictions on `monitor.prediction_reference_split`, and
the embeddings the embedding signal compares. This module is the stage-side entry point; it
imports no task module and nothing from ml.monitor.drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.monitor.signals import MonitorError, Reference

# Text embeddings stay importable from here for existing callers (tests, benchmarks).
from ml.monitor.text_stats import embed_texts, texts_key

if TYPE_CHECKING:
    from ml.config import Settings

__all__ = ["MonitorError", "Reference", "embed_texts", "load_reference", "texts_key"]


def load_reference(
    settings: Settings, model_dir: str | Path | None = None, **options: Any
) -> Reference:
    """The configured task's reference. `options` are the task's (text: predictor, embed;
    image: predictor): stand-ins for the model or the encoder, for tests and benchmarks."""
    from ml.tasks import task_of

    return task_of(settings).drift_reference(settings, model_dir, **options)
