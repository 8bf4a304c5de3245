"""`ml retrain`: end to end on a tiny real config (a registered challenger and a gate decision;
a second run on unchanged data creates no new version), the newly-labelled-data merge, and the
PR / auto-promotion decision, and the PR `ml retrain` opens: a branch pushed to a real bare git
remote, the data version on a real DVC remote, and GitHub's REST API served by a recorded
stand-in on loopback (GitHub itself cannot run here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ml.config import load_settings
from ml.io import sha256_file
from ml.monitor.retrain import (
    RetrainError,
    append_labelled,
    choose_action,
    drift_summary_for,
    render_pr_body,
)
from tests.conftest import BIN_DIR, REPO_ROOT, cli_env, run_ml
from tests.e2e.harness import tiny_params
from tests.monitor.github_standin import github_standin

COLUMNS = ["id", "title", "description", "tag"]


def tiny_project(root: Path, shared_data: Path, per_class: int = 12) -> Path:
    """A project whose data source is a folder of a few dozen real rows (ingest copies it)."""
    source = root / "source"
    source.mkdir(parents=True)
    full = pd.read_csv(shared_data / "madewithml" / "dataset.csv")
    holdout = pd.read_csv(shared_data / "madewithml" / "holdout.csv")
    full.groupby("tag", group_keys=False).head(per_class)[COLUMNS].to_csv(
        source / "dataset.csv", index=False
    )
    holdout.groupby("tag", group_keys=False).head(4)[COLUMNS].to_csv(
        source / "holdout.csv", index=False
    )
    params = {
        "data": {"source": str(source), "sha256": {}, "labels": []},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "retrain-test"},
        "model": {"max_length": 16, "dir": "models/model"},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 1, "early_stopping_patience": 0},
        "evaluate": {"behavioural_file": str(REPO_ROOT / "ml/evaluate/behavioural.yaml")},
        "monitor": {"auto_promote": False},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
def test_retrain_end_to_end_is_idempotent(tmp_path: Path, shared_data: Path) -> None:
    root = tiny_project(tmp_path / "project", shared_data)
    env = cli_env(
        GITHUB_OUTPUT=str(root / "out1"), RAY_AUTH_MODE="disabled", GH_TOKEN="", GITHUB_TOKEN=""
    )
    first = run_ml(["retrain"], cwd=root, env=env, timeout=900)
    assert first.returncode in (0, 5), first.stdout + first.stderr  # 5: the gate said no
    out1 = dict(line.split("=", 1) for line in (root / "out1").read_text().splitlines())
    assert out1["created"] == "true" and out1["gate"] in ("passed", "failed")
    assert out1["action"] in ("pr_body_written", "none")  # no gh/token here: never a real PR
    gate = json.loads((root / "reports/gate.json").read_text())
    assert gate["challenger"]["version"] == out1["version"]
    assert (root / "reports/retrain_pr.md").read_text().startswith("## Retrained model")

    env["GITHUB_OUTPUT"] = str(root / "out2")
    second = run_ml(["retrain"], cwd=root, env=env, timeout=900)
    assert second.returncode == first.returncode, second.stdout + second.stderr
    out2 = dict(line.split("=", 1) for line in (root / "out2").read_text().splitlines())
    assert out2["created"] == "false" and out2["version"] == out1["version"]
    assert "not retrained" in second.stdout
    assert "train" not in [s.strip("- ").strip() for s in second.stdout.splitlines()]

    shown = run_ml(["registry", "show", "--json"], cwd=root, env=env)
    versions = json.loads(shown.stdout)["versions"]
    assert [v["version"] for v in versions] == [out1["version"]]  # no second version
    assert versions[0]["gate"] == out1["gate"]


def test_labelled_rows_are_appended_once(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    root = tiny_project(tmp_path / "project", shared_data)
    monkeypatch.chdir(root)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "dataset.csv").write_text((root / "source" / "dataset.csv").read_text())
    base_rows = len(pd.read_csv(raw / "dataset.csv"))
    labelled = root / "labelled"
    labelled.mkdir()
    extra = pd.read_csv(shared_data / "madewithml" / "dataset.csv").tail(5)[COLUMNS]
    extra.to_csv(labelled / "batch-1.csv", index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["monitor"]["labelled_source"] = "labelled"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    settings = load_settings(root / "params.yaml")

    assert append_labelled(settings) == 5
    assert append_labelled(settings) == 0  # same ids: nothing added twice
    merged = pd.read_csv(raw / "dataset.csv")
    assert len(merged) == base_rows + 5 and merged["id"].is_unique
    # ingest's manifest (in data/raw, versioned by dvc.lock) says what was merged
    labelled_entry = json.loads((raw / "manifest.json").read_text())["labelled"]
    assert labelled_entry["rows_added"] == 5 and labelled_entry["merged_file"] == "dataset.csv"
    assert labelled_entry["merged_sha256"] == sha256_file(raw / "dataset.csv")
    assert [Path(f["origin"]).name for f in labelled_entry["files"]] == ["batch-1.csv"]

    (labelled / "bad.csv").write_text("id,title\n1,x\n")
    with pytest.raises(Exception, match="lacks column"):
        append_labelled(settings)


@pytest.mark.parametrize(
    ("gate_passed", "auto_promote", "can_open_pr", "expected"),
    [
        (True, False, True, "pr_opened"),
        (True, False, False, "pr_body_written"),
        (True, True, True, "promoted"),
        (True, True, False, "promoted"),
        (False, True, True, "none"),  # never promote past a failed gate
        (False, False, True, "none"),
        (None, True, True, "none"),
    ],
)
def test_pr_or_promotion_decision(gate_passed, auto_promote, can_open_pr, expected) -> None:
    assert choose_action(gate_passed, auto_promote, can_open_pr) == expected


def test_pr_body_carries_the_evidence(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    root = tiny_project(tmp_path / "project", shared_data)
    monkeypatch.chdir(root)
    settings = load_settings(root / "params.yaml")
    gate = {
        "passed": True,
        "reasons": ["weighted F1 0.9500 vs champion 0.9400"],
        "challenger": {"overall": {"accuracy": 0.95, "f1_weighted": 0.95, "f1_macro": 0.94}},
        "champion": {"overall": {"accuracy": 0.94, "f1_weighted": 0.94, "f1_macro": 0.93}},
    }
    drift = {"verdict": "drift", "reasons": ["embedding: mmd 0.0120 > 0.006"]}
    body = render_pr_body(settings, "7", True, gate, drift, 12, "a" * 64, "b" * 64)
    assert "v7" in body and "Gate: passed" in body and "embedding: mmd 0.0120" in body
    assert "| f1_weighted | 0.9500 | 0.9400 |" in body and "labelled rows" in body
    assert 'ml registry promote 7 --reason "..."' in body


def dvc_project(base: Path, shared_data: Path) -> Path:
    """A git + DVC repository as the retrain job checks it out: this repo's dvc.yaml and `ml`
    code (the stages' declared deps), tiny params, main pushed to a bare `origin`, a local DVC
    remote standing for the trusted one, and a folder of newly labelled rows."""
    root = tiny_project(base / "checkout", shared_data)
    shutil.copytree(REPO_ROOT / "ml", root / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())  # every key dvc.yaml names
    params = tiny_params(params) | {"data": params["data"] | {"source": str(root / "source")}}
    params["data"]["sha256"] = {}
    params["train"].update(num_workers=1, cpus_per_worker=1, batch_size=8)
    # A one-epoch model is a smoke test: no floors, so the gate passes and the PR is opened.
    params["gate"]["floors"] = {"accuracy": 0.0, "f1_weighted": 0.0, "f1_macro": 0.0}
    params["mlflow"] = {"tracking_uri": "sqlite:///mlflow.db", "experiment": "retrain-test"}
    params["evaluate"]["behavioural_file"] = str(REPO_ROOT / "ml/evaluate/behavioural.yaml")
    params["monitor"]["labelled_source"] = "labelled"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "labelled").mkdir()
    extra = pd.read_csv(shared_data / "madewithml" / "dataset.csv").tail(5)[COLUMNS]
    extra.to_csv(root / "labelled" / "batch-1.csv", index=False)
    (root / ".gitignore").write_text(
        "/data\n/models\n/reports\n/mlflow.db\n/mlruns\n/ray_results\n/logs\n"
    )
    sh_git(root, "init", "-q", "-b", "main")
    for args in (["init", "-q"], ["config", "core.analytics", "false"],
                 ["remote", "add", "-d", "trusted", str(base / "dvc-trusted")]):  # fmt: skip
        subprocess.run([str(BIN_DIR / "dvc"), *args], cwd=root, check=True)
    sh_git(root, "add", ".")
    sh_git(root, "commit", "-qm", "main")
    sh_git(base, "init", "-q", "--bare", "-b", "main", "origin.git")
    sh_git(root, "remote", "add", "origin", str(base / "origin.git"))
    sh_git(root, "push", "-q", "origin", "main")
    return root


def sh_git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def test_drift_verdict_from_another_job(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    """On its own runner the retrain job has no summary.json: the drift job's `decision` output
    ($ML_RETRAIN_DRIFT) says why; a local summary wins; anything but a JSON object is refused."""
    root = tiny_project(tmp_path / "project", shared_data)
    monkeypatch.chdir(root)
    monkeypatch.delenv("ML_RETRAIN_DRIFT", raising=False)
    settings = load_settings(root / "params.yaml")
    assert drift_summary_for(settings) is None
    decision = {"verdict": "drift", "reasons": ["label: jensenshannon 0.5 > 0.12"]}
    monkeypatch.setenv("ML_RETRAIN_DRIFT", json.dumps(decision))
    assert drift_summary_for(settings) == decision
    for bad in ("{not json", '["drift"]'):
        monkeypatch.setenv("ML_RETRAIN_DRIFT", bad)
        with pytest.raises(RetrainError, match="ML_RETRAIN_DRIFT"):
            drift_summary_for(settings)
    local = settings.path(settings.monitor.report_dir) / "summary.json"
    local.parent.mkdir(parents=True)
    local.write_text(json.dumps({"verdict": "no_drift", "reasons": []}))
    assert drift_summary_for(settings)["verdict"] == "no_drift"


@pytest.mark.slow
def test_retrain_pushes_the_data_version_and_opens_one_pr(
    tmp_path: Path, shared_data: Path
) -> None:
    """`ml retrain` after a drift verdict, on a checkout whose origin is a real bare repository
    and with a real DVC remote: the pushed branch's commit holds the new data version, exactly
    one PR is opened with the drift and gate report, a second run opens none, and a fresh clone
    of the branch restores the retrained model with `dvc repro --pull` instead of training.
    GitHub's REST API cannot run here: a recorded stand-in on 127.0.0.1 serves it
    (github_standin.py). The drift summary is written as `ml monitor drift` writes it."""
    root = dvc_project(tmp_path, shared_data)
    drift = {"verdict": "drift", "drift": True, "reasons": ["embedding: mmd 0.0120 > 0.006"]}
    (root / "reports/drift").mkdir(parents=True)
    (root / "reports/drift/summary.json").write_text(json.dumps(drift))
    head = sh_git(root, "rev-parse", "HEAD")
    with github_standin("owner/ml") as github:
        env = cli_env(
            RAY_AUTH_MODE="disabled", GITHUB_OUTPUT=str(tmp_path / "out1"),
            ML_RETRAIN_GITHUB_TOKEN="tok-secret", GITHUB_REPOSITORY="owner/ml",
            GITHUB_API_URL=github.url, GITHUB_REF_NAME="main",
        )  # fmt: skip
        first = run_ml(["retrain"], cwd=root, env=env, timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        env["GITHUB_OUTPUT"] = str(tmp_path / "out2")
        second = run_ml(["retrain"], cwd=root, env=env, timeout=900)
        assert second.returncode == 0, second.stdout + second.stderr

    out1 = dict(line.split("=", 1) for line in (tmp_path / "out1").read_text().splitlines())
    out2 = dict(line.split("=", 1) for line in (tmp_path / "out2").read_text().splitlines())
    branch = out1["branch"]
    assert out1["action"] == "pr_opened" and out1["pr_url"].endswith("/pull/1")
    assert out2["action"] == "pr_exists" and out2["pr_url"] == out1["pr_url"]
    assert out2["created"] == "false" and "already open" in second.stdout
    (post,) = github.posts()
    assert post.body["head"] == branch and post.body["base"] == "main"
    assert post.body["title"].startswith("Retrain tag-classifier: v1")
    assert "embedding: mmd 0.0120" in post.body["body"] and "Gate: passed" in post.body["body"]
    assert "tok-secret" not in first.stdout + first.stderr + (root / ".git/config").read_text()

    bare = tmp_path / "origin.git"
    assert sh_git(bare, "rev-parse", f"{branch}^") == head
    assert sh_git(bare, "diff", "--name-only", head, branch).split() == ["dvc.lock"]
    lock = yaml.safe_load(sh_git(bare, "show", f"{branch}:dvc.lock"))
    assert {"ingest", "validate", "split", "train", "evaluate"} <= set(lock["stages"])

    clone = tmp_path / "clone"
    sh_git(tmp_path, "clone", "-q", "-b", branch, str(bare), str(clone))
    restored = subprocess.run(
        [str(BIN_DIR / "dvc"), "repro", "--pull", "evaluate"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "Running stage" not in restored.stdout, restored.stdout
    manifest = json.loads((clone / "data/raw/manifest.json").read_text())
    assert manifest["labelled"]["rows_added"] == 5  # the new data, labelled rows included
    assert (clone / "models/model/labels.json").is_file()
