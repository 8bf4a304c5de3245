"""Registry round trip on a real MLflow: register, gate, promote, rollback, refusals.

Two backends: a SQLite file used directly (the laptop default, driven through the `ml` CLI as a
user would) and a real `mlflow server` process on a free loopback port (the deployed shape,
driven through the stage functions to keep the run short).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ml.cli import app
from ml.config import load_settings
from tests.conftest import run_ml
from tests.evaluate.tiny import log_model_run, make_eval_project, set_params

pytestmark = pytest.mark.slow

# Gate thresholds that make the verdict certain whatever the tiny model's quality.
IMPOSSIBLE_FLOORS = {"accuracy": 1.01}
NO_FLOORS = {"accuracy": 0.0}


def ml(*args: str) -> Result:
    """Run an `ml` command in this process (the real Typer app, no subprocess start-up)."""
    return CliRunner().invoke(app, list(args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def refused(result: Result, message: str) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a crash
    assert message in result.output, result.output


def test_registry_round_trip_on_sqlite(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from ml.evaluate.evaluate import evaluate

    root = make_eval_project(tmp_path / "project", holdout_per_class=3)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    set_params(root, "gate", floors=IMPOSSIBLE_FLOORS, min_behavioural_pass_rate=0.0)
    monkeypatch.chdir(root)
    monkeypatch.setenv("GITHUB_ACTOR", "ci-bot")

    refused(ml("registry", "rollback", "--reason", "x"), "no champion; nothing to roll back")
    log_model_run(root, tiny_model_dir, uri)
    evaluate(load_settings())
    assert "registered tag-classifier v1" in ok(ml("registry", "register"))
    assert "already registered" in ok(ml("registry", "register"))  # idempotent per run

    # The first model faces the floors; they cannot be met, so the gate fails ...
    gate = ml("gate")
    assert gate.exit_code == 1 and "gate failed" in gate.output
    decision = json.loads((root / "reports" / "gate.json").read_text())
    assert decision["passed"] is False and decision["mode"] == "floors"
    assert decision["champion"] is None and "accuracy" in decision["reasons"][0]
    assert ml("gate", "--check").exit_code == 1
    # ... and a gate-failed model is never promoted without --force: one line, no traceback,
    # from the installed command as a user runs it.
    process = run_ml(["registry", "promote", "--reason", "ship it"], cwd=root)
    assert process.returncode == 1
    assert "failed the gate" in process.stderr and "Traceback" not in process.stderr
    refused(ml("registry", "promote", "1"), "--reason is required")

    set_params(root, "gate", floors=NO_FLOORS)
    ok(ml("gate"))
    assert "champion v- -> v1" in ok(ml("registry", "promote", "--reason", "first model"))
    refused(ml("registry", "rollback", "--reason", "x"), "nothing to roll back to")

    # A second run of the same weights: compared with the champion it ties, so it passes.
    log_model_run(root, tiny_model_dir, uri)
    assert "registered tag-classifier v2" in ok(ml("registry", "register"))
    refused(ml("registry", "promote", "--reason", "early"), "has no gate decision")
    ok(ml("gate"))
    decision = json.loads((root / "reports" / "gate.json").read_text())
    assert decision["mode"] == "compare" and decision["champion"]["version"] == "1"
    assert decision["challenger"]["overall"] == decision["champion"]["overall"]
    ok(ml("registry", "promote", "--reason", "retrained on new data"))
    refused(ml("registry", "promote", "2", "--reason", "again"), "already the champion")
    refused(ml("registry", "promote", "7", "--reason", "x"), "has no version 7")

    assert "champion v2 -> v1" in ok(ml("registry", "rollback", "--reason", "bad canary"))
    shown = json.loads(ok(ml("registry", "show", "--json")))
    assert shown["aliases"] == {"champion": "1", "challenger": "2"}
    history = shown["history"]
    rollbacks = [e for e in history if e["action"] in ("rollback", "rolled_back")]
    assert {(e["action"], e["version"], e["why"]) for e in rollbacks} == {
        ("rollback", "1", "bad canary"),
        ("rolled_back", "2", "bad canary"),
    }
    assert all(e["who"] == "ci-bot" and e["when"] and e["why"] for e in history)
    assert {e["why"] for e in history} >= {"first model", "retrained on new data", "bad canary"}
    versions = {v["version"]: v for v in shown["versions"]}
    assert versions["2"]["gate"] == "passed" and versions["1"]["git_sha"]
    assert "alias history" in ok(ml("registry", "show"))

    # A version the gate never saw is refused; --force promotes it and records the override.
    log_model_run(root, tiny_model_dir, uri)
    ok(ml("registry", "register"))
    refused(ml("registry", "promote", "3", "--reason", "x"), "has no gate decision")
    assert "FORCED" in ok(ml("registry", "promote", "3", "--force", "--reason", "hotfix"))
    events = json.loads(ok(ml("registry", "show", "--json")))["history"]
    promote = next(e for e in events if e["action"] == "promote" and e["version"] == "3")
    assert promote["forced"] is True and promote["why"] == "hotfix"
    assert "no gate decision" in promote["override"]


def test_registry_round_trip_on_mlflow_server(
    tmp_path: Path, tiny_model_dir: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
):
    from ml.evaluate.evaluate import evaluate
    from ml.gate import gate
    from ml.registry import RegistryError, promote, register, rollback, show

    root = make_eval_project(tmp_path / "project", holdout_per_class=3)
    set_params(root, "gate", floors=IMPOSSIBLE_FLOORS, min_behavioural_pass_rate=0.0)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("GITHUB_ACTOR", "server-test")
    settings = load_settings(root / "params.yaml", dict(os.environ))

    log_model_run(root, tiny_model_dir, mlflow_server)
    evaluate(settings)
    assert register(settings).version == "1"
    assert gate(settings).decision.passed is False
    with pytest.raises(RegistryError, match="failed the gate"):
        promote(settings, None, "should be refused")

    set_params(root, "gate", floors=NO_FLOORS)
    settings = load_settings(root / "params.yaml", dict(os.environ))
    assert gate(settings).decision.passed
    assert promote(settings, None, "first").version == "1"

    log_model_run(root, tiny_model_dir, mlflow_server)
    evaluate(settings)
    assert register(settings).version == "2"
    result = gate(settings)
    assert result.decision.passed and result.champion_version == "1"
    move = promote(settings, "2", "better")
    assert (move.previous, move.version) == ("1", "2")
    assert rollback(settings, "regression in prod").version == "1"
    info = show(settings)
    assert info["aliases"]["champion"] == "1"
    assert info["tracking_uri"] == mlflow_server
    assert {e["who"] for e in info["history"]} == {"server-test"}
