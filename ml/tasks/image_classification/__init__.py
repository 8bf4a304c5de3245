"""The image-classification task (ml/tasks/base.py); each method is in the part module owning it."""

from __future__ import annotations

from typing import ClassVar

from ml.tasks.base import PartsTask


class ImageClassificationTask(PartsTask):
    name: ClassVar[str] = "image-classification"
    behavioural_checks: ClassVar[bool] = False
    split_suffix: ClassVar[str] = ".npz"
    log_features: ClassVar[bool] = True


TASK = ImageClassificationTask()
