"""`ml monitor drift --all`: every declared model checked on its own application's prediction
log (LOG_DIR/NAME, as ml/serve/multi.py logs it), each summary in reports/NAME/drift/, and only
the drifted models named for the retrain job. Real data, real Evidently, the real encoder for
the window (the reference embeddings are warmed in-process with the same encoder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml.monitor.drift import EXIT_DRIFT, EXIT_ERROR, EXIT_NOT_ENOUGH_DATA
from ml.monitor.fleet import (
    FleetDrift,
    FleetError,
    ModelCheck,
    declared,
    model_settings,
    parse_model_names,
    worst_exit_code,
)
from ml.monitor.reference import load_reference
from tests.conftest import REPO_ROOT, cli_env, run_ml
from tests.monitor.conftest import window_records, write_log

COLUMNS = ["id", "title", "description", "tag"]
# madewithml's traffic looks like its training data; tags-copy's is half medical abstracts;
# unserved was never deployed (no log folder at all).
MODELS = ("madewithml", "tags-copy", "unserved")


def test_model_names_from_a_workflow_output_or_commas() -> None:
    assert parse_model_names('["a","b"]') == ["a", "b"]
    assert parse_model_names(" a, b ,a,") == ["a", "b"]  # once each, in order
    assert parse_model_names("[]") == []
    assert parse_model_names("") is None and parse_model_names(None) is None
    for bad in ('["a",', '{"a": 1}', "[1]"):
        with pytest.raises(FleetError, match="model list"):
            parse_model_names(bad)


def test_only_drifted_models_are_retrained_unless_forced() -> None:
    checks = [
        ModelCheck("a", "no_drift", ["fine"], 0, "log/a"),
        ModelCheck("b", "drift", ["embedding: mmd 0.1 > 0.006"], EXIT_DRIFT, "log/b"),
        ModelCheck("c", "not_enough_data", ["0 valid"], EXIT_NOT_ENOUGH_DATA, "log/c"),
    ]
    fleet = FleetDrift(checks)
    assert fleet.drifted == fleet.retrain == ["b"] and fleet.exit_code == EXIT_DRIFT
    out = dict(line.split("=", 1) for line in fleet.github_output_lines())
    assert json.loads(out["retrain"]) == ["b"] and out["retrain_any"] == "true"
    assert json.loads(out["decisions"])["b"]["reasons"] == ["embedding: mmd 0.1 > 0.006"]
    assert FleetDrift(checks, force=True).retrain == ["a", "b", "c"]
    assert FleetDrift(checks[:1]).github_output_lines()[2:4] == ["retrain=[]", "retrain_any=false"]
    # An error outranks drift, drift outranks too little data.
    assert worst_exit_code([0, EXIT_NOT_ENOUGH_DATA, EXIT_DRIFT]) == EXIT_DRIFT
    assert worst_exit_code([EXIT_DRIFT, EXIT_ERROR]) == EXIT_ERROR
    assert worst_exit_code([]) == 0


def fleet_project(root: Path, texts: dict[str, Any]) -> Path:
    """Three declared text models, each with its splits where `ml --model NAME` keeps them."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["monitor"] = {
        **params.get("monitor", {}),
        "embedding_sample": 100,
        "min_window": 100,
        "window_last_n": 1000,
    }
    (root / "configs").mkdir(parents=True)
    entries = {}
    for name in MODELS:
        own = {**params, "mlflow": {**params["mlflow"], "registered_model": name}}
        file = "params.yaml" if name == "madewithml" else f"configs/{name}.yaml"
        (root / file).write_text(yaml.safe_dump(own))
        entries[name] = {"params": file}
        splits = root / "data" / name / "splits"
        splits.mkdir(parents=True)
        texts["train"][COLUMNS].to_csv(splits / "train.csv", index=False)
        texts["val"][COLUMNS].to_csv(splits / "val.csv", index=False)
    (root / "models.yaml").write_text(
        yaml.safe_dump({"default": "madewithml", "models": entries}, sort_keys=False)
    )
    return root


@pytest.mark.slow
def test_cli_checks_every_model_on_its_own_log(tmp_path: Path, texts, embedder) -> None:
    root = fleet_project(tmp_path / "project", texts)
    cwd = os.getcwd()
    os.chdir(root)
    try:  # warm each reference cache with the session's encoder: the CLI embeds the windows
        for model in declared(MODELS[:2], root):
            load_reference(model_settings(model, root), embed=embedder)
    finally:
        os.chdir(cwd)
    write_log(root / "log" / "madewithml", window_records(texts, 300, 0.0, seed=21))
    write_log(root / "log" / "tags-copy", window_records(texts, 300, 0.5, seed=22))
    output = root / "github_output"

    proc = run_ml(
        ["monitor", "drift", "--all", "--log-dir", "log"],
        cwd=root,
        env=cli_env(GITHUB_OUTPUT=str(output), ML_RETRAIN_FORCE=""),
    )
    assert proc.returncode == EXIT_DRIFT, proc.stdout + proc.stderr
    out = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert json.loads(out["drifted"]) == json.loads(out["retrain"]) == ["tags-copy"]
    assert json.loads(out["checked"]) == list(MODELS)
    decisions = json.loads(out["decisions"])
    assert decisions["madewithml"]["verdict"] == "no_drift", decisions
    assert decisions["unserved"]["verdict"] == "not_enough_data"  # never "no drift"
    assert "to retrain: tags-copy" in proc.stdout

    for name, verdict in zip(MODELS, ("no_drift", "drift", "not_enough_data"), strict=True):
        summary = json.loads((root / "reports" / name / "drift" / "summary.json").read_text())
        assert summary["verdict"] == verdict, (name, summary["reasons"])
        assert summary["window"]["source"] == str(root / "log" / name)
    assert (root / "reports/tags-copy/drift/report.html").is_file()
    assert not (root / "reports/drift").exists()  # nothing in the one-model layout

    # --model picks one model's params; --all checks each with its own: both is a usage error.
    both = run_ml(["--model", "madewithml", "monitor", "drift", "--all"], cwd=root)
    assert both.returncode == 2 and "drop --model" in both.stderr
