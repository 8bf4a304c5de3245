"""Image slices: which holdout images belong to a named slice (evaluate.slices in params).

`brightness` selects by an image's mean pixel intensity (0-1, the image statistics of
drift.image_statistics: dark or bright images, where a
model trained on typical photos may fail); `classes` selects a group of true classes (e.g. the
tops, which Fashion-MNIST models confuse with each other most).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ml.config import Settings, SliceSettings
    from ml.tasks.base import Examples


def mean_intensity(examples: Examples) -> np.ndarray:
    """Per image, its mean pixel value / 255 (read_split's detail; computed when absent)."""
    from ml.tasks.image_classification.drift import image_statistics

    if "mean_intensity" in examples.details:
        return np.asarray(examples.details["mean_intensity"], dtype=float)
    return image_statistics(np.asarray(examples.inputs))["mean_intensity"]


def brightness(examples: Examples, spec: SliceSettings) -> np.ndarray:
    """Mean intensity within [min_intensity, max_intensity] (either bound may be open)."""
    values = mean_intensity(examples)
    mask = np.ones(len(values), dtype=bool)
    if spec.min_intensity is not None:
        mask &= values >= spec.min_intensity
    if spec.max_intensity is not None:
        mask &= values <= spec.max_intensity
    return mask


def classes(examples: Examples, spec: SliceSettings) -> np.ndarray:
    """The true class is one of `classes`."""
    wanted = set(spec.classes)
    return np.array([label in wanted for label in examples.labels or []], dtype=bool)


SLICE_FUNCTIONS: dict[str, Callable[[Examples, SliceSettings], np.ndarray]] = {
    "brightness": brightness,
    "classes": classes,
}


def slice_masks(settings: Settings, examples: Examples) -> dict[str, np.ndarray]:
    return {
        spec.name: SLICE_FUNCTIONS[spec.function](examples, spec)
        for spec in settings.evaluate.slices
    }


def prediction_columns(examples: Examples) -> dict[str, Sequence[Any]]:
    """The image statistics, rounded; never the pixels."""
    out: dict[str, Sequence[Any]] = {"mean_intensity": np.round(mean_intensity(examples), 4)}
    if "contrast" in examples.details:
        out["contrast"] = np.round(np.asarray(examples.details["contrast"], dtype=float), 4)
    return out
