"""The evaluate, register, gate and report stages on a real (tiny) CNN and real Fashion-MNIST
splits: the local model dir and the registry's pyfunc score the same, and the PR comment shows
the image sections. No Ray: the model trains for a few steps in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ml.cli import app
from tests.evaluate.tiny import log_model_run
from tests.image_project import make_image_project

FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def ml(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def image_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_image_project
) -> tuple[Path, Path]:
    root = tmp_path / "project"
    make_image_project(
        root,
        train_rows=1000,
        holdout_rows=300,
        mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "test"},
    )
    # The session's tiny model was trained on these same splits (same rows, same seed): a copy
    # instead of another training run.
    model_dir = Path(shutil.copytree(tiny_image_project.model_dir, root / "models" / "model"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("GITHUB_ACTOR", "ci-bot")
    return root, model_dir


def test_image_model_through_evaluate_gate_and_report(image_project):
    root, model_dir = image_project
    result = ml("evaluate", "--model-dir", str(model_dir))
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["num_samples"] == 300 and set(metrics["per_class"]) == set(FASHION)
    assert set(metrics["slices"]) == {"dark", "bright", "tops", "footwear"}
    assert metrics["slices"]["tops"]["num_samples"] == 120  # 30 per class in the subset
    assert metrics["behavioural"] == {"passed": 0, "failed": 0, "skipped": 0}
    evaluation = json.loads((root / "reports/eval/evaluation.json").read_text())
    assert evaluation["task"] == "image-classification"
    assert evaluation["behavioural"]["status"] == "not_applicable"
    assert evaluation["confusion_matrix"]["labels"] == FASHION
    assert evaluation["holdout"]["path"] == "data/splits/test.npz"
    predictions = pd.read_csv(root / "reports/eval/predictions.csv")
    assert len(predictions) == 300 and "mean_intensity" in predictions
    assert predictions["correct"].mean() == pytest.approx(metrics["accuracy"])
    assert set(predictions["predicted"]) <= set(FASHION)

    # The registry's pyfunc (fed the task's input frame) scores exactly as the model dir did.
    log_model_run(root, model_dir, f"sqlite:///{root.parent / 'mlflow.db'}")
    assert ml("registry", "register").exit_code == 0
    gate = ml("gate", "--exit-zero")
    assert gate.exit_code == 0, gate.output
    decision = json.loads((root / "reports/gate.json").read_text())
    assert decision["task"] == "image-classification" and decision["mode"] == "floors"
    assert decision["challenger"]["overall"]["accuracy"] == pytest.approx(metrics["accuracy"])
    behavioural = next(c for c in decision["checks"] if c["name"] == "behavioural")
    assert behavioural["passed"] and "not applicable" in behavioural["detail"]
    # A few steps on 900 images cannot reach the Fashion-MNIST floors (accuracy 0.9).
    assert decision["passed"] is (metrics["accuracy"] >= 0.9)

    report = ml("report", "pr", "--base", "HEAD")
    assert report.exit_code == 0, report.output
    comment = (root / "reports/pr_comment.md").read_text()
    assert "_Task `image-classification`" in comment
    for section in ("### Per class", "### Slices", "Confusion matrix", "### Calibration"):
        assert section in comment
    assert "| T-shirt/top | 30 |" in comment and "tops (classes T-shirt/top" in comment
    assert "**not applicable**" in comment
