"""The PR and main workflows, run by act on this machine against a real two-node Ray cluster.

Only steps that need github.com are skipped under act (remote actions guarded by
`if: !env.ACT`, checkout, and the comment API call in pr-comment.yml, which is not run here);
the artifact actions run as stand-ins (harness.py); every `make`, `dvc` and `ml` step runs.
Each PR is a branch off the act repository's main (harness.pull_request): the PR workflow
trains the models it affects. The release runs are tests/e2e/test_release.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ml.report.sticky import MARKER
from tests.e2e.harness import (
    ActRepo,
    git,
    pr_event,
    pull_request,
    run_act,
    yaml_edit,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]
IMAGE_MODEL, IMAGE_PARAMS = "fashion-mnist", "configs/fashion-mnist.yaml"
SHARED_CODE = "ml/train/loop.py"


def add_comment(text: str) -> str:
    return text + "\n# a change that changes nothing\n"


def registry(repo: ActRepo):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=repo.mlflow_uri)


def _matrix(log: str) -> list[str]:
    """The model names the affected job handed to the matrix (its `models` output)."""
    found = re.findall(r"\[pr/affected\s*\].*::set-output:: models=(\[.*\])", log)
    assert len(found) == 1, log[-6000:]
    return [row["name"] for row in json.loads(found[0])]


def _legs(log: str, job: str) -> set[str]:
    """The act job names of one matrix job's legs that ran (train, or train-1, train-2...)."""
    return set(re.findall(rf"\[pr/({job}(?:-\d+)?)\s*\] ⭐ Run Set up job", log))


def _succeeded(log: str, *jobs: str) -> None:
    for job in jobs:
        assert re.search(rf"\[pr/{job}\s*\] 🏁  Job succeeded", log), f"job {job} failed"


def wider_dense_layer(params: dict) -> dict:
    params["image"]["hidden"] = 48
    return params


def test_pr_changing_the_image_params_trains_only_that_model(act_repo, cluster):
    """A PR that edits only configs/fashion-mnist.yaml: the matrix holds fashion-mnist alone,
    its leg trains (default scaling, 1-CPU nodes) and passes the gate, and the one comment has
    its summary row and section and names the two models it left alone."""
    edits = {IMAGE_PARAMS: yaml_edit(wider_dense_layer)}
    with pull_request(act_repo, "fashion-mnist: a wider dense layer", edits):
        result = run_act(act_repo, cluster, "pull_request", "pr.yml", pr_event(act_repo))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert _matrix(log) == [IMAGE_MODEL]
    assert len(_legs(log, "validate")) == 1 and len(_legs(log, "train")) == 1, log[-6000:]
    _succeeded(log, "affected", "validate", "train", "report")
    assert "configs/fashion-mnist.yaml: its params file" in log
    for step in (
        'ml --model "$MODEL" data validate',
        "Reproduce the pipeline for the model (unchanged stages restored from the run cache)",
        "Share stage results with later runs",
        "Upload the model's reports for the report job",
        "Enforce the model's gate verdict",
        "Download every model's reports",
        "One comment for every model; fail if any affected model's gate failed",
        "Upload the comment for pr-comment.yml",
    ):
        assert f"Success - Main {step}" in log, step
    assert "Failure - " not in log
    assert "remote action ran under act" not in log
    # Only the image model's stages ran: no other model's data was read.
    assert "Running stage 'train@fashion-mnist'" in log
    assert not re.search(r"Running stage '\w+@(madewithml|medical-abstracts)'", log)

    # The pr tier (pr.yml's ML_TIER) registers nothing: the PR's model is evidence for its
    # comment, judged by the gate from its run, never a release candidate.
    assert re.search(r"pr tier: \S+ \(run \w+\) is the challenger, unregistered", log)
    assert not registry(act_repo).search_model_versions()
    assert "gate passed for every model" in log

    # What the report job handed to pr-comment.yml, and what the leg handed to the report job.
    artifacts = act_repo.artifacts
    assert sorted(p.name for p in artifacts.iterdir()) == [IMAGE_MODEL, "pr-report"]
    gate = json.loads((artifacts / IMAGE_MODEL / "gate.json").read_text())
    assert gate["passed"], gate
    comment = (artifacts / "pr-report" / "pr_comment.md").read_text()
    assert comment.startswith(MARKER)
    assert re.search(rf"^\| `{IMAGE_MODEL}` \| image-classification \| ✅ passed \|", comment, re.M)
    assert re.search(rf"<summary>.*{IMAGE_MODEL}.*</summary>", comment), comment[:3000]
    assert "Not affected by this PR (not trained): `madewithml`, `medical-abstracts`" in comment


def test_pr_changing_shared_training_code_affects_every_model(act_repo, cluster):
    """Shared code (ml/train/) affects all three models. Only the affected job runs here:
    training all three under act would cost several minutes of CI for what the image PR above
    already shows a leg does."""
    with pull_request(act_repo, "train: a comment in the loop", {SHARED_CODE: add_comment}):
        result = run_act(act_repo, cluster, "pull_request", "pr.yml", pr_event(act_repo),
                         extra=["-j", "affected"])  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert _matrix(log) == ["madewithml", "medical-abstracts", IMAGE_MODEL]
    assert f"{SHARED_CODE}: shared code" in log
    assert not _legs(log, "train")


def test_pr_changing_only_docs_trains_nothing_and_the_check_passes(act_repo, cluster):
    """An empty matrix: the model jobs are skipped, the report job (the required check) still
    runs and its comment says no model is affected."""
    with pull_request(act_repo, "docs: a line", {"docs/models.md": add_comment}):
        result = run_act(act_repo, cluster, "pull_request", "pr.yml", pr_event(act_repo))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert _matrix(log) == []
    assert not _legs(log, "validate") and not _legs(log, "train")
    _succeeded(log, "affected", "report")
    assert "Success - Main Download every model's reports" not in log
    comment = (act_repo.artifacts / "pr-report" / "pr_comment.md").read_text()
    assert "No model is affected by this PR" in comment


def test_main_runs_every_declared_model(act_repo, cluster):
    """main.yml's matrix is every model, affected or not (only its `models` job runs here: the
    PR run above shows what a leg does, and test_release.py registers what main would)."""
    sha = git(act_repo.root, "rev-parse", "HEAD")
    event = {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "owner/ml"}}
    result = run_act(act_repo, cluster, "push", "main.yml", event, extra=["-j", "models"])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    found = re.findall(r"\[main/models\s*\].*::set-output:: models=(\[.*\])", log)
    assert [row["name"] for row in json.loads(found[0])] == [
        "madewithml", "medical-abstracts", IMAGE_MODEL
    ], log[-4000:]  # fmt: skip


def test_act_repo_is_not_the_checkout(act_repo):
    # The workflows ran in a copy: nothing they wrote lands in the developer's tree.
    assert Path(act_repo.root).resolve() != Path(__file__).resolve().parents[2]
