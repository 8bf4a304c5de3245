"""One local mirror root for every model's data (ML_DATA_MIRROR_ROOT): each params file names its
subfolder (data.mirror_subdir); ML_DATA_MIRROR, one folder, wins over the root.

The ingests are real (`ml --model NAME data ingest` on the repository's params files, reading
the shared datasets through the root) and keep their sha256 checks."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.config import ConfigError, load_settings, params_hash
from ml.models import load_models
from tests.conftest import REPO_ROOT, cli_env, run_ml
from tests.models_project import ALL, copy_models_project

ROOT_ENV = "ML_DATA_MIRROR_ROOT"


def ml(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ml ARGS` in ROOT in-process, with `env` set for the call (as a job's variables)."""
    with contextlib.chdir(root):
        result = CliRunner(env=env).invoke(app, list(args), prog_name="ml")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    # A project folder whose relative data.source (../shared/data/...) leads nowhere: only the
    # root can supply the files.
    return copy_models_project(tmp_path / "repo")


def raw_dir(repo: Path, name: str) -> Path:
    """Where `ml --model NAME data ingest` (or the default model's) writes: data/NAME/raw."""
    params = repo / load_models(repo).get(name).params
    return repo / load_settings(params, environ={}, model=name).data.raw_dir


def manifest(repo: Path, name: str) -> dict:
    return json.loads((raw_dir(repo, name) / "manifest.json").read_text())


@pytest.mark.parametrize("name", ALL)
def test_the_root_gives_each_model_its_own_subfolder(repo, shared_data, name):
    result = ml(repo, "--model", name, "data", "ingest", **{ROOT_ENV: str(shared_data)})
    assert result.returncode == 0, result.stderr
    ingested = manifest(repo, name)
    assert ingested["source"] == str(shared_data / name)
    declared = load_settings(repo / load_models(repo).get(name).params, environ={}).data.sha256
    assert declared and {f["name"]: f["sha256"] for f in ingested["files"]} == declared
    for entry in ingested["files"]:
        assert (raw_dir(repo, name) / entry["name"]).stat().st_size == entry["bytes"]


def test_every_declared_model_names_a_subfolder_of_the_shared_data():
    for model in load_models(REPO_ROOT).models:
        settings = load_settings(REPO_ROOT / model.params, environ={})
        assert settings.data.mirror_subdir == model.name


def test_the_mirror_wins_over_the_root_and_config_show_says_so(repo, shared_data, tmp_path):
    empty_root = tmp_path / "empty-root"  # holds no model's folder: reading it would fail
    empty_root.mkdir()
    env = {ROOT_ENV: str(empty_root), "ML_DATA_MIRROR": str(shared_data / "madewithml")}
    result = ml(repo, "data", "ingest", **env)
    assert result.returncode == 0, result.stderr
    assert manifest(repo, "madewithml")["source"] == str(shared_data / "madewithml")
    shown = json.loads(ml(repo, "config", "show", "--json", **env).stdout)
    assert shown["data.mirror"]["source"] == "env ML_DATA_MIRROR"
    assert shown["data.mirror_root"]["source"].startswith(f"env {ROOT_ENV} (unused: ")
    alone = json.loads(ml(repo, "config", "show", "--json", **{ROOT_ENV: "/m"}).stdout)
    assert alone["data.mirror_root"] == {"value": "/m", "source": f"env {ROOT_ENV}"}


def test_a_missing_subfolder_names_the_path_and_the_fix(repo, tmp_path):
    root = tmp_path / "mirror-root"
    (root / "madewithml").mkdir(parents=True)  # another model's folder only
    result = run_ml(
        ["--model", "fashion-mnist", "data", "ingest"], repo, cli_env(**{ROOT_ENV: str(root)})
    )
    assert result.returncode != 0
    assert f"data mirror folder not found: {root / 'fashion-mnist'}" in result.stderr
    assert (
        f"{ROOT_ENV}={root}" in result.stderr
        and "data.mirror_subdir=fashion-mnist" in result.stderr
    )
    assert "ML_DATA_MIRROR" in result.stderr and "Traceback" not in result.stderr
    raw = raw_dir(repo, "fashion-mnist")
    assert not raw.exists() or not any(raw.iterdir())


def test_a_tampered_copy_under_the_root_fails_its_checksum(repo, shared_data, tmp_path):
    root = tmp_path / "mirror-root"
    shutil.copytree(shared_data / "madewithml", root / "madewithml")
    with (root / "madewithml" / "holdout.csv").open("a") as out:
        out.write("999,tampered,row,mlops\n")
    result = ml(repo, "data", "ingest", **{ROOT_ENV: str(root)})
    assert result.returncode != 0
    assert "checksum mismatch for holdout.csv" in result.stderr
    assert not (raw_dir(repo, "madewithml") / "dataset.csv").exists()  # nothing was replaced


def test_a_params_file_without_a_subfolder_reads_its_source(tmp_path):
    # A model with no copy under the root (its data in a local folder) still ingests from it.
    source = tmp_path / "own-data"
    source.mkdir()
    for name in ("dataset.csv", "holdout.csv"):
        (source / name).write_text("id,title,description,tag\n")
    params = (REPO_ROOT / "params.yaml").read_text()
    params = params.replace("  mirror_subdir: madewithml\n", "")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(params)
    from ml.data.ingest import source_location

    settings = load_settings(params_file, environ={ROOT_ENV: str(tmp_path / "nowhere")})
    assert settings.data.mirror_subdir is None
    assert source_location(settings).startswith("https://")  # data.source, not the root
    local = settings.data.model_copy(update={"source": str(source)})
    assert source_location(settings.model_copy(update={"data": local})) == str(source)


@pytest.mark.parametrize("subdir", ["../madewithml", "/srv/data/madewithml"])
def test_a_subfolder_must_stay_under_the_root(tmp_path, subdir):
    params = (REPO_ROOT / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(params.replace("mirror_subdir: madewithml", f"mirror_subdir: {subdir}"))
    with pytest.raises(ConfigError, match="must be a folder name under the mirror root"):
        load_settings(bad, environ={})


def test_where_the_data_is_read_from_does_not_change_the_params_hash(tmp_path):
    params = REPO_ROOT / "params.yaml"
    plain = load_settings(params, environ={})
    rooted = load_settings(params, environ={ROOT_ENV: "/srv/data", "ML_DATA_MIRROR": "/m"})
    assert params_hash(plain) == params_hash(rooted)
    # Models trained before the mirror keys existed keep their hash (the registry's tag).
    before = tmp_path / "params.yaml"
    before.write_text(params.read_text().replace("  mirror_subdir: madewithml\n", ""))
    assert params_hash(load_settings(before, environ={})) == params_hash(plain)
