"""The evaluate stage: score a model on the holdout and write metrics and detail files.

The same `evaluate_predictor` scores a local model dir (this stage) and registry models (the
gate), so challenger and champion numbers come from one code path. Everything that depends on
the task (reading the holdout, loading the model, the pyfunc's input frame, the slices) is
asked of `task_of(settings)`; the metrics are the same for every classification task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.errors import UserError
from ml.io import atomic_path, sha256_file, write_json

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.tasks.base import Examples, Predictor, Task


class EvaluationError(UserError):
    """The model or the holdout cannot be evaluated; the message says what is missing."""


class PyfuncPredictor:
    """An MLflow pyfunc model (the task's input frame in; `prob_<label>` columns out) seen as a
    Predictor. Labels come from the output columns, so the model needs no side files; they are
    known after the first prediction."""

    def __init__(self, model: Any, source: str, task: Task) -> None:
        self.model = model
        self.source = source
        self.task = task
        self._labels: list[str] | None = None

    def _predict(self, inputs: Any) -> pd.DataFrame:
        import pandas as pd

        out = self.model.predict(self.task.to_frame(inputs))
        if not isinstance(out, pd.DataFrame):
            out = pd.DataFrame(out)
        prob_columns = [c for c in out.columns if str(c).startswith("prob_")]
        if not prob_columns:
            raise EvaluationError(
                f"{self.source}: the model returned no prob_<label> columns "
                f"(got {list(out.columns)}); it is not a model logged by `ml train`"
            )
        self._labels = [str(c)[len("prob_") :] for c in prob_columns]
        return out[prob_columns]

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            raise EvaluationError(f"{self.source}: labels are known only after a prediction")
        return list(self._labels)

    def predict_proba(self, inputs: Any, batch_size: int = 64) -> np.ndarray:
        import numpy as np

        if not len(inputs):
            return np.zeros((0, len(self._labels or [])), dtype=np.float32)
        starts = range(0, len(inputs), batch_size)
        parts = [self._predict(inputs[i : i + batch_size]).to_numpy() for i in starts]
        return np.vstack(parts).astype(np.float32)


def load_local_model(settings: Settings, model_dir: Path) -> Predictor:
    from ml.tasks import task_of

    if not model_dir.is_dir():
        raise EvaluationError(f"model dir not found: {model_dir}; run `ml train` first")
    try:
        return task_of(settings).load_predictor(model_dir)
    except (UserError, OSError, KeyError, ValueError) as exc:
        raise EvaluationError(f"cannot load the model in {model_dir}: {exc}") from exc


def load_registry_model(settings: Settings, model_uri: str) -> Predictor:
    """Load `models:/NAME@alias`, `models:/NAME/version` or `runs:/...` as a pyfunc."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from ml.tasks import task_of

    try:
        return PyfuncPredictor(mlflow.pyfunc.load_model(model_uri), model_uri, task_of(settings))
    except MlflowException as exc:
        raise EvaluationError(f"cannot load {model_uri}: {exc.message}") from exc


def holdout_path(settings: Settings) -> Path:
    from ml.data.splits import split_path

    return split_path(settings, "test")


def read_holdout(settings: Settings) -> Examples:
    """The test split as the task's Examples; an EvaluationError when absent, unlabelled or
    empty."""
    from ml.tasks import task_of

    path = holdout_path(settings)
    if not path.is_file():
        raise EvaluationError(f"holdout not found: {path}; run `ml data split` first")
    try:
        holdout = task_of(settings).read_split(settings, path)
    except UserError as exc:
        raise EvaluationError(f"cannot read the holdout {path}: {exc}") from exc
    if holdout.labels is None:
        raise EvaluationError(f"{path} has no labels; evaluation needs the true classes")
    if not len(holdout):
        raise EvaluationError(f"{path} has no rows")
    return holdout


def behavioural_spec(settings: Settings) -> dict[str, Any] | None:
    """The behavioural cases, or None for a task they do not apply to (text cases only)."""
    from ml.evaluate.behavioural import load_cases
    from ml.tasks import task_of

    if not task_of(settings).behavioural_checks:
        return None
    return load_cases(settings.path(settings.evaluate.behavioural_file))


def not_applicable(settings: Settings) -> dict[str, Any]:
    """A behavioural result for a task without behavioural checks: neither passed nor failed."""
    return {
        "status": "not_applicable",
        "reason": f"the behavioural checks are text cases; the {settings.task} task has none",
        "passed": 0,
        "failed": 0,
        "skipped": 0,
        "cases": [],
        "pass_rate": None,
    }


def _predict(predictor: Predictor, holdout: Examples, settings: Settings) -> np.ndarray:
    import numpy as np

    proba = np.asarray(
        predictor.predict_proba(holdout.inputs, batch_size=settings.evaluate.batch_size)
    )
    expected = (len(holdout), len(predictor.labels))
    if proba.shape != expected:
        raise EvaluationError(
            f"model returned probabilities of shape {proba.shape}, expected {expected}"
        )
    return proba


def report_order(settings: Settings, y_true: list[str]) -> list[str]:
    """The holdout's classes in data.labels order where params list them (Fashion-MNIST: label
    id order), else sorted; a class params do not list comes last."""
    present = set(y_true)
    listed = [label for label in settings.data.labels if label in present]
    return listed + sorted(present - set(listed))


def evaluate_predictor(
    predictor: Predictor,
    holdout: Examples,
    settings: Settings,
    cases: dict[str, Any] | None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Full evaluation of one model on the holdout: (evaluation dict, per-row predictions).
    `cases` None: the task has no behavioural checks (reported as not applicable)."""
    import numpy as np
    import pandas as pd

    from ml.evaluate.behavioural import run_checks
    from ml.evaluate.metrics import classification_metrics
    from ml.evaluate.slices import slice_metrics
    from ml.tasks import task_of

    task = task_of(settings)
    proba = _predict(predictor, holdout, settings)
    model_labels = list(predictor.labels)
    y_true = [str(y) for y in holdout.labels or []]
    best = proba.argmax(axis=1)
    y_pred = [model_labels[i] for i in best]
    confidence = proba[np.arange(len(holdout)), best].astype(float)
    labels = report_order(settings, y_true)
    result = classification_metrics(y_true, y_pred, confidence, labels, settings.evaluate.ece_bins)
    specs = settings.evaluate.slices
    masks = task.slice_masks(settings, holdout) if specs else {}
    result["slices"] = slice_metrics(masks, y_true, y_pred, labels, specs)

    def predict_labels(batch: list[str]) -> list[str]:
        p = np.asarray(predictor.predict_proba(batch, batch_size=settings.evaluate.batch_size))
        return [model_labels[i] for i in p.argmax(axis=1)]

    result["behavioural"] = (
        not_applicable(settings)
        if cases is None
        else run_checks(cases, predict_labels, model_labels).to_dict()
    )
    result["model_labels"] = model_labels
    result["labels_unknown_to_model"] = sorted(set(y_true) - set(model_labels))
    result["task"] = settings.task

    predictions = pd.DataFrame(
        {
            settings.data.id_column: list(holdout.ids),
            **task.prediction_columns(holdout),
            "label": y_true,
            "predicted": y_pred,
            "confidence": confidence.round(6),
            "correct": np.asarray(y_true) == np.asarray(y_pred),
        }
    )
    return result, predictions


def dvc_metrics(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The numeric subset DVC diffs in PRs (`dvc metrics diff`): headline, per-class, slices."""
    behavioural = evaluation["behavioural"]
    metrics: dict[str, Any] = {k: round(v, 6) for k, v in evaluation["overall"].items()}
    metrics["per_class"] = {
        label: {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
        for label, row in evaluation["per_class"].items()
    }
    metrics["slices"] = {
        name: {k: row[k] for k in ("num_samples", "accuracy", "f1_weighted") if row[k] is not None}
        for name, row in evaluation["slices"].items()
    }
    metrics["behavioural"] = {k: behavioural[k] for k in ("passed", "failed", "skipped")}
    return metrics


@dataclass(frozen=True)
class EvaluateResult:
    overall: dict[str, float]
    behavioural_status: str
    metrics_path: Path
    detail_dir: Path


def model_dir_from_train_report(settings: Settings) -> Path:
    report = settings.path(settings.train.report)
    if report.is_file():
        model_dir = json.loads(report.read_text()).get("model_dir")
        if model_dir:
            return settings.path(model_dir)
    return settings.path(settings.model.dir)


def evaluate(settings: Settings, model_dir: Path | None = None) -> EvaluateResult:
    """Score the trained model dir on the holdout; write reports/metrics.json and reports/eval/."""
    model_dir = model_dir or model_dir_from_train_report(settings)
    holdout = read_holdout(settings)
    cases = behavioural_spec(settings)
    predictor = load_local_model(settings, model_dir)
    evaluation, predictions = evaluate_predictor(predictor, holdout, settings, cases)
    path = holdout_path(settings)
    evaluation["model"] = {"source": str(model_dir), "labels": list(predictor.labels)}
    evaluation["holdout"] = {
        "path": str(Path(settings.data.splits_dir) / path.name),
        "rows": len(holdout),
        "sha256": sha256_file(path),
    }

    detail_dir = settings.path(settings.evaluate.detail_dir)
    detail_dir.mkdir(parents=True, exist_ok=True)
    write_json(detail_dir / "evaluation.json", evaluation)
    with atomic_path(detail_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    metrics_path = settings.path(settings.evaluate.metrics)
    write_json(metrics_path, dvc_metrics(evaluation))
    return EvaluateResult(
        evaluation["overall"], evaluation["behavioural"]["status"], metrics_path, detail_dir
    )
