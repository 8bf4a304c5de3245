"""Settings: params.yaml is the source, the environment overrides deployment values."""

from __future__ import annotations

import pytest

from ml.config import (
    ENV_OVERRIDES,
    ConfigError,
    load_settings,
    override,
    override_from_file,
    params_hash,
)
from tests.conftest import REPO_ROOT, run_ml


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


@pytest.mark.parametrize(
    "section, suggestion",
    [("trian", "train"), ("serving", "serve"), ("evaluation", "evaluate"), ("monitr", "monitor")],
)
def test_a_misspelt_section_is_rejected_with_the_close_match(tmp_path, section, suggestion):
    path = tmp_path / "params.yaml"
    path.write_text(f"data:\n  source: x\n{section}:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=rf"'{section}' \(did you mean '{suggestion}'\?\)"):
        load_settings(path, environ={})


def test_the_cli_refuses_a_misspelt_section_as_a_usage_error(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: x\nvalidation:\n  min_text_chars: 5\n")
    result = run_ml(["config", "show"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'validation' (did you mean 'validate'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unrelated_unknown_section_lists_the_known_ones(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: x\nzzz: 1\n")
    with pytest.raises(ConfigError, match=r"'zzz'; the sections are \[.*'train'"):
        load_settings(path, environ={})


PARAMS_FILES = [REPO_ROOT / "params.yaml", *sorted((REPO_ROOT / "configs").glob("*.yaml"))]


def test_every_config_in_the_repo_has_only_known_sections():
    for path in PARAMS_FILES:
        load_settings(path, environ={})


def test_every_models_stages_find_their_params_in_its_params_file(tmp_path, monkeypatch):
    """dvc.yaml's STAGE@NAME copies read NAME's own params file (models.yaml): DVC's own
    check, on a copy of the repository's dvc.yaml, models.yaml and params files, finds every
    params section and key that a stage lists."""
    import shutil

    from dvc.dependency.param import MissingParamsError, ParamsDependency
    from dvc.repo import Repo

    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    for name in ("dvc.yaml", "models.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    repo = Repo.init(tmp_path, no_scm=True)
    missing, checked, files = [], set(), {}
    for stage in repo.index.stages:
        for dep in stage.deps:
            if isinstance(dep, ParamsDependency):
                checked.update(dep.params)
                files.setdefault(stage.name.split("@")[1], set()).add(dep.def_path)
                try:
                    dep.get_hash()
                except MissingParamsError as exc:
                    missing.append(f"{stage.name}: {exc}")
    assert {"task", "data", "train", "evaluate", "gate"} <= checked  # the stages list params
    assert files == {
        "madewithml": {"params.yaml"},
        "medical-abstracts": {"configs/medical-abstracts.yaml"},
        "fashion-mnist": {"configs/fashion-mnist.yaml"},
    }
    assert not missing, "a params file lacks what dvc.yaml's stages read: " + "; ".join(missing)


def test_override_validates_and_records_its_source():
    settings = load_settings(REPO_ROOT / "params.yaml", environ={})
    changed = override(settings, {"train.epochs": 7, "model": {"dropout": 0.25}}, "--epochs")
    assert (changed.train.epochs, changed.model.dropout) == (7, 0.25)
    assert changed.provenance["train.epochs"] == changed.provenance["model.dropout"] == "--epochs"
    assert changed.train.lr == settings.train.lr and settings.train.epochs != 7  # a copy
    assert changed.root == settings.root
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        override(settings, {"train.epochs": 0}, "--epochs")
    with pytest.raises(ConfigError, match=r"did you mean 'train'"):
        override(settings, {"trian.epochs": 3}, "--epochs")


def test_the_environment_and_an_override_file_use_the_same_overlay(tmp_path):
    settings = load_settings(REPO_ROOT / "params.yaml", environ={"ML_DATA_MIRROR": "/m"})
    best = tmp_path / "best.yaml"
    best.write_text("train:\n  lr: 0.001\n")
    tuned = override_from_file(settings, best)
    assert tuned.train.lr == 0.001 and tuned.provenance["train.lr"] == str(best)
    assert tuned.data.mirror == "/m" and tuned.provenance["data.mirror"] == "env ML_DATA_MIRROR"
    best.write_text("serve:\n  port: 1\n")
    with pytest.raises(ConfigError, match="only model/train/image sections"):
        override_from_file(settings, best)
    best.write_text("trian:\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match=r"got \['trian'\] \(did you mean 'train'\?\)"):
        override_from_file(settings, best)
    with pytest.raises(ConfigError, match="not found"):
        override_from_file(settings, tmp_path / "missing.yaml")


def test_one_params_hash_for_training_and_the_registry():
    from ml import registry
    from ml.train import tracking

    settings = load_settings(REPO_ROOT / "params.yaml", environ={})
    assert registry.params_hash is tracking.params_hash is params_hash
    assert registry.provenance_tags(settings)["params_sha256"] == params_hash(settings)
    mirrored = load_settings(REPO_ROOT / "params.yaml", environ={"ML_DATA_MIRROR": "/srv/m"})
    assert params_hash(mirrored) == params_hash(settings)  # where the data came from: not a param
    served = override(settings, {"serve.port": 9999, "monitor.min_window": 5}, "test")
    assert params_hash(served) == params_hash(settings)
    for change in ({"train.epochs": 9}, {"model.dropout": 0.3}, {"split.seed": 7}):
        assert params_hash(override(settings, change, "test")) != params_hash(settings), change
