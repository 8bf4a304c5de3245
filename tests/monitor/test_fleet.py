"""`ml monitor drift --all` and `ml retrain --models`: the model lists a workflow passes, the
fleet's exit code and the GITHUB_OUTPUT lines that name the models to retrain. The whole path on
real data (three models' logs, one drifted, that one retrained and proposed, the others
untouched) is test_retrain.py's test_drift_on_one_model_retrains_that_model_only_and_opens_its_pr,
which shares its drift check with the retrain run it triggers (one training in the suite)."""

from __future__ import annotations

import json

import pytest

from ml.monitor.drift import EXIT_DRIFT, EXIT_ERROR, EXIT_NOT_ENOUGH_DATA
from ml.monitor.fleet import (
    FleetDrift,
    FleetError,
    ModelCheck,
    parse_model_names,
    worst_exit_code,
)


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
