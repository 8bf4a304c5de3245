"""What every task's model dir shares: meta.json (which task wrote it, the labels), labels.json
and model.safetensors (the full state dict, which a resumed run loads into a fresh model).

The task modules (ml/tasks/<task>/model.py) build, save and load their own models; this module
is a leaf they import. The text task's names that used to live here (TextClassifier,
build_model, save_model, resolve_base_model, ...) still resolve from here for callers that do
not yet go through `task_of(settings)`; new code asks the task instead.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ml.errors import UserError

LABELS_FILE = "labels.json"
META_FILE = "meta.json"
WEIGHTS_FILE = "model.safetensors"
# A model dir from before tasks were plug-ins records no task: it is a text model.
DEFAULT_TASK = "text-classification"


class ModelError(UserError):
    """The base model or a saved model dir cannot be loaded; the message says what is missing."""


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise ModelError(f"{model_dir} is not a model dir ({META_FILE} missing); run `ml train`")
    return json.loads(meta_path.read_text())


def task_name(meta: dict[str, Any]) -> str:
    """The task that wrote a model dir (its meta.json)."""
    return str(meta.get("task") or DEFAULT_TASK)


def load_weights(model: Any, model_dir: str | Path) -> None:
    """Load a model dir's model.safetensors into `model` (same architecture), strictly."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(model_dir) / WEIGHTS_FILE)), strict=True)


# The text task's model names, as they were importable from here (old name -> new name).
_TEXT_NAMES = {
    "TextClassifier": "TextClassifier",
    "build_model": "build_classifier",
    "save_model": "write_model_dir",
    "mean_pool_classifier": "mean_pool_classifier",
    "resolve_base_model": "resolve_base_model",
    "PACKAGED_MODEL": "PACKAGED_MODEL",
    "HEAD_MEAN_POOL": "HEAD_MEAN_POOL",
}


def __getattr__(name: str) -> Any:
    if name in _TEXT_NAMES:
        from ml.tasks import TASK_MODULES

        text_model = importlib.import_module(TASK_MODULES[DEFAULT_TASK] + ".model")
        return getattr(text_model, _TEXT_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
