"""Settings: params.yaml is the source, the environment overrides deployment values."""

from __future__ import annotations

import pytest

from ml.config import ENV_OVERRIDES, ConfigError, load_settings
from tests.conftest import REPO_ROOT


def test_repo_params_load_with_defaults():
    settings = load_settings(REPO_ROOT / "params.yaml", environ={})
    assert settings.data.label_column == "tag"
    assert settings.mlflow.tracking_uri.startswith("sqlite:")
    assert settings.provenance["data.source"].endswith("params.yaml")


@pytest.mark.parametrize("var", sorted(ENV_OVERRIDES))
def test_environment_overrides(var):
    value = {"ML_TIER": "production"}.get(var, "override-value")  # a tier is one of three
    settings = load_settings(REPO_ROOT / "params.yaml", environ={var: value})
    section, key = ENV_OVERRIDES[var].split(".")
    assert getattr(getattr(settings, section), key) == value
    assert settings.provenance[ENV_OVERRIDES[var]] == f"env {var}"


def test_the_pr_tier_logs_to_the_pr_experiment_and_says_so():
    trusted = load_settings(REPO_ROOT / "params.yaml", environ={})
    pr = load_settings(REPO_ROOT / "params.yaml", environ={"ML_TIER": "pr"})
    assert trusted.mlflow.experiment == "tag-classifier"
    assert pr.mlflow.experiment == pr.mlflow.pr_experiment == "tag-classifier-pr"
    assert pr.provenance["mlflow.experiment"].startswith("tier pr")
    with pytest.raises(ConfigError, match=r"mlflow\.tier"):
        load_settings(REPO_ROOT / "params.yaml", environ={"ML_TIER": "admin"})


def test_medical_abstracts_runs_by_configuration_only():
    settings = load_settings(REPO_ROOT / "configs/medical-abstracts.yaml", environ={})
    assert (settings.data.train_file, settings.data.holdout_file) == ("train.csv", "test.csv")


@pytest.mark.parametrize(
    "text, message",
    [
        ("- just\n- a list\n", "mapping"),
        ("data: [unclosed\n", "not valid YAML"),
        ("data:\n  source: x\n  text_columns: []\n", "text_columns"),
        ("data:\n  source: x\n  label_column: id\n", "distinct"),
        ("data:\n  source: x\nsplit:\n  val_fraction: 1.5\n", "val_fraction"),
    ],
)
def test_invalid_params_name_the_problem(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})
