"""The real workflow files, run by act on this machine against a real two-node Ray cluster.

Only steps that need github.com are skipped under act (remote actions guarded by
`if: !env.ACT`, checkout, and the comment API call in pr-comment.yml, which is not run here);
every `make`, `dvc` and `ml` step runs. Order matters: main registers the version that the
release then ships, and the refused and the broken releases must leave it live.
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


SERVE_TOKEN = "e2e-serve-token"


def served_model(repo: ActRepo) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{repo.serve_port}/model",
        headers={"Authorization": f"Bearer {SERVE_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def production_secrets(repo: ActRepo) -> None:
    """The release job's secrets, as the `production` environment holds them: act reads
    ./.secrets by default. Serving fails closed, so without the token nothing deploys."""
    (repo.root / ".secrets").write_text(f"ML_SERVE_TOKEN={SERVE_TOKEN}\n")


def main_registers(repo: ActRepo, cluster) -> object:
    """Run main.yml for HEAD, as the merge to main does: main trains (a PR's run cache is in
    the PR-only remote) and registers the version a release tag on HEAD ships."""
    sha = git(repo.root, "rev-parse", "HEAD")
    event = {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "owner/ml"}}
    result = run_act(repo, cluster, "push", "main.yml", event)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    versions = registry(repo).search_model_versions(f"name='{MODEL}'")
    mine = [v for v in versions if v.tags.get("git_sha") == sha]
    assert mine and mine[-1].tags["gate.status"] == "passed", [v.tags for v in versions]
    return max(mine, key=lambda v: int(v.version))


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

    # The pr tier (pr.yml's ML_TIER) registers nothing: the PR's model is evidence for its
    # comment, judged by the gate from its run, never a release candidate.
    assert re.search(r"pr tier: \S+ \(run \w+\) is the challenger, unregistered", log)
    assert not registry(act_repo).search_model_versions(f"name='{MODEL}'")
    assert re.search(r"PR comment: \S*reports/pr_comment\.md \(\d+ characters\)", log)


def test_release_workflow_promotes_deploys_and_smoke_tests(act_repo, cluster):
    production_secrets(act_repo)
    version = main_registers(act_repo, cluster).version
    result = run_act(act_repo, cluster, "push", "release.yml", tag_event(act_repo, "v0.1.0"))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert f"released v0.1.0: champion v{version}" in log
    assert "auth: a request without the token got 401" in log
    champion = registry(act_repo).get_model_version_by_alias(MODEL, "champion")
    assert champion.version == version
    assert served_model(act_repo)["version"] == version


def test_a_tag_on_a_branch_commit_is_refused(act_repo, cluster):
    """A tag on a commit main never merged, with a version registered for it as main would:
    the release job refuses before anything moves."""
    production_secrets(act_repo)
    client = registry(act_repo)
    good = client.get_model_version_by_alias(MODEL, "champion")
    git(act_repo.root, "checkout", "-q", "-b", "unmerged")
    git(act_repo.root, "commit", "-q", "--allow-empty", "-m", "never merged")
    sha = git(act_repo.root, "rev-parse", "HEAD")
    try:
        tags = {**good.tags, "git_sha": sha, "gate.champion_version": good.version}
        client.create_model_version(
            MODEL, good.source, run_id=good.run_id, tags=tags,
            model_id=good.source.removeprefix("models:/"),
        )  # fmt: skip
        result = run_act(act_repo, cluster, "push", "release.yml", tag_event(act_repo, "v0.1.1"))
    finally:
        git(act_repo.root, "checkout", "-q", "main")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"commit {sha[:12]} is not on main (main)" in log, log[-6000:]
    assert client.get_model_version_by_alias(MODEL, "champion").version == good.version
    assert served_model(act_repo)["version"] == good.version


def test_broken_release_rolls_back_alias_and_deployment(act_repo, cluster, tmp_path):
    """A new commit on main whose registered model is corrupt (no weights): the deploy fails,
    the champion alias and the live deployment stay on the previous version, and the job
    fails."""
    production_secrets(act_repo)
    client = registry(act_repo)
    good = client.get_model_version_by_alias(MODEL, "champion")
    git(act_repo.root, "commit", "-q", "--allow-empty", "-m", "a release with a broken model")
    sha = git(act_repo.root, "rev-parse", "HEAD")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")  # and no weights
    # A run of main's own experiment from this commit, as main's training would make it.
    run = client.create_run(
        client.get_run(good.run_id).info.experiment_id, run_name="broken",
        tags={"git_sha": sha},
    )  # fmt: skip
    client.log_artifacts(run.info.run_id, str(broken), "model")
    client.set_terminated(run.info.run_id)
    tags = {"git_sha": sha, "gate.status": "passed", "gate.champion_version": good.version}
    version = client.create_model_version(
        MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    result = run_act(act_repo, cluster, "push", "release.yml", tag_event(act_repo, "v0.2.0"))
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"release v0.2.0 of version {version.version} failed" in log
    assert f"rolled back to version {good.version}, which is live" in log
    assert client.get_model_version_by_alias(MODEL, "champion").version == good.version
    assert served_model(act_repo)["version"] == good.version


def test_act_repo_is_not_the_checkout(act_repo):
    # The workflows ran in a copy: nothing they wrote lands in the developer's tree.
    assert Path(act_repo.root).resolve() != Path(__file__).resolve().parents[2]
