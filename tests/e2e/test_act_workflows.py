"""The real workflow files, run by act on this machine against a real two-node Ray cluster.

Only steps that need github.com are skipped under act (remote actions guarded by
`if: !env.ACT`, checkout, and the comment API call in pr-comment.yml, which is not run here);
every `make`, `dvc` and `ml` step runs. Order matters: the PR registers the challenger that
the release then ships, and the broken release must roll back to it.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import ActRepo, git, pr_event, run_act, tag_event

pytestmark = [pytest.mark.slow, pytest.mark.integration]
MODEL = "tag-classifier"


def registry(repo: ActRepo):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=repo.mlflow_uri)


def served_model(repo: ActRepo) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{repo.serve_port}/model", timeout=10) as r:
        return json.loads(r.read())


def test_pr_workflow_trains_registers_and_writes_the_comment(act_repo, cluster):
    result = run_act(act_repo, cluster, "pull_request", "pr.yml", pr_event(act_repo))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    for job in ("validate", "train"):
        assert re.search(rf"\[pr/{job}\s*\] 🏁  Job succeeded", log), f"job {job} failed"
    for step in (
        "ml data validate",
        "Reproduce the pipeline (unchanged stages restored from the run cache)",
        "Share stage results with later runs",
        "Enforce the gate verdict",
    ):
        assert f"Success - Main {step}" in log, step
    assert "Failure - " not in log
    assert "remote action ran under act" not in log

    challenger = registry(act_repo).get_model_version_by_alias(MODEL, "challenger")
    assert challenger.tags["git_sha"] == git(act_repo.root, "rev-parse", "HEAD")
    assert challenger.tags["gate.status"] == "passed"
    assert re.search(r"PR comment: \S*reports/pr_comment\.md \(\d+ characters\)", log)


def test_release_workflow_promotes_deploys_and_smoke_tests(act_repo, cluster):
    result = run_act(act_repo, cluster, "push", "release.yml", tag_event(act_repo, "v0.1.0"))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "released v0.1.0: champion v1" in log
    champion = registry(act_repo).get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1"
    assert served_model(act_repo)["version"] == "1"


def test_broken_release_rolls_back_alias_and_deployment(act_repo, cluster, tmp_path):
    """A new commit whose registered model is corrupt (no weights): the deploy fails, the
    champion alias and the live deployment go back to version 1, and the job fails."""
    client = registry(act_repo)
    good = client.get_model_version(MODEL, "1")
    git(act_repo.root, "commit", "-q", "--allow-empty", "-m", "a release with a broken model")
    sha = git(act_repo.root, "rev-parse", "HEAD")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")  # and no weights
    run = client.create_run(client.get_run(good.run_id).info.experiment_id, run_name="broken")
    client.log_artifacts(run.info.run_id, str(broken), "model")
    client.set_terminated(run.info.run_id)
    tags = {"git_sha": sha, "gate.status": "passed", "gate.champion_version": "1"}
    version = client.create_model_version(
        MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    result = run_act(act_repo, cluster, "push", "release.yml", tag_event(act_repo, "v0.2.0"))
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"release v0.2.0 of version {version.version} failed" in log
    assert "rolled back to version 1, which is live" in log
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert served_model(act_repo)["version"] == "1"


def test_act_repo_is_not_the_checkout(act_repo):
    # The workflows ran in a copy: nothing they wrote lands in the developer's tree.
    assert Path(act_repo.root).resolve() != Path(__file__).resolve().parents[2]
