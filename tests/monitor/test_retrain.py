"""`ml retrain`: end to end on a tiny real config (a registered challenger and a gate decision;
a second run on unchanged data creates no new version), the newly-labelled-data merge, and the
PR / auto-promotion decision. The GitHub call itself (`gh pr create`) is NOT exercised: tests
cannot reach GitHub; the decision to call it and the PR body are tested instead."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ml.config import load_settings
from ml.monitor.retrain import append_labelled, choose_action, render_pr_body
from tests.conftest import REPO_ROOT, cli_env, run_ml

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
