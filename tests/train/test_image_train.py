"""The image task on the same `ml train` path as text: Ray Train DDP over two workers, the
splits' pixels through the object store, a checkpoint every epoch, recovery from an injected
worker fault, MLflow, and a pyfunc model that answers as the model dir does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.image_project import make_image_project
from tests.train.test_train import run_ml

pytestmark = pytest.mark.slow


def test_image_model_trains_by_ddp_recovers_from_a_fault_and_logs_its_pyfunc(tmp_path):
    import mlflow

    from ml.tasks import get_task
    from ml.train.model import read_meta

    make_image_project(
        tmp_path,
        train_rows=600,
        holdout_rows=60,
        train={"epochs": 2, "num_workers": 2, "batch_size": 64},
        mlflow={"tracking_uri": "sqlite:///mlflow.db", "experiment": "image-test"},
    )
    marker = tmp_path / "fault-injected"
    done = run_ml(
        ["--params", "params.yaml", "train", "--run-name", "image"],
        tmp_path,
        ML_TRAIN_INJECT_FAULT=f"1:1:{marker}",
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    assert marker.is_file() and "injected worker fault at epoch 1 step 1" in console
    assert "resumed from checkpoint after epoch 1" in console and "epoch 2/2" in console

    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["task"] == "image-classification" and report["epochs_run"] == 2
    assert report["resources"] == {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1.0}
    # 600 images of 10 classes for two epochs: far from the real run, well above chance.
    assert report["metrics"]["val_accuracy"] > 0.3, report["metrics"]
    model_dir = Path(report["model_dir"])
    meta = read_meta(model_dir)
    assert meta["task"] == "image-classification" and len(meta["labels"]) == 10

    task = get_task("image-classification")
    images = np.load(tmp_path / "data" / "splits" / "test.npz")["images"][:20]
    local = task.load_predictor(model_dir).predict_proba(images)
    assert local.shape == (20, 10)
    checkpoint = task.load_predictor(Path(report["checkpoint"]) / "model").predict_proba(images)
    np.testing.assert_allclose(checkpoint, local, atol=1e-5)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(report["model_uri"]).predict(task.to_frame(images))
    np.testing.assert_allclose(
        served[[f"prob_{label}" for label in meta["labels"]]].to_numpy(), local, atol=1e-5
    )
