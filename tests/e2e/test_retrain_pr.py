"""The retrain loop's second half under act: `ml retrain` (the retrain job's command, run here
with the job's environment and the same tracking server) pushes its branch to a real bare git
remote and opens the PR; then the real pr.yml, run by act on that branch, restores the
retrained model from the trusted DVC remote instead of training it.

The retrain workflow's drift job needs a production prediction log and a served model, so the
retrain command is run directly rather than through act (on a private local Ray). GitHub's REST
API cannot run here: a recorded stand-in on 127.0.0.1 serves it (tests/monitor/github_standin.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR, shared_data_dir
from tests.e2e.harness import ActRepo, build_act_repo, git, pr_event, run_act, tiny_params
from tests.engines import engine_env
from tests.monitor.github_standin import github_standin

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def retrain_repo(tmp_path: Path, tracking_uri: str) -> ActRepo:
    return build_act_repo(tmp_path, tracking_uri, tiny_params)


def test_the_retrain_branch_pr_run_restores_the_model(retrain_repo: ActRepo, cluster, tmp_path):
    repo = retrain_repo
    bare = tmp_path / "github.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git(repo.root, "remote", "add", "github", str(bare))
    git(repo.root, "push", "-q", "github", "main")
    with github_standin("owner/ml") as github:
        # The retrain trains on its own private Ray (no RAY_ADDRESS): the loop under test is
        # the branch and the PR run, which restores the model and so needs no training.
        env = engine_env(
            MLFLOW_TRACKING_URI=repo.mlflow_uri,
            ML_DATA_MIRROR=str(shared_data_dir() / "madewithml"),
            ML_RETRAIN_GITHUB_TOKEN="app-installation-token", GITHUB_REPOSITORY="owner/ml",
            GITHUB_API_URL=github.url, GITHUB_REF_NAME="main", ML_RETRAIN_REMOTE="github",
            ML_RETRAIN_DVC_REMOTE="local", GITHUB_OUTPUT=str(tmp_path / "retrain.out"),
        )  # fmt: skip
        retrained = subprocess.run(
            [str(BIN_DIR / "ml"), "retrain"], cwd=repo.root, env=env,
            capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
    (tmp_path / "retrain.log").write_text(retrained.stdout + retrained.stderr)
    assert retrained.returncode == 0, (retrained.stdout + retrained.stderr)[-4000:]
    out = dict(line.split("=", 1) for line in (tmp_path / "retrain.out").read_text().split("\n")
               if "=" in line)  # fmt: skip
    assert out["action"] == "pr_opened" and len(github.posts()) == 1
    branch = out["branch"]

    # The PR's head: the pushed branch, checked out as actions/checkout would on a fresh runner:
    # nothing the retrain left (outputs, DVC cache) stays behind.
    git(repo.root, "fetch", "-q", "github", branch)
    git(repo.root, "checkout", "-q", "-f", "-B", branch, "FETCH_HEAD")
    git(repo.root, "clean", "-q", "-f", "-d", "-x")
    assert not (repo.root / "models").exists() and not (repo.root / ".dvc/cache").exists()
    assert git(repo.root, "rev-parse", "HEAD") == git(bare, "rev-parse", branch)
    result = run_act(repo, cluster, "pull_request", "pr.yml", pr_event(repo, number=8))
    log = result.stdout + result.stderr
    assert "Success - Main Reproduce the pipeline" in log, log[-6000:]
    repro = log[log.index("Reproduce the pipeline") :]
    assert re.search(r"Pulling data for stage: 'train'|Pulling data for stage 'train'", repro), (
        repro[:6000]
    )
    assert "Running stage 'train'" not in repro
