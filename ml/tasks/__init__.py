"""ML tasks as plug-ins: one module per task, found by the params' `task:` (ml/tasks/base.py).

Shared stages call `task_of(settings)`; they never import a task module by name (an
import-linter contract checks it), so adding a task is a new module and a line below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.config import Settings
    from ml.tasks.base import Task

# task name (params `task:`) -> the module holding its TASK object.
TASK_MODULES: dict[str, str] = {
    "text-classification": "ml.tasks.text_classification",
    "image-classification": "ml.tasks.image_classification",
}


def get_task(name: str) -> Task:
    """The task called `name`; a ConfigError naming the known tasks otherwise."""
    from ml.config import ConfigError

    if name not in TASK_MODULES:
        raise ConfigError(f"unknown task {name!r}; use one of {sorted(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK


def task_of(settings: Settings) -> Task:
    return get_task(settings.task)
