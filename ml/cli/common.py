"""What every sub-app shares: the params file chosen on the command line, the settings it
gives, and the one way to run a stage and turn its errors into a message and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")
# The params file --params or --model named, and the model --model named (None: the default
# model when no params file was chosen at all; see output_model).
_state: dict[str, Any] = {"params": None, "model": None}

MODEL_URI_HELP = (
    "model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...) or a local model dir "
    "(default: serve.model_uri, else models:/NAME@champion)"
)


def set_params_file(path: Path | None, model: str | None = None) -> None:
    _state["params"], _state["model"] = path, model


def model_params_file(model: str | None, params: Path | None) -> Path | None:
    """The params file that --model or --params names (None: neither; both: a usage error)."""
    if model is None:
        return params
    if params is not None:
        raise fail("give --model or --params, not both: --model NAME reads NAME's params file", 2)
    from ml.models import params_for

    return run_stage(params_for, model)


def params_file() -> Path | None:
    """The --params (or --model's params file) the user gave (None: $ML_PARAMS or
    ./params.yaml)."""
    return _state["params"]


def output_model() -> str | None:
    """The model whose outputs a verb writes (data/NAME, models/NAME, reports/NAME): --model's,
    else the default model of models.yaml when neither --params nor $ML_PARAMS chose a file.
    None keeps the params file's own paths (an ad-hoc file, or a folder without models.yaml)."""
    import os

    from ml.config import PARAMS_ENV

    if _state["model"] is not None:
        return _state["model"]
    if _state["params"] is not None or os.environ.get(PARAMS_ENV):
        return None
    from ml.models import MODELS_FILE, load_models

    if not Path(MODELS_FILE).is_file():
        return None
    return run_stage(load_models).default


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def settings():
    """The effective settings; a bad params file exits 2 (ConfigError.exit_code)."""
    from ml.config import load_settings

    return run_stage(load_settings, params_file(), model=output_model())


def _mlflow_message(exc: Exception) -> str | None:
    # Only a stage that imported mlflow can raise its errors, so checking sys.modules keeps
    # mlflow out of commands that never touch it.
    module = sys.modules.get("mlflow.exceptions")
    if module is not None and isinstance(exc, module.MlflowException):
        return f"MLflow: {exc.message}"
    return None


def run_stage(
    stage: Callable[..., T], *args: Any, exit_code: int | None = None, **kwargs: Any
) -> T:
    """Call a stage. A UserError (or a missing file, or MLflow refusing) becomes one line on
    stderr and the error's exit_code; `exit_code` replaces it where a command documents its own."""
    from ml.errors import USER_ERRORS

    try:
        return stage(*args, **kwargs)
    except USER_ERRORS as exc:
        raise fail(str(exc), exit_code or getattr(exc, "exit_code", 1)) from exc
    except Exception as exc:
        message = _mlflow_message(exc)
        if message is None:
            raise
        raise fail(message, exit_code or 1) from exc
