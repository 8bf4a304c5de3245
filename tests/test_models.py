"""The declared models (models.yaml, ml/models/): loading it, `ml models list`, `ml --model`.

Which models a change affects: tests/test_models_affected.py."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.models import MODELS_FILE, ModelsError, load_models, parse_models_file
from tests.conftest import run_ml
from tests.models_project import ALL, catalog, copy_models_project, ml


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_models_project(tmp_path / "repo")


def write_models(root: Path, models: list[dict], default: str = "madewithml") -> None:
    (root / MODELS_FILE).write_text(yaml.safe_dump({"default": default, "models": models}))


# --- declared once -----------------------------------------------------------------------------


def test_the_repository_declares_three_models_with_their_tasks():
    models = catalog()
    assert models.names == ALL
    assert models.default == "madewithml"
    assert {m.name: m.task for m in models.models} == {
        "madewithml": "text-classification",
        "medical-abstracts": "text-classification",  # its params file leaves task at the default
        "fashion-mnist": "image-classification",
    }
    assert models.get("madewithml").params == "params.yaml"


def test_each_model_registers_under_its_own_name():
    names = {m.name: m.registered_model for m in catalog().models}
    # The default model keeps the name its registry history (and the release tags) use.
    assert names == {
        "madewithml": "tag-classifier",
        "medical-abstracts": "medical-abstracts",
        "fashion-mnist": "fashion-mnist",
    }


def test_two_models_with_one_registered_model_are_refused(repo):
    image = repo / "configs" / "fashion-mnist.yaml"
    image.write_text(image.read_text().replace("registered_model: fashion-mnist", ""))
    with pytest.raises(ModelsError) as refused:
        load_models(repo)
    message = str(refused.value)
    assert "models 'madewithml' (params.yaml) and 'fashion-mnist' (configs/fashion-mnist.yaml)" in (
        message
    )
    assert "both register as mlflow.registered_model 'tag-classifier'" in message
    assert "registered_model: fashion-mnist in the mlflow section of" in message
    listed = ml(repo, "models", "list", "--json")
    assert listed.returncode == 2 and "both register as" in listed.stderr


def test_one_name_in_two_tracking_stores_is_two_registered_models(repo):
    image = repo / "configs" / "fashion-mnist.yaml"
    raw = yaml.safe_load(image.read_text())
    raw["mlflow"] = {"tracking_uri": "sqlite:///images.db"}  # the default registered name
    image.write_text(yaml.safe_dump(raw))
    models = load_models(repo)
    assert models.get("fashion-mnist").registered_model == "tag-classifier"


def test_an_unknown_model_suggests_the_closest(repo):
    with pytest.raises(ModelsError, match=r"unknown model 'fashon-mnist' \(did you mean "):
        load_models(repo).get("fashon-mnist")


def test_a_duplicate_name_is_refused(repo):
    entry = {"name": "madewithml", "params": "params.yaml"}
    write_models(repo, [entry, {**entry, "params": "configs/fashion-mnist.yaml"}])
    with pytest.raises(ModelsError, match="'madewithml' is declared twice"):
        load_models(repo)


def test_a_missing_params_file_is_named(repo):
    write_models(
        repo,
        [{"name": "madewithml", "params": "params.yaml"}, {"name": "x", "params": "configs/x.yml"}],
    )
    with pytest.raises(ModelsError, match=re.escape("configs/x.yml, which does not exist")):
        load_models(repo)


@pytest.mark.parametrize(
    "name", ["Fashion", "../up", "a/b", "-lead", "trail-", "", "a b", "a" * 41, "é", "raw", "model"]
)
def test_a_name_that_is_not_a_safe_path_segment_is_refused(name):
    raw = {"default": name, "models": [{"name": name, "params": "params.yaml"}]}
    with pytest.raises(ModelsError, match=r"not a safe path segment|taken by an existing output"):
        parse_models_file(raw)


@settings(deadline=None)
@given(st.one_of(st.text(max_size=45), st.from_regex(r"[a-z0-9.-]{1,42}", fullmatch=True)))
def test_every_accepted_name_is_one_folder_and_one_url_segment(name):
    raw = {"default": name, "models": [{"name": name, "params": "params.yaml"}]}
    try:
        parse_models_file(raw)
    except ModelsError:
        return
    assert PurePosixPath(name).parts == (name,) and name not in {".", ".."}
    assert urllib.parse.quote(name, safe="") == name and name == name.lower()


def test_an_unregistered_task_is_refused(repo):
    (repo / "configs" / "fashion-mnist.yaml").write_text("task: speech-recognition\n")
    with pytest.raises(ModelsError, match="task 'speech-recognition', which is not registered"):
        load_models(repo)


def test_the_task_is_not_repeated_in_the_model_list():
    raw = {
        "default": "madewithml",
        "models": [{"name": "madewithml", "params": "params.yaml", "task": "text-classification"}],
    }
    with pytest.raises(
        ModelsError, match=re.escape("models.0.task: Extra inputs are not permitted")
    ):
        parse_models_file(raw)


def test_the_default_must_read_params_yaml():
    raw = {"default": "fm", "models": [{"name": "fm", "params": "configs/fashion-mnist.yaml"}]}
    with pytest.raises(ModelsError, match=re.escape("a verb without --model reads params.yaml")):
        parse_models_file(raw)
    with pytest.raises(ModelsError, match=r"unknown default model 'madewithm' \(did you mean"):
        parse_models_file({**raw, "default": "madewithm", "models": [
            {"name": "madewithml", "params": "params.yaml"}
        ]})  # fmt: skip


@pytest.mark.parametrize("params", ["/etc/params.yaml", "../params.yaml", "configs/../../x.yaml"])
def test_a_params_file_outside_the_repository_is_refused(params):
    raw = {"default": "a", "models": [{"name": "a", "params": params}]}
    with pytest.raises(ModelsError, match="must be a path inside the repository"):
        parse_models_file(raw)


def test_a_missing_or_broken_model_list_is_a_clear_error(tmp_path):
    with pytest.raises(
        ModelsError, match=re.escape("models.yaml not found: run from the repository root")
    ):
        load_models(tmp_path)
    (tmp_path / MODELS_FILE).write_text("models: [\n")
    with pytest.raises(ModelsError, match="is not valid YAML"):
        load_models(tmp_path)


# --- ml models list, ml --model ----------------------------------------------------------------


def test_models_list_prints_a_table_and_json(repo):
    table = run_ml(["models", "list"], repo)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "madewithml" in line]
    assert len(lines) == 1 and "*" in lines[0] and "text-classification" in lines[0]
    listed = run_ml(["models", "list", "--json"], repo)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1  # a workflow writes it to $GITHUB_OUTPUT
    assert json.loads(listed.stdout) == [
        {
            "name": "madewithml",
            "task": "text-classification",
            "params": "params.yaml",
            "registered_model": "tag-classifier",
        },
        {
            "name": "medical-abstracts",
            "task": "text-classification",
            "params": "configs/medical-abstracts.yaml",
            "registered_model": "medical-abstracts",
        },
        {
            "name": "fashion-mnist",
            "task": "image-classification",
            "params": "configs/fashion-mnist.yaml",
            "registered_model": "fashion-mnist",
        },
    ]


def test_models_list_reports_a_bad_list_with_exit_code_2(repo):
    write_models(repo, [{"name": "madewithml", "params": "params.yaml"}] * 2)
    result = ml(repo, "models", "list", "--json")
    assert result.returncode == 2 and "declared twice" in result.stderr
    assert "Traceback" not in result.stderr


def config_task(repo: Path, *args: str) -> dict:
    result = ml(repo, *args, "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["task"]


def test_model_option_selects_that_models_params(repo):
    assert config_task(repo, "--model", "fashion-mnist") == {
        "value": "image-classification",
        "source": "configs/fashion-mnist.yaml",
    }
    assert config_task(repo)["value"] == "text-classification"  # no option: params.yaml
    medical = ml(repo, "--model", "medical-abstracts", "config", "show", "--json")
    assert json.loads(medical.stdout)["data.train_file"]["value"] == "train.csv"
    script = run_ml(["--model", "fashion-mnist", "config", "show", "--json"], repo)
    assert json.loads(script.stdout)["task"]["value"] == "image-classification", script.stderr


def test_model_and_params_together_are_a_usage_error(repo):
    result = ml(repo, "--model", "fashion-mnist", "--params", "params.yaml", "config", "show")
    assert result.returncode == 2
    assert "give --model or --params, not both" in result.stderr


def test_an_unknown_model_option_names_the_declared_ones(repo):
    result = ml(repo, "--model", "fashionmnist", "config", "show")
    assert result.returncode == 2
    assert "did you mean 'fashion-mnist'?" in result.stderr and "Traceback" not in result.stderr
