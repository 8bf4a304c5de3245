"""Real training runs on a few dozen Made-With-ML rows: Ray Train with 2 CPU workers, MLflow
(a real `mlflow server`), checkpoints, fault recovery, interruption and resume, and a Ray Job on
a two-node cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.train.conftest import RayCluster, cli_env
from tests.train.project import make_project

pytestmark = pytest.mark.slow
ML = [sys.executable, "-m", "ml.cli"]


def run_ml(args: list[str], cwd: Path, timeout: float = 420, **env: str):
    return subprocess.run(
        [*ML, *args],
        cwd=cwd,
        env=cli_env(PYTHONUNBUFFERED="1", **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def checkpoint_recorded(storage: Path) -> bool:
    """Ray Train's controller has recorded a checkpoint of the run stored in `storage`.

    A worker's report returns once the checkpoint is uploaded; the controller records it (what
    a rerun resumes from) when it next polls the workers, a moment later."""
    snapshot = storage / "checkpoint_manager_snapshot.json"
    return snapshot.exists() and "checkpoint_" in snapshot.read_text()


def interrupt_at(
    args: list[str],
    cwd: Path,
    line: str,
    signum: int,
    timeout: float = 300,
    ready: Callable[[], bool] = lambda: True,
) -> tuple[int, str]:
    """Start `ml ARGS`, send it `signum` once its console shows `line` and `ready()` holds;
    (exit code, console)."""
    console_file = cwd / f"console-{signal.Signals(signum).name}.log"
    with console_file.open("w") as console_out:
        process = subprocess.Popen(
            [*ML, *args],
            cwd=cwd,
            env=cli_env(PYTHONUNBUFFERED="1"),
            stdout=console_out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while line not in console_file.read_text() or not ready():
            assert process.poll() is None, console_file.read_text()[-3000:]
            assert time.monotonic() < deadline, console_file.read_text()[-3000:]
            time.sleep(0.2)
        process.send_signal(signum)
        process.wait(timeout=120)
    return process.returncode, console_file.read_text()


def texts_of(project: Path, split: str) -> list[str]:
    from ml.data.text import combine_text

    frame = pd.read_csv(project / "data" / "splits" / f"{split}.csv")
    return combine_text(frame, ["title", "description"]).tolist()


def test_tiny_run_recovers_a_worker_fault_tracks_to_mlflow_server_and_model_round_trips(
    tmp_path, mlflow_server
):
    """One run for all of it (each `ml train` starts Ray and Ray Train): a worker fault in the
    second epoch, recovered from the first epoch's checkpoint, with Ray Data's streaming_split
    (the submit test below uses the default interleave: both ways of sharding the train set
    get a real run); then the tracking, the reports and the three forms of the model."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml.tasks import get_task
    from ml.train.model import read_meta

    task = get_task("text-classification")
    make_project(
        tmp_path,
        epochs=2,
        tracking_uri=mlflow_server,
        extra={"train": {"data_sharding": "streaming_split"}},
    )
    marker = tmp_path / "fault-injected"
    done = run_ml(
        ["--params", "params.yaml", "train", "--run-name", "tiny"],
        tmp_path,
        ML_TRAIN_INJECT_FAULT=f"1:1:{marker}",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert marker.is_file(), "the fault was never injected"
    assert "injected worker fault at epoch 1 step 1" in console
    assert "resumed from checkpoint after epoch 1" in console
    assert "epoch 1/2" in console and "epoch 2/2" in console  # per-epoch progress lines
    # ...and they are the progress display: Ray Train's own per-report INFO lines, each with the
    # whole metrics dict, are quieted in the workers.
    assert "Reporting training result" not in console, console[-3000:]
    # The private local Ray runs without a dashboard, so a PlacementGroupCleaner (which polls
    # the State API that the dashboard serves) would warn here every second; there is none.
    assert "PlacementGroupCleaner" not in console, console[-3000:]

    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["epochs_run"] == 2
    assert (Path(report["model_dir"]) / "model.safetensors").is_file()
    assert report["model_uri"] == f"runs:/{report['run_id']}/model"
    assert report["resources"] == {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1.0}
    assert report["samples_per_s"] > 0 and report["duration_s"] > 0

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(report["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.max_length"] == "24"
    assert run.data.params["train.num_workers"] == "2"
    for tag in ("git_sha", "params_hash", "data_sha256.train.csv", "system.torch"):
        assert tag in run.data.tags, tag
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) == 2 and losses[1] < losses[0]  # it learns
    assert len(client.get_metric_history(run.info.run_id, "val_f1")) == 2

    # The model dir, the MLflow pyfunc model and the best checkpoint agree on predictions.
    texts = texts_of(tmp_path, "test")
    assert read_meta(report["model_dir"])["task"] == "text-classification"
    local = task.load_predictor(Path(report["model_dir"]))
    probabilities = local.predict_proba(texts)
    assert probabilities.shape == (len(texts), 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    checkpoint = task.load_predictor(Path(report["checkpoint"]) / "model")
    np.testing.assert_allclose(checkpoint.predict_proba(texts), probabilities, atol=1e-5)

    mlflow.set_tracking_uri(mlflow_server)
    pyfunc = mlflow.pyfunc.load_model(report["model_uri"])
    frame = pd.read_csv(tmp_path / "data" / "splits" / "test.csv")
    served = pyfunc.predict(frame[["title", "description"]])
    assert list(served.columns[:2]) == ["label", "confidence"]
    np.testing.assert_allclose(
        served[[f"prob_{label}" for label in local.labels]].to_numpy(), probabilities, atol=1e-5
    )
    assert served["label"].tolist() == [p["label"] for p in local.predict(texts)]
    by_text = pyfunc.predict(pd.DataFrame({"text": texts}))
    assert by_text["label"].tolist() == served["label"].tolist()


def test_interrupted_run_stops_cleanly_and_its_rerun_continues_it(tmp_path):
    """SIGTERM (a cancelled CI job; it takes the same path as Ctrl-C, which the submit test
    sends) in the middle of training: the run stops with exit code 143 and says how to resume,
    nothing is installed, the MLflow run is KILLED; the rerun with the same name continues the
    checkpoints and the same MLflow run."""
    from mlflow.tracking import MlflowClient

    epochs = 8
    make_project(tmp_path, epochs=epochs, rows_per_class=4, val_per_class=2, num_workers=1)
    args = ["--params", "params.yaml", "train", "--run-name", "cut"]
    # Epoch 2's line is printed after epoch 1's checkpoint was reported.
    code, console = interrupt_at(
        args,
        tmp_path,
        f"epoch 2/{epochs}",
        signal.SIGTERM,
        ready=lambda: checkpoint_recorded(tmp_path / "ray_results" / "cut"),
    )
    assert f"epoch {epochs}/{epochs}" not in console, "the signal came too late to interrupt"
    assert code == 128 + signal.SIGTERM, console[-3000:]
    assert "interrupted (SIGTERM)" in console and "Rerun with --run-name cut" in console
    assert "Traceback" not in console, console[-3000:]
    assert not (tmp_path / "reports" / "train.json").exists()
    assert not (tmp_path / "models" / "model").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test")
    (killed,) = client.search_runs([experiment.experiment_id], "tags.ray_run_name = 'cut'")
    assert killed.info.status == "KILLED"
    assert "interrupted" in killed.data.tags["failure"]

    again = run_ml(args, tmp_path)
    rerun = again.stdout + again.stderr
    assert again.returncode == 0, rerun[-3000:]
    assert "resumed from checkpoint after epoch" in rerun
    assert f"epoch 1/{epochs}" not in rerun and f"epoch {epochs}/{epochs}" in rerun
    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["run_id"] == killed.info.run_id and report["epochs_run"] == epochs
    finished = client.get_run(killed.info.run_id)
    assert finished.info.status == "FINISHED" and "failure" not in finished.data.tags
    steps = {m.step for m in client.get_metric_history(killed.info.run_id, "train_loss")}
    assert steps == set(range(1, epochs + 1))


def test_submit_to_two_node_cluster_stop_resume_and_bad_address(
    tmp_path, ray_cluster: RayCluster, monkeypatch
):
    """`ml train --submit` as a Ray Job: Ctrl-C stops the job on the cluster too (it is not
    left training for nobody), the rerun with the same name resumes it from the shared
    storage and brings the model back, and a bad address fails fast."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    epochs = 8
    project = tmp_path / "project"
    project.mkdir()
    make_project(project, epochs=epochs, rows_per_class=4, val_per_class=2)
    storage = tmp_path / "shared-storage"
    args = [
        "--params",
        "params.yaml",
        "train",
        "--submit",
        "--address",
        ray_cluster.jobs_address,
        "--run-name",
        "submitted",
        "--storage-path",
        str(storage),
    ]
    code, console = interrupt_at(
        args,
        project,
        f"epoch 2/{epochs}",
        signal.SIGINT,
        ready=lambda: checkpoint_recorded(storage / "submitted"),
    )
    assert f"epoch {epochs}/{epochs}" not in console, "the signal came too late to interrupt"
    assert code == 128 + signal.SIGINT, console[-3000:]
    assert "stopped (STOPPED)" in console and "interrupted (SIGINT)" in console, console[-3000:]
    assert "Traceback" not in console, console[-3000:]
    (job,) = JobSubmissionClient(ray_cluster.jobs_address).list_jobs()
    assert job.status == JobStatus.STOPPED

    done = run_ml(args, project)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    assert "submitted Ray job" in console and "resumed from checkpoint after epoch" in console
    assert f"epoch 1/{epochs}" not in console and f"epoch {epochs}/{epochs}" in console
    report = json.loads((project / "reports" / "train.json").read_text())
    assert report["submitted"] is True and report["epochs_run"] == epochs
    assert (project / "models" / "model" / "model.safetensors").is_file()
    assert any(storage.glob("submitted/checkpoint_*"))

    import ray

    # Both nodes were alive (2 x 1 CPU); the 2 DDP workers needed both of them.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address=ray_cluster.gcs_address)
    try:
        alive = [node for node in ray.nodes() if node["Alive"]]
        assert len(alive) == 2
    finally:
        ray.shutdown()

    started = time.monotonic()
    bad = run_ml(
        ["--params", "params.yaml", "train", "--submit", "--address", "http://127.0.0.1:9"],
        project,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "cannot reach" in bad.stderr and "127.0.0.1:9" in bad.stderr
    assert time.monotonic() - started < 60


def test_unreachable_cluster_and_missing_splits_are_one_line_errors(tmp_path):
    make_project(tmp_path)
    bad = run_ml(
        ["--params", "params.yaml", "train", "--address", "127.0.0.1:9"], tmp_path, timeout=120
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in bad.stderr
    (tmp_path / "data" / "splits" / "train.csv").unlink()
    missing = run_ml(["--params", "params.yaml", "train"], tmp_path, timeout=120)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "run `ml data split` first" in missing.stderr


def test_more_worker_cpus_than_the_machine_has_is_an_error_not_a_hang(tmp_path):
    import os

    make_project(tmp_path, num_workers=(os.cpu_count() or 2) + 1)
    done = run_ml(["--params", "params.yaml", "train"], tmp_path, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"need CPU {(os.cpu_count() or 2) + 1} in all" in done.stderr
    assert "train.num_workers" in done.stderr


def test_a_request_no_node_fits_fails_fast_on_a_two_node_cluster(tmp_path, ray_cluster):
    """On the PR loop's cluster (two 1-CPU nodes) a 2-CPU worker fits no node: `ml train`
    says so with the numbers after the bounded wait, instead of Ray Train waiting for the
    worker group forever. `auto` gives each worker the 1 CPU a node has, so 3 workers need
    3 nodes of the 2 there are."""
    address = ["--params", "params.yaml", "train", "--address", ray_cluster.gcs_address]
    make_project(
        tmp_path, num_workers=1, extra={"train": {"cpus_per_worker": 2, "cluster_wait_s": 3}}
    )
    started = time.monotonic()
    done = run_ml(address, tmp_path, timeout=180)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = " ".join(done.stderr.split())
    assert "1 worker(s) x {CPU 2} need CPU 2 in all, each worker on ONE node" in error, error
    assert "2 node(s) hold 0 such worker(s)" in error
    assert "node 1: CPU 1" in error and "node 2: CPU 1" in error
    assert "waited 3 s" in error and "train.cpus_per_worker" in error
    assert time.monotonic() - started < 150

    make_project(
        tmp_path, num_workers=3, extra={"train": {"cpus_per_worker": "auto", "cluster_wait_s": 0}}
    )
    done = run_ml(address, tmp_path, timeout=180)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = " ".join(done.stderr.split())
    assert "3 worker(s) x {CPU 1} need CPU 3 in all" in error, error
    assert "2 node(s) hold 2 such worker(s)" in error


def test_import_cli_stays_light():
    code = (
        "import sys, ml.cli; "
        "print(sorted(m for m in ('ray', 'torch', 'mlflow', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True
    )
    assert out.stdout.strip() == "[]"
