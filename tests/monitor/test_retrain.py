"""`ml retrain`: end to end on a tiny real two-model repository, from drift on one model's
prediction log to that model's PR (a registered challenger and a gate decision, a branch pushed
to a real bare git remote, the data version on a real DVC remote, GitHub's REST API served by a
recorded stand-in on loopback: GitHub itself cannot run here); the other model is not touched,
and a second run on unchanged data creates no new version and no second PR. Also the
newly-labelled-data merge and the PR / auto-promotion decision."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ml.config import load_settings
from ml.io import sha256_file
from ml.monitor.drift import EXIT_DRIFT
from ml.monitor.retrain import (
    RetrainError,
    append_labelled,
    choose_action,
    drift_summary_for,
    render_pr_body,
)
from tests.conftest import BIN_DIR, REPO_ROOT, cli_env, run_ml
from tests.e2e.harness import tiny_params
from tests.monitor.conftest import window_records, write_log
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


DRIFTED = "tags-copy"  # the model whose traffic moved; madewithml's did not
UNSERVED = "unserved"  # declared, never deployed: no log folder at all


def dvc_project(base: Path, shared_data: Path) -> Path:
    """A git + DVC repository as the retrain job checks it out: this repo's dvc.yaml and `ml`
    code (the stages' declared deps), three declared text models on tiny params (madewithml,
    tags-copy and unserved, each its own registered model), main pushed to a bare `origin`, a
    local DVC remote standing for the trusted one, and a folder of newly labelled rows."""
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
    params["monitor"].update(labelled_source="labelled", min_window=100, embedding_sample=100)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "configs").mkdir()
    declared = {"madewithml": {"params": "params.yaml"}}
    for name in (DRIFTED, UNSERVED):
        params["mlflow"]["registered_model"] = name
        (root / f"configs/{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        declared[name] = {"params": f"configs/{name}.yaml"}
    (root / "models.yaml").write_text(yaml.safe_dump({"default": "madewithml", "models": declared}))
    (root / "labelled").mkdir()
    extra = pd.read_csv(shared_data / "madewithml" / "dataset.csv").tail(5)[COLUMNS]
    extra.to_csv(root / "labelled" / "batch-1.csv", index=False)
    (root / ".gitignore").write_text(
        "/data\n/models\n/reports\n/mlflow.db\n/mlruns\n/ray_results\n/logs\n/log\n"
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


def production_logs(root: Path, texts: dict, embedder) -> None:
    """Each model's drift reference (data/NAME/splits: real rows, as many as test_drift.py
    uses, so a window of the same distribution is reliably "no drift") and its application log
    (log/NAME): madewithml's traffic is like its training data, tags-copy's is half medical
    abstracts. The reference embeddings are warmed in-process with the session's encoder."""
    from ml.config import load_settings
    from ml.monitor.reference import load_reference

    for name, shift in (("madewithml", 0.0), (DRIFTED, 0.5)):
        splits = root / "data" / name / "splits"
        splits.mkdir(parents=True)
        texts["train"][COLUMNS].to_csv(splits / "train.csv", index=False)
        texts["val"][COLUMNS].to_csv(splits / "val.csv", index=False)
        write_log(root / "log" / name, window_records(texts, 300, shift, seed=31))
        file = "params.yaml" if name == "madewithml" else f"configs/{name}.yaml"
        with contextlib.chdir(root):
            load_reference(load_settings(root / file, model=name), embed=embedder)


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


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
    # `ml monitor drift --all`'s `decisions`: each model's verdict; a model reads its own.
    decisions = {"a": {"verdict": "no_drift", "reasons": []}, "b": decision}
    monkeypatch.setenv("ML_RETRAIN_DRIFT", json.dumps(decisions))
    assert drift_summary_for(settings.model_copy(update={"model_name": "b"})) == decision
    assert drift_summary_for(settings.model_copy(update={"model_name": "c"})) is None
    local = settings.path(settings.monitor.report_dir) / "summary.json"
    local.parent.mkdir(parents=True)
    local.write_text(json.dumps({"verdict": "no_drift", "reasons": []}))
    assert drift_summary_for(settings)["verdict"] == "no_drift"


