"""How `ml train` opens its MLflow run (in a background thread) and how the Ray Train
controller's epoch logger finds it: against a real SQLite tracking store."""

from __future__ import annotations

import pytest

from ml.config import load_settings
from ml.train import tracking
from tests.train.project import make_project


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # Project paths, the SQLite store among them, resolve against the working folder: without
    # this the tests would write into (and find earlier runs in) the checkout's own mlflow.db.
    monkeypatch.chdir(tmp_path)
    return load_settings(make_project(tmp_path), environ={})


def test_open_run_creates_then_resumes_the_unfinished_run_of_a_ray_run_name(settings):
    from mlflow.tracking import MlflowClient

    uri, first = tracking.open_run(
        settings, "nightly", "attempt-1", {"train.lr": "0.0002"}, {"git_sha": "abc"}, {"a.json": {}}
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first)
    assert run.info.run_name == "nightly" and run.info.status == "RUNNING"
    assert run.data.params == {"train.lr": "0.0002"}
    assert run.data.tags["ray_run_name"] == "nightly" and run.data.tags["git_sha"] == "abc"
    assert "mlflow.user" in run.data.tags  # what mlflow.start_run would have added
    assert [a.path for a in client.list_artifacts(first)] == ["a.json"]

    tracking.mark_interrupted(uri, first, "training run 'nightly' interrupted (SIGINT)")
    killed = client.get_run(first)
    assert killed.info.status == "KILLED" and "SIGINT" in killed.data.tags["failure"]
    _, again = tracking.open_run(settings, "nightly", "attempt-2", {}, {}, {})
    assert again == first
    resumed = client.get_run(first)
    assert resumed.info.status == "RUNNING"
    assert resumed.data.tags[tracking.ATTEMPT_TAG] == "attempt-2"
    assert tracking.FAILURE_TAG not in resumed.data.tags  # it described the attempt before

    client.set_terminated(first, "FAILED")  # fit() raised: resumed as well
    _, third = tracking.open_run(settings, "nightly", "attempt-3", {}, {}, {})
    assert third == first

    client.set_terminated(first, "FINISHED")  # a finished run is never reused
    _, fresh = tracking.open_run(settings, "nightly", "attempt-4", {}, {}, {})
    assert fresh != first


def test_epoch_logger_finds_its_run_by_attempt_and_says_when_there_is_none(settings):
    from mlflow.tracking import MlflowClient

    uri, run_id = tracking.open_run(settings, "run-a", "attempt-a", {}, {}, {})
    tracking.open_run(settings, "run-b", "attempt-b", {}, {}, {})
    client = MlflowClient(tracking_uri=uri)
    experiment = settings.mlflow.experiment
    assert tracking.find_attempt_run(client, experiment, "attempt-a", timeout_s=0) == run_id

    logger = tracking.epoch_logger(uri, experiment=experiment, attempt="attempt-a")
    logger.after_report(None, [{"epoch": 1, "val_f1": 0.5, "note": "text is skipped"}], None)
    logger.after_report(None, [{"epoch": 2, "val_f1": 0.75}], None)
    history = client.get_metric_history(run_id, "val_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]

    with pytest.raises(tracking.TrackingError, match=r"no MLflow run tagged .*attempt-z"):
        tracking.find_attempt_run(client, experiment, "attempt-z", timeout_s=0)
    with pytest.raises(ValueError, match="needs a run_id"):
        tracking.epoch_logger(uri)
