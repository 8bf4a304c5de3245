"""The text-classification task (ml/tasks/base.py); each method is in the part module owning it."""

from __future__ import annotations

from typing import ClassVar

from ml.tasks.base import PartsTask


class TextClassificationTask(PartsTask):
    name: ClassVar[str] = "text-classification"
    behavioural_checks: ClassVar[bool] = True
    split_suffix: ClassVar[str] = ".csv"
    log_features: ClassVar[bool] = False


TASK = TextClassificationTask()
