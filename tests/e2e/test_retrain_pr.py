"""The retrain loop under act, from drift to the PR's own run: the real retrain.yml (dispatched,
as its schedule would) checks every declared model and finds drift in the default model's
application log (the other models have none: not deployed, not enough data); its retrain job
runs `ml retrain --models` on the drifted one only, which pushes that model's branch to a real
bare git remote (the checkout's origin) and opens its PR; then the real pr.yml, run by act on
that branch, restores the retrained model from the trusted DVC remote instead of training it.

GitHub's REST API cannot run here: a recorded stand-in on 127.0.0.1 serves it
(tests/monitor/github_standin.py). The App token step is a remote action skipped under act; the
workflow's act-only step hands `ml retrain` the token given to act as a secret instead.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_data_dir
from tests.e2e.harness import (
    ActRepo,
    Cluster,
    build_act_repo,
    git,
    pr_event,
    ray_cluster,
    run_act,
    tiny_params,
)
from tests.engines import mlflow_server
from tests.monitor.github_standin import github_standin

pytestmark = [pytest.mark.slow, pytest.mark.integration]
TOKEN = "app-installation-token"


@pytest.fixture
def retrain_repo(tmp_path: Path) -> Iterator[ActRepo]:
    # Its own registry: the package's shared one already holds a version trained from these
    # data and params by the other e2e tests, which ml retrain would reuse instead of training
    # (proposing only the data stages), and the PR run would then train after all.
    with mlflow_server(tmp_path / "mlflow") as uri:
        yield build_act_repo(tmp_path, uri, tiny_params)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    # Its own cluster too: the release tests leave the served app holding one of the package
    # cluster's two CPUs, which training here would wait for (a busy CPU is not a misfit: the
    # scaling check compares the request with the nodes' totals).
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    with ray_cluster(logs) as running:
        yield running


def drifted_log(log_dir: Path) -> Path:
    """Production traffic that moved, written by the serving layer's own log writer: medical
    abstracts sent to the ML-tag classifier, which calls them all `other`."""
    import pandas as pd

    from ml.serve.prediction_log import PredictionLogWriter, make_record

    medical = pd.read_csv(
        shared_data_dir() / "medical-abstracts" / "test.csv", dtype=str, keep_default_na=False
    ).head(240)
    writer = PredictionLogWriter(log_dir, writer_id="replica-1")
    for title, description in zip(medical["title"], medical["description"], strict=True):
        writer.write(
            make_record(
                text=f"{title} {description}", label="other",
                probabilities={"other": 0.55, "mlops": 0.45}, model_name="tag-classifier",
                model_version="1", latency_ms=4.0,
            )
        )  # fmt: skip
    writer.close()
    return log_dir


def run_retrain_workflow(repo: ActRepo, cluster, bare: Path, log_dir: Path, api_url: str):
    """retrain.yml as GitHub would run it for this repository: origin is the (bare) remote the
    job pushes to, the API is the stand-in, the prediction log a repository variable."""
    git(repo.root, "remote", "set-url", "origin", str(bare))
    try:
        event = {"ref": "refs/heads/main", "inputs": {"force": False},
                 "repository": {"full_name": "owner/ml"}}  # fmt: skip
        return run_act(
            repo, cluster, "workflow_dispatch", "retrain.yml", event,
            extra=["--var", f"ML_PREDICTION_LOG_DIR={log_dir}",
                   "--env", "GITHUB_REPOSITORY=owner/ml", "--env", f"GITHUB_API_URL={api_url}",
                   "-s", f"ML_RETRAIN_ACT_TOKEN={TOKEN}"],
        )  # fmt: skip
    finally:
        # act derives github.repository from origin for the pr.yml run below.
        git(repo.root, "remote", "set-url", "origin", "https://github.com/owner/ml.git")


def test_drift_opens_a_retrain_pr_whose_run_restores_the_model(
    retrain_repo: ActRepo, own_cluster: Cluster, tmp_path
):
    repo = retrain_repo
    bare = tmp_path / "github.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git(repo.root, "push", "-q", str(bare), "main")
    # The default model's application folder (ml/serve/multi.py): the other models log none.
    log_dir = tmp_path / "predictions"
    drifted_log(log_dir / "madewithml")
    with github_standin("owner/ml") as github:
        result = run_retrain_workflow(repo, own_cluster, bare, log_dir, github.url)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    assert re.search(r"\[retrain/drift\s*\].*DRIFT: ", log), log[-8000:]
    assert re.search(r"\[retrain/drift\s*\].*to retrain: madewithml$", log, re.M), log[-8000:]
    for job in ("drift", "retrain"):
        assert re.search(rf"\[retrain/{job}\s*\] 🏁  Job succeeded", log), f"job {job} failed"
    assert "Success - Main Retrain, gate, register each drifted model" in log
    assert "remote action ran under act" not in log

    # The branch on the remote holds one commit on main: the new data version.
    branches = git(bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/retrain/")
    assert len(branches.split()) == 1, branches
    branch = branches.strip()
    assert branch.startswith("retrain/madewithml-"), branch  # one PR, the drifted model's
    assert git(bare, "rev-parse", f"{branch}~1") == git(bare, "rev-parse", "main")
    assert git(bare, "diff", "--name-only", "main", branch) == "dvc.lock"
    assert "train@madewithml:" in git(bare, "show", f"{branch}:dvc.lock")
    (post,) = github.posts()
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert (post.body["head"], post.body["base"]) == (branch, "main"), json.dumps(post.body)
    # The drift job ran on another runner: its verdict reached the body through job outputs.
    assert "drift check verdict `drift`" in post.body["body"], post.body["body"]

    # The PR's head: the pushed branch, checked out as actions/checkout would on a fresh runner.
    git(repo.root, "fetch", "-q", str(bare), branch)
    git(repo.root, "checkout", "-q", "-f", "-B", branch, "FETCH_HEAD")
    git(repo.root, "clean", "-q", "-f", "-d", "-x")
    assert not (repo.root / "models").exists() and not (repo.root / ".dvc/cache").exists()
    result = run_act(repo, own_cluster, "pull_request", "pr.yml", pr_event(repo, number=1))
    log = result.stdout + result.stderr
    assert "Success - Main Reproduce the pipeline" in log, log[-6000:]
    repro = log[log.index("Reproduce the pipeline") :]
    pulled = r"Pulling data for stage:? 'train@madewithml'"
    assert re.search(pulled, repro), repro[:6000]
    assert "Running stage 'train@madewithml'" not in repro
