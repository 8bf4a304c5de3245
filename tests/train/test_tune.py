"""`ml tune` for real: two tiny Ray Tune trials (ASHA), each a Ray Train run logged to MLflow,
and a best-params file that `ml train --params-override` accepts."""

from __future__ import annotations

import pytest
import yaml

from tests.train.project import make_project
from tests.train.test_train import run_ml

pytestmark = pytest.mark.slow


def test_tune_writes_best_params_and_logs_trials(tmp_path, monkeypatch):
    # An earlier test's mlflow.set_tracking_uri leaves MLFLOW_TRACKING_URI pointing at its
    # (stopped) server, and load_settings below would apply it as an override.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_project(
        tmp_path,
        rows_per_class=4,
        val_per_class=2,
        extra={
            "tune": {
                "num_samples": 2,
                "num_workers": 1,
                "lr": [1e-4, 5e-4],
                "batch_size": [8],
                "epochs": [1],
                "dropout": [0.0, 0.1],
                "max_length": [16],
            }
        },
    )
    done = run_ml(["--params", "params.yaml", "tune"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    best_file = tmp_path / "reports" / "tune" / "best_params.yaml"
    best = yaml.safe_load(best_file.read_text())
    assert set(best) == {"model", "train"}
    assert 1e-4 <= best["train"]["lr"] <= 5e-4 and best["train"]["batch_size"] == 8
    assert best["model"]["max_length"] == 16

    from mlflow.tracking import MlflowClient

    from ml.config import load_settings
    from ml.train.ray_train import apply_params_override
    from ml.train.tracking import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)  # project paths (the SQLite store) resolve against the cwd
    settings = load_settings(tmp_path / "params.yaml")
    overridden = apply_params_override(settings, best_file)
    assert overridden.train.lr == best["train"]["lr"]
    assert overridden.provenance["train.lr"] == str(best_file)

    client = MlflowClient(tracking_uri=resolve_tracking_uri(settings))
    experiment = client.get_experiment_by_name("test")
    trials = client.search_runs([experiment.experiment_id], "tags.tune_trial = '1'")
    assert len(trials) == 2
    assert all(client.get_metric_history(t.info.run_id, "val_f1") for t in trials)
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {
        trials[0].data.tags["mlflow.parentRunId"]
    }
    parent = client.get_run(trials[0].data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["best_val_loss"] == pytest.approx(
        min(client.get_run(t.info.run_id).data.metrics["val_loss"] for t in trials)
    )
