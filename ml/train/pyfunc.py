"""The MLflow pyfunc flavour of a trained model dir of any task: DataFrame in, labels and
probabilities out.

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


class TaskPyfunc(mlflow.pyfunc.PythonModel):
    """A model dir of any task: meta.json names the task, whose `load_predictor` loads it and
    whose `from_frame` reads the input DataFrame. The model dir travels as the `model_dir`
    artifact."""

    def load_context(self, context: Any) -> None:
        from ml.tasks import get_task
        from ml.train.model import read_meta, task_name

        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        self.meta = read_meta(model_dir)
        self.task = get_task(task_name(self.meta))
        self.predictor = self.task.load_predictor(model_dir)

    # No type hints on purpose: MLflow would turn them into a (wrong) schema for the input.
    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        probabilities = self.predictor.predict_proba(self.task.from_frame(frame, self.meta))
        labels = self.predictor.labels
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


# The name models logged before tasks were plug-ins were written with.
TextClassifierPyfunc = TaskPyfunc


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
        "pillow",  # the image task's from_frame decodes PNG/JPEG cells
    ):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def model_signature(model_dir: Path) -> Any:
    """The output schema: label, confidence and one probability column per label. The input
    is the task's (`from_frame` checks it and says what it accepts), so it is left open."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from ml.train.model import read_meta

    labels = read_meta(model_dir)["labels"]
    outputs = Schema(
        [ColSpec("string", "label"), ColSpec("double", "confidence")]
        + [ColSpec("double", f"prob_{label}") for label in labels]
    )
    return ModelSignature(inputs=None, outputs=outputs)


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
