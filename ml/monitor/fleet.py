"""Every deployed model's drift check, and the retraining of the drifted ones (#23).

`ml monitor drift --all` checks each declared model (models.yaml) on its own application's
prediction log: the folder NAME under the configured log folder, where the multi-application
Serve deployment (ml/serve/multi.py) logs model NAME. Each check is `ml --model NAME monitor
drift` exactly (the model's scoped settings, so its summary lands in reports/NAME/drift/); a
model never deployed has no folder, which reads as "not enough data", never as "no drift".

`ml retrain --models A,B` retrains the named models one after the other, each as `ml --model
NAME retrain` would: its own data, registered model, gate and pull request. The retrain
workflow passes it the drift job's `retrain` output (the drifted models), so only those are
retrained. One model's failure is reported and the others still run: an unreadable log of one
model must not keep a drifted other from its retrain.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.errors import USER_ERRORS, UserError
from ml.monitor.drift import EXIT_CODES, EXIT_ERROR, DriftResult, log_location, monitor_drift


class FleetError(UserError):
    """The models to check or retrain are not named in a way `ml` can read."""

    exit_code = 2


# Worst first: the fleet's exit code is that of its worst model.
SEVERITY = (EXIT_ERROR, EXIT_CODES["drift"], EXIT_CODES["not_enough_data"], 0)


def worst_exit_code(codes: Iterable[int]) -> int:
    codes = set(codes)
    return next((code for code in SEVERITY if code in codes), 0)


def parse_model_names(value: str | None) -> list[str] | None:
    """Model names as a JSON list (a workflow output) or comma-separated; None or '' = none."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FleetError(f"model list {text!r} is not valid JSON: {exc}") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise FleetError(f"model list {text!r} must be a JSON list of model names")
    else:
        names = text.split(",")
    return list(dict.fromkeys(name.strip() for name in names if name.strip()))


def declared(names: Iterable[str] | None = None, root: Path | None = None) -> list[Any]:
    """The declared models called `names` (None: every one, in models.yaml's order)."""
    from ml.models import load_models

    catalog = load_models(root)
    return list(catalog.models) if names is None else [catalog.get(n) for n in names]


def model_settings(model: Any, root: Path | None = None):
    """What `ml --model NAME` reads: NAME's params file, outputs scoped under NAME."""
    from ml.config import load_settings

    root = Path.cwd() if root is None else root
    settings = load_settings(root / model.params, model=model.name)
    settings.root = root
    return settings


def application_log(settings: Any, name: str, log_root: str | None = None) -> str:
    """Model NAME's prediction log: NAME under --log-dir or its serve.prediction_log_dir."""
    return f"{log_location(settings, log_root).rstrip('/')}/{name}"


@dataclass
class ModelCheck:
    name: str
    verdict: str  # drift | no_drift | not_enough_data | error
    reasons: list[str]
    exit_code: int
    log_dir: str
    result: DriftResult | None = None

    def decision(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": self.reasons, "model": self.name}


@dataclass
class FleetDrift:
    checks: list[ModelCheck]
    force: bool = False

    @property
    def drifted(self) -> list[str]:
        return [c.name for c in self.checks if c.verdict == "drift"]

    @property
    def retrain(self) -> list[str]:
        """The models the retrain job retrains: the drifted ones (every one when forced)."""
        return [c.name for c in self.checks] if self.force else self.drifted

    @property
    def exit_code(self) -> int:
        return worst_exit_code(c.exit_code for c in self.checks)

    def github_output_lines(self) -> list[str]:
        def one_line(value: Any) -> str:
            return json.dumps(value, separators=(",", ":"))

        return [
            f"drift={'true' if self.drifted else 'false'}",
            f"drifted={one_line(self.drifted)}",
            f"retrain={one_line(self.retrain)}",
            f"retrain_any={'true' if self.retrain else 'false'}",
            f"checked={one_line([c.name for c in self.checks])}",
            # ml retrain (in another job) puts its model's entry in that model's PR body.
            f"decisions={one_line({c.name: c.decision() for c in self.checks})}",
            f"exit_code={self.exit_code}",
        ]


def check_model(
    model: Any, log_root: str | None, since: str | None, last_n: int | None, root: Path | None
) -> ModelCheck:
    """One model's drift check; a problem with it (bad params, unreadable log or reference)
    becomes its 'error' verdict, so the other models are still checked."""
    log_dir = model.name
    try:
        settings = model_settings(model, root)
        log_dir = application_log(settings, model.name, log_root)
        result = monitor_drift(settings, log_dir, since, last_n)
    except USER_ERRORS as exc:
        return ModelCheck(model.name, "error", [str(exc)], EXIT_ERROR, log_dir)
    decision = result.decision
    return ModelCheck(
        model.name, decision.verdict, decision.reasons, decision.exit_code, log_dir, result
    )


def monitor_fleet(
    names: Iterable[str] | None = None,
    log_root: str | None = None,
    since: str | None = None,
    last_n: int | None = None,
    force: bool = False,
    root: Path | None = None,
    report: Callable[[ModelCheck], None] | None = None,
) -> FleetDrift:
    """`ml monitor drift --all`: check each chosen model in turn (`report` sees each check as
    it ends, so a long run prints as it goes)."""
    checks = []
    for model in declared(names, root):
        check = check_model(model, log_root, since, last_n, root)
        if report is not None:
            report(check)
        checks.append(check)
    return FleetDrift(checks, force)


# --- retraining the drifted models ---------------------------------------------------------


@dataclass
class ModelRetrain:
    name: str
    result: Any = None  # RetrainResult
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 1
        return 0 if self.result.gate_passed else 5


@dataclass
class FleetRetrain:
    runs: list[ModelRetrain] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = {run.exit_code for run in self.runs}
        return 1 if 1 in codes else 5 if 5 in codes else 0


def retrain_models(
    names: Iterable[str],
    max_rows: int | None = None,
    root: Path | None = None,
    report: Callable[[ModelRetrain], None] | None = None,
) -> FleetRetrain:
    """Retrain each named model (its own PR), in order; one model's error does not stop the
    rest. Unknown names are refused before anything is trained."""
    from ml.monitor.retrain import retrain

    models = declared(names, root)
    # Each retrain drops the GitHub token from os.environ (its workers must not inherit it):
    # every model reads its target from this copy.
    environ = dict(os.environ)
    outcome = FleetRetrain()
    for model in models:
        try:
            result = retrain(model_settings(model, root), max_rows, environ=environ)
            run = ModelRetrain(model.name, result)
        except USER_ERRORS as exc:
            run = ModelRetrain(model.name, error=str(exc))
        except Exception as exc:  # a crash in one model's training: the others still run
            traceback.print_exc(file=sys.stderr)
            run = ModelRetrain(model.name, error=f"{type(exc).__name__}: {exc}")
        if report is not None:
            report(run)
        outcome.runs.append(run)
    return outcome
