"""`ml registry history` and model cards: the pure parts pinned, then one real `mlflow server` run.

The golden card is `golden/model_card.md`; after an intended change regenerate it with
`UPDATE_GOLDEN=1 pytest tests/registry/test_history_card.py -k golden` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.config import load_settings
from ml.registry.card import render
from ml.registry.history import periods
from tests.evaluate.tiny import log_model_run, make_eval_project, set_params

GOLDEN = Path(__file__).parent / "golden"


def move(action: str, version: str, when: str, **extra: object) -> dict:
    return {"action": action, "alias": "champion", "version": version, "when": when,
            "who": "ana", "why": f"{action} {version}", **extra}  # fmt: skip


def test_periods_follow_the_moves_and_carry_the_release_tag():
    rows = periods(
        [
            move("promote", "1", "t1", release="v1.0.0"),
            move("promote", "2", "t2", from_version="1", why="release v1.1.0"),
            move("rollback", "1", "t3", from_version="2"),
            move("withdraw", "1", "t4"),
            move("promote", "3", "t5", forced=True),
        ]
    )
    assert [(r["version"], r["from"], r["to"], r["ended_by"]) for r in rows] == [
        ("1", "t1", "t2", "promote"),
        ("2", "t2", "t3", "rollback"),
        ("1", "t3", "t4", "withdraw"),
        ("3", "t5", None, None),
    ]
    # The release field, else the release workflow's reason; a rollback keeps the tag that
    # deployed the version it restores; a hand promotion has none.
    assert [r["release"] for r in rows] == ["v1.0.0", "v1.1.0", "v1.0.0", ""]
    assert [r["previous"] for r in rows] == [None, "1", "2", None]
    assert rows[3]["forced"] and not rows[0]["forced"]


def card_inputs(gated: bool) -> dict:
    """A version's card inputs (what register and the gate log): gated against v1, or not."""
    inputs = json.loads((GOLDEN / "model_card_inputs.json").read_text())
    return inputs if gated else {**inputs, "gate": None}


def test_card_rendering_matches_the_golden_file():
    text = render(card_inputs(gated=True))
    golden = GOLDEN / "model_card.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    ungated = render(card_inputs(gated=False))
    assert "Not gated yet" in ungated and "vs champion" not in ungated
    assert "newly wrong" not in ungated and "confident mistake" in ungated


def test_history_of_a_model_not_registered_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = make_eval_project(tmp_path / "project", holdout_per_class=1)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["registry", "history"])
    assert result.exit_code == 0, result.output
    assert "tag-classifier is not registered yet" in result.output


@pytest.mark.slow
def test_history_and_cards_on_mlflow_server(
    tmp_path: Path, tiny_model_dir: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
):
    from ml.evaluate.evaluate import evaluate
    from ml.gate import gate
    from ml.registry import RegistryError, promote, register, rollback
    from ml.registry.card import fetch_card, logged_inputs

    root = make_eval_project(tmp_path / "project", holdout_per_class=3)
    set_params(root, "gate", floors={"accuracy": 0.0}, min_behavioural_pass_rate=0.0)
    set_params(root, "mlflow", registered_model="history-classifier")  # the server is shared
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = load_settings(root / "params.yaml", dict(os.environ))

    def registered() -> str:
        log_model_run(root, tiny_model_dir, mlflow_server)
        return register(settings).version

    log_model_run(root, tiny_model_dir, mlflow_server)
    evaluate(settings)
    assert register(settings).version == "1"
    monkeypatch.setenv("GITHUB_ACTOR", "release-bot")
    assert gate(settings).decision.passed
    promote(settings, None, "release v1.0.0", release="v1.0.0")
    monkeypatch.setenv("GITHUB_ACTOR", "ana")
    assert registered() == "2"
    assert gate(settings).champion_version == "1"
    promote(settings, "2", "retrained on new data")
    assert registered() == "3"
    promote(settings, "3", "hotfix", force=True)
    monkeypatch.setenv("GITHUB_ACTOR", "oncall")
    rollback(settings, "bad canary")

    result = CliRunner().invoke(app, ["registry", "history", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    rows = [(r["version"], r["action"], r["who"], r["why"], r["previous"]) for r in info["periods"]]
    assert rows == [
        ("1", "promote", "release-bot", "release v1.0.0", None),
        ("2", "promote", "ana", "retrained on new data", "1"),
        ("3", "promote", "ana", "hotfix", "2"),
        ("2", "rollback", "oncall", "bad canary", "3"),
    ]
    periods_ = info["periods"]
    assert [p["to"] for p in periods_[:3]] == [p["from"] for p in periods_[1:]]
    assert periods_[-1]["to"] is None and info["champion"] == "2"
    assert periods_[0]["release"] == "v1.0.0" and periods_[2]["forced"]
    table = CliRunner().invoke(app, ["registry", "history"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "bad canary" in table.output, table.output

    # Version 2's card: registered, then gated against champion v1 (the same weights: a tie).
    card = CliRunner().invoke(app, ["registry", "card", "2"])
    assert card.exit_code == 0, card.output
    inputs = logged_inputs(info_run_id(settings, "2"), "2")
    assert card.output == render(inputs) == fetch_card(settings, "2")
    assert "# Model card: history-classifier v2" in card.output
    assert "vs champion v1" in card.output and "no detectable difference" in card.output
    assert inputs["data"]["sha256"] and inputs["provenance"]["registered_by"]
    assert (root / "reports" / "model_card.md").is_file()
    # Version 3 was never gated: its card says so.
    assert "Not gated yet" in fetch_card(settings, "3")
    with pytest.raises(RegistryError, match="has no version 9"):
        fetch_card(settings, "9")


def info_run_id(settings, version: str) -> str:
    from ml.registry import client

    return client(settings).get_model_version(settings.mlflow.registered_model, version).run_id
