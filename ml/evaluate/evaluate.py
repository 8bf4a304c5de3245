"""The evaluate stage: score a model on the holdout and write metrics and detail files.

The same `evaluate_predictor` scores a local model dir (this stage) and registry models (the
gate), so challenger and champion numbers come from one code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ml.config import Settings
from ml.errors import UserError
from ml.io import atomic_path, sha256_file, write_json

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULT_MODEL_DIR = "models/model"
TRAIN_REPORT = "reports/train.json"


class EvaluationError(UserError):
    """The model or the holdout cannot be evaluated; the message says what is missing."""


class Predictor(Protocol):
    labels: list[str]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


class PyfuncPredictor:
    """An MLflow pyfunc model (DataFrame with `text` in; `prob_<label>` columns out) seen as a
    Predictor. Labels come from the output columns, so the model needs no side files."""

    def __init__(self, model: Any, source: str) -> None:
        self.model = model
        self.source = source
        self._labels: list[str] | None = None

    def _predict(self, texts: list[str]) -> pd.DataFrame:
        import pandas as pd

        out = self.model.predict(pd.DataFrame({"text": texts}))
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
            self._predict(["label discovery"])
        return list(self._labels or [])

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        parts = [self._predict(texts[i : i + batch_size]).to_numpy() for i in starts]
        return np.vstack(parts).astype(np.float32)


def load_local_model(model_dir: Path) -> Predictor:
    from ml.train.model import ModelError, TextClassifier

    if not model_dir.is_dir():
        raise EvaluationError(f"model dir not found: {model_dir}; run `ml train` first")
    try:
        return TextClassifier.load(model_dir)
    except (ModelError, OSError, KeyError, ValueError) as exc:
        raise EvaluationError(f"cannot load the model in {model_dir}: {exc}") from exc


def load_registry_model(model_uri: str) -> Predictor:
    """Load `models:/NAME@alias`, `models:/NAME/version` or `runs:/...` as a pyfunc."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        return PyfuncPredictor(mlflow.pyfunc.load_model(model_uri), model_uri)
    except MlflowException as exc:
        raise EvaluationError(f"cannot load {model_uri}: {exc.message}") from exc


def read_holdout(settings: Settings) -> pd.DataFrame:
    import pandas as pd

    path = settings.path(settings.data.splits_dir) / "test.csv"
    if not path.is_file():
        raise EvaluationError(f"holdout not found: {path}; run `ml data split` first")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [
        c for c in (settings.data.label_column, *settings.data.text_columns) if c not in frame
    ]
    if missing:
        raise EvaluationError(f"{path} lacks column(s) {missing}")
    if frame.empty:
        raise EvaluationError(f"{path} has no rows")
    return frame


def behavioural_spec(settings: Settings) -> dict[str, Any]:
    from ml.evaluate.behavioural import load_cases

    return load_cases(settings.path(settings.evaluate.behavioural_file))


def evaluate_predictor(
    predictor: Predictor, holdout: pd.DataFrame, settings: Settings, cases: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Full evaluation of one model on the holdout: (evaluation dict, per-row predictions)."""
    import numpy as np

    from ml.data.text import combine_text
    from ml.evaluate.behavioural import run_checks
    from ml.evaluate.metrics import classification_metrics
    from ml.evaluate.slices import slice_metrics

    data = settings.data
    texts = combine_text(holdout, data.text_columns).tolist()
    y_true = holdout[data.label_column].astype(str).tolist()
    model_labels = list(predictor.labels)
    proba = np.asarray(predictor.predict_proba(texts, batch_size=settings.evaluate.batch_size))
    if proba.shape != (len(texts), len(model_labels)):
        raise EvaluationError(
            f"model returned probabilities of shape {proba.shape}, expected "
            f"({len(texts)}, {len(model_labels)})"
        )
    best = proba.argmax(axis=1)
    y_pred = [model_labels[i] for i in best]
    confidence = proba[np.arange(len(texts)), best].astype(float)
    labels = sorted(set(y_true))
    result = classification_metrics(y_true, y_pred, confidence, labels, settings.evaluate.ece_bins)
    result["slices"] = slice_metrics(texts, y_true, y_pred, labels, settings.evaluate.slices)

    def predict_labels(batch: list[str]) -> list[str]:
        p = np.asarray(predictor.predict_proba(batch, batch_size=settings.evaluate.batch_size))
        return [model_labels[i] for i in p.argmax(axis=1)]

    result["behavioural"] = run_checks(cases, predict_labels, model_labels).to_dict()
    result["model_labels"] = model_labels
    unknown = sorted(set(y_true) - set(model_labels))
    result["labels_unknown_to_model"] = unknown

    import pandas as pd

    predictions = pd.DataFrame(
        {
            "text": texts,
            "label": y_true,
            "predicted": y_pred,
            "confidence": confidence.round(6),
            "correct": np.asarray(y_true) == np.asarray(y_pred),
        }
    )
    if data.id_column in holdout:
        predictions.insert(0, data.id_column, holdout[data.id_column].to_numpy())
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
    report = settings.path(TRAIN_REPORT)
    if report.is_file():
        model_dir = json.loads(report.read_text()).get("model_dir")
        if model_dir:
            return settings.path(model_dir)
    return settings.path(DEFAULT_MODEL_DIR)


def evaluate(settings: Settings, model_dir: Path | None = None) -> EvaluateResult:
    """Score the trained model dir on the holdout; write reports/metrics.json and reports/eval/."""
    model_dir = model_dir or model_dir_from_train_report(settings)
    holdout = read_holdout(settings)
    cases = behavioural_spec(settings)
    predictor = load_local_model(model_dir)
    evaluation, predictions = evaluate_predictor(predictor, holdout, settings, cases)
    holdout_path = settings.path(settings.data.splits_dir) / "test.csv"
    evaluation["model"] = {"source": str(model_dir), "labels": list(predictor.labels)}
    evaluation["holdout"] = {
        "path": str(Path(settings.data.splits_dir) / "test.csv"),
        "rows": len(holdout),
        "sha256": sha256_file(holdout_path),
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
