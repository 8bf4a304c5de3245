"""`ml evaluate` on a real (tiny) model: files written, DVC metrics numeric, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ml.cli import app
from tests.evaluate.tiny import make_eval_project


def test_evaluate_writes_metrics_and_details(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    root = make_eval_project(tmp_path / "project", holdout_per_class=4)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["evaluate", "--model-dir", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["num_samples"] == 16 and 0 <= metrics["f1_weighted"] <= 1
    assert set(metrics["slices"]) == {
        "short_text",
        "long_text",
        "mentions_transformers",
        "mentions_framework",
    }

    def numeric(tree) -> bool:  # DVC diffs numbers; strings would clutter `dvc metrics diff`
        if isinstance(tree, dict):
            return all(numeric(v) for v in tree.values())
        return isinstance(tree, int | float)

    assert numeric(metrics)
    evaluation = json.loads((root / "reports/eval/evaluation.json").read_text())
    matrix = evaluation["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 16
    assert evaluation["behavioural"]["status"] in ("passed", "failed")
    assert len(evaluation["calibration"]["reliability"]) == 10
    predictions = pd.read_csv(root / "reports/eval/predictions.csv")
    assert len(predictions) == 16
    accuracy = predictions["correct"].mean()
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_missing_model_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = make_eval_project(tmp_path / "project")
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["evaluate"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "model dir not found" in result.output and "run `ml train` first" in result.output
    assert not (root / "reports/metrics.json").exists()