@pytest.mark.slow
def test_drift_on_one_model_retrains_that_model_only_and_opens_its_pr(
    tmp_path: Path, shared_data: Path, texts, embedder
) -> None:
    """Three declared models, one drifted, one never deployed: `ml monitor drift --all` checks
    each on its own log and names only the drifted one; `ml retrain --models` with that list
    (what retrain.yml passes) trains, registers and gates it on a checkout whose origin is a
    real bare repository and with a real DVC remote: the pushed branch's commit holds its new
    data version (its dvc.lock entries only), exactly one PR is opened with its drift and gate
    report, a second run opens none and trains nothing, a fresh clone of the branch restores
    the retrained model with `dvc repro --pull` instead of training, and the models that did
    not drift have no version, no model and no PR body."""
    root = dvc_project(tmp_path, shared_data)
    production_logs(root, texts, embedder)
    head = sh_git(root, "rev-parse", "HEAD")
    drift = run_ml(
        ["monitor", "drift", "--all", "--log-dir", "log"],
        cwd=root, env=cli_env(GITHUB_OUTPUT=str(tmp_path / "drift"), ML_RETRAIN_FORCE=""),
    )  # fmt: skip
    assert drift.returncode == EXIT_DRIFT, drift.stdout + drift.stderr  # the worst model's
    found = outputs(tmp_path / "drift")
    assert json.loads(found["drifted"]) == json.loads(found["retrain"]) == [DRIFTED], drift.stdout
    assert json.loads(found["checked"]) == ["madewithml", DRIFTED, UNSERVED]
    assert "to retrain: tags-copy" in drift.stdout
    verdicts = ("no_drift", "drift", "not_enough_data")  # unserved: never "no drift"
    for name, verdict in zip(json.loads(found["checked"]), verdicts, strict=True):
        assert json.loads(found["decisions"])[name]["verdict"] == verdict, drift.stdout
        summary = json.loads((root / "reports" / name / "drift" / "summary.json").read_text())
        assert summary["verdict"] == verdict, name
        assert summary["window"]["source"] == str(root / "log" / name)  # its application's log
    assert (root / f"reports/{DRIFTED}/drift/report.html").is_file()
    assert not (root / "reports/drift").exists()  # nothing in the one-model layout
    # --model picks one model's params; --all checks each with its own: both is a usage error.
    both = run_ml(["--model", "madewithml", "monitor", "drift", "--all"], cwd=root)
    assert both.returncode == 2 and "drop --model" in both.stderr

    with github_standin("owner/ml") as github:
        env = cli_env(
            RAY_AUTH_MODE="disabled", GITHUB_OUTPUT=str(tmp_path / "out1"),
            ML_RETRAIN_GITHUB_TOKEN="tok-secret", GITHUB_REPOSITORY="owner/ml",
            GITHUB_API_URL=github.url, GITHUB_REF_NAME="main",
        )  # fmt: skip
        first = run_ml(["retrain", "--models", found["retrain"]], cwd=root, env=env, timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        env["GITHUB_OUTPUT"] = str(tmp_path / "out2")
        second = run_ml(["retrain", "--models", DRIFTED], cwd=root, env=env, timeout=900)
        assert second.returncode == 0, second.stdout + second.stderr

    out1 = json.loads(outputs(tmp_path / "out1")["models"])
    out2 = json.loads(outputs(tmp_path / "out2")["models"])
    assert list(out1) == list(out2) == [DRIFTED]
    run1, run2 = out1[DRIFTED], out2[DRIFTED]
    branch = run1["branch"]
    assert branch.startswith(f"retrain/{DRIFTED}-") and run1["created"] is True
    assert run1["action"] == "pr_opened" and run1["pr_url"].endswith("/pull/1")
    assert run2["action"] == "pr_exists" and run2["pr_url"] == run1["pr_url"]
    assert run2["created"] is False and run2["version"] == run1["version"]
    assert "already open" in second.stdout and "not retrained" in second.stdout
    assert "train" not in [s.strip("- ").strip() for s in second.stdout.splitlines()]
    (post,) = github.posts()
    assert post.body["head"] == branch and post.body["base"] == "main"
    assert post.body["title"].startswith(f"Retrain {DRIFTED}: v1")
    assert (
        "drift check verdict `drift`" in post.body["body"] and "Gate: passed" in post.body["body"]
    )
    assert "tok-secret" not in first.stdout + first.stderr + (root / ".git/config").read_text()

    reports = root / "reports" / DRIFTED
    gate = json.loads((reports / "gate.json").read_text())
    assert gate["challenger"]["version"] == run1["version"]
    assert (reports / "retrain_pr.md").read_text().startswith(f"## Retrained model: {DRIFTED}")
    shown = run_ml(["--model", DRIFTED, "registry", "show", "--json"], cwd=root, env=env)
    versions = json.loads(shown.stdout)["versions"]
    assert [v["version"] for v in versions] == [run1["version"]]  # no second version
    assert versions[0]["gate"] == "passed"
    # The model that did not drift: never trained, registered or proposed.
    untouched = run_ml(["--model", "madewithml", "registry", "show", "--json"], cwd=root, env=env)
    assert untouched.returncode != 0 and "no registered model" in untouched.stderr
    assert not (root / "models/madewithml").exists()
    assert not (root / "reports/madewithml/retrain_pr.md").exists()

    bare = tmp_path / "origin.git"
    assert sh_git(bare, "rev-parse", f"{branch}^") == head
    assert sh_git(bare, "diff", "--name-only", head, branch).split() == ["dvc.lock"]
    lock = yaml.safe_load(sh_git(bare, "show", f"{branch}:dvc.lock"))
    stages = {
        f"{stage}@{DRIFTED}" for stage in ("ingest", "validate", "split", "train", "evaluate")
    }
    assert set(lock["stages"]) == stages  # the other model's entries are not in this PR

    clone = tmp_path / "clone"
    sh_git(tmp_path, "clone", "-q", "-b", branch, str(bare), str(clone))
    restored = subprocess.run(
        [str(BIN_DIR / "dvc"), "repro", "--pull", f"evaluate@{DRIFTED}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "Running stage" not in restored.stdout, restored.stdout
    manifest = json.loads((clone / f"data/{DRIFTED}/raw/manifest.json").read_text())
    assert manifest["labelled"]["rows_added"] == 5  # the new data, labelled rows included
    assert (clone / f"models/{DRIFTED}/labels.json").is_file()
