"""The MLflow pyfunc flavour of a trained model dir: DataFrame in, labels and probabilities out.

Logged with the `ml` package as code, so `mlflow.pyfunc.load_model(uri)` works where only the
pip requirements are installed. Importing this module imports mlflow (it subclasses
PythonModel); the CLI imports it only inside commands.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

MODEL_ARTIFACT = "model_dir"
TEXT_COLUMN = "text"
DEFAULT_TEXT_COLUMNS = ("title", "description")


class TextClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps ml.train.model.TextClassifier; the model dir travels as the `model_dir` artifact."""

    def load_context(self, context: Any) -> None:
        from ml.train.model import TextClassifier

        self.classifier = TextClassifier.load(context.artifacts[MODEL_ARTIFACT])
        self.text_columns = list(self.classifier.meta.get("text_columns") or DEFAULT_TEXT_COLUMNS)

    def _texts(self, frame: pd.DataFrame) -> list[str]:
        from ml.data.text import combine_text

        if TEXT_COLUMN in frame.columns:
            return frame[TEXT_COLUMN].fillna("").astype(str).tolist()
        present = [c for c in self.text_columns if c in frame.columns]
        if not present:
            raise ValueError(
                f"input needs a {TEXT_COLUMN!r} column or the text columns {self.text_columns}; "
                f"got {list(frame.columns)}"
            )
        return combine_text(frame, present).tolist()

    # No type hints on purpose: MLflow would turn them into a (wrong) schema for the input.
    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        probabilities = self.classifier.predict_proba(self._texts(frame))
        labels = self.classifier.labels
        best = probabilities.argmax(axis=1) if len(probabilities) else []
        result = pd.DataFrame(
            {
                "label": [labels[i] for i in best],
                "confidence": [float(probabilities[r, i]) for r, i in enumerate(best)],
            }
        )
        for column, label in enumerate(labels):
            result[f"prob_{label}"] = probabilities[:, column].astype(float)
        return result


def pip_requirements() -> list[str]:
    """Exact versions of what predict imports (no torchvision)."""
    requirements = []
    for package in (
        "torch",
        "transformers",
        "safetensors",
        "tokenizers",
        "pandas",
        "numpy",
        "mlflow",
    ):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def model_signature(model_dir: Path) -> Any:
    """Input: a `text` column or the text columns, each optional (either form is accepted);
    output: label, confidence and one probability column per label."""
    import json

    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    meta = json.loads((Path(model_dir) / "meta.json").read_text())
    text_columns = list(meta.get("text_columns") or DEFAULT_TEXT_COLUMNS)
    inputs = Schema(
        [ColSpec("string", name, required=False) for name in [TEXT_COLUMN, *text_columns]]
    )
    outputs = Schema(
        [ColSpec("string", "label"), ColSpec("double", "confidence")]
        + [ColSpec("double", f"prob_{label}") for label in meta["labels"]]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc_model(model_dir: Path) -> str:
    """Log the model dir as `model` in the active run; returns the model URI (runs:/<id>/model)."""
    import ml

    package_dir = Path(ml.__file__).resolve().parent
    info = mlflow.pyfunc.log_model(
        name="model",
        # Models-from-code: the entry file names the class, so nothing is pickled.
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
        artifacts={MODEL_ARTIFACT: str(model_dir)},
        code_paths=[str(package_dir)],
        pip_requirements=pip_requirements(),
        signature=model_signature(model_dir),
    )
    run = mlflow.active_run()
    return f"runs:/{run.info.run_id}/model" if run else info.model_uri
