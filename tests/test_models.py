"""The declared models (models.yaml, ml/models/): loading it, `ml models list`, `ml --model`.

Which models a change affects: tests/test_models_affected.py."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.config import OUTPUT_FIELDS, load_settings, override
from ml.config.outputs import scoped_path
from ml.models import MODELS_FILE, ModelsError, load_models, parse_models_file
from tests.conftest import REPO_ROOT, cli_env, run_ml
from tests.models_project import ALL, catalog, copy_models_project, ml


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_models_project(tmp_path / "repo")


def write_models(root: Path, models: list[tuple[str, str]], default: str = "madewithml") -> None:
    """models.yaml declaring (name, params file) pairs, written as text so a name may repeat."""
    lines = [f"default: {default}", "models:"]
    lines += [f"  {name}:\n    params: {params}" for name, params in models]
    (root / MODELS_FILE).write_text("\n".join(lines) + "\n")


def declared(default: str, **models: str) -> dict:
    """models.yaml's content: default and name -> params file."""
    return {"default": default, "models": {name: {"params": p} for name, p in models.items()}}


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
    write_models(
        repo, [("madewithml", "params.yaml"), ("madewithml", "configs/fashion-mnist.yaml")]
    )
    with pytest.raises(ModelsError, match=r"\['madewithml'\] declared twice"):
        load_models(repo)


def test_a_missing_params_file_is_named(repo):
    write_models(repo, [("madewithml", "params.yaml"), ("x", "configs/x.yml")])
    with pytest.raises(ModelsError, match=re.escape("configs/x.yml, which does not exist")):
        load_models(repo)


@pytest.mark.parametrize(
    "name", ["Fashion", "../up", "a/b", "-lead", "trail-", "", "a b", "a" * 41, "é", "raw", "model"]
)
def test_a_name_that_is_not_a_safe_path_segment_is_refused(name):
    raw = {"default": name, "models": {name: {"params": "params.yaml"}}}
    with pytest.raises(ModelsError, match=r"not a safe path segment|taken by an existing output"):
        parse_models_file(raw)


@settings(deadline=None)
@given(st.one_of(st.text(max_size=45), st.from_regex(r"[a-z0-9.-]{1,42}", fullmatch=True)))
def test_every_accepted_name_is_one_folder_and_one_url_segment(name):
    raw = {"default": name, "models": {name: {"params": "params.yaml"}}}
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
    raw = declared("madewithml", madewithml="params.yaml")
    raw["models"]["madewithml"]["task"] = "text-classification"
    with pytest.raises(
        ModelsError, match=re.escape("models.0.task: Extra inputs are not permitted")
    ):
        parse_models_file(raw)


def test_the_default_must_read_params_yaml():
    raw = declared("fm", fm="configs/fashion-mnist.yaml")
    with pytest.raises(ModelsError, match=re.escape("a verb without --model reads params.yaml")):
        parse_models_file(raw)
    with pytest.raises(ModelsError, match=r"unknown default model 'madewithm' \(did you mean"):
        parse_models_file(declared("madewithm", madewithml="params.yaml"))


def test_a_list_of_models_is_refused_with_the_mapping_form():
    raw = {"default": "a", "models": [{"name": "a", "params": "params.yaml"}]}
    with pytest.raises(ModelsError, match=r"must map each model's name to its params file"):
        parse_models_file(raw)


@pytest.mark.parametrize("params", ["/etc/params.yaml", "../params.yaml", "configs/../../x.yaml"])
def test_a_params_file_outside_the_repository_is_refused(params):
    with pytest.raises(ModelsError, match="must be a path inside the repository"):
        parse_models_file(declared("a", a=params))


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
    write_models(repo, [("madewithml", "params.yaml")] * 2)
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


# --- per-model outputs (ml/config/outputs.py) --------------------------------------------------


def outputs(repo: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The output paths `ml ARGS config show` reports, and where each came from."""
    result = run_ml([*args, "config", "show", "--json"], repo, env=cli_env(**(env or {})))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    return {key: shown[key]["value"] for key in OUTPUT_FIELDS} | {
        "source": shown["model.dir"]["source"]
    }


def test_a_model_writes_under_its_own_folders(repo):
    image = outputs(repo, "--model", "fashion-mnist")
    assert image == {
        "data.raw_dir": "data/fashion-mnist/raw",
        "data.splits_dir": "data/fashion-mnist/splits",
        "validate.report": "reports/fashion-mnist/data_validation.json",
        "model.dir": "models/fashion-mnist",
        "train.report": "reports/fashion-mnist/train.json",
        "tune.output": "reports/fashion-mnist/tune/best_params.yaml",
        "evaluate.metrics": "reports/fashion-mnist/metrics.json",
        "evaluate.detail_dir": "reports/fashion-mnist/eval",
        "gate.report": "reports/fashion-mnist/gate.json",
        "report.pr_comment": "reports/fashion-mnist/pr_comment.md",
        "monitor.model_dir": None,
        "monitor.report_dir": "reports/fashion-mnist/drift",
        "monitor.cache_dir": "data/fashion-mnist/monitor",
        "monitor.pr_body": "reports/fashion-mnist/retrain_pr.md",
        "source": "configs/fashion-mnist.yaml, scoped to model fashion-mnist",
    }


def test_without_an_option_the_default_model_is_scoped_and_params_keeps_the_files_paths(repo):
    default = outputs(repo, env={"ML_PARAMS": ""})
    assert default["model.dir"] == "models/madewithml"
    assert default["gate.report"] == "reports/madewithml/gate.json"
    assert outputs(repo, "--model", "madewithml") == default
    # An explicit params file (ad-hoc runs, tests) is read as written: today's single layout.
    for unscoped in (outputs(repo, "--params", "params.yaml"), outputs(repo, env=ML_PARAMS)):
        assert unscoped["model.dir"] == "models/model"
        assert unscoped["gate.report"] == "reports/gate.json"
        assert unscoped["source"] == "params.yaml"


ML_PARAMS = {"ML_PARAMS": "params.yaml"}


@pytest.mark.parametrize(
    ("value", "scoped"),
    [
        ("reports/x.json", "reports/m/x.json"),
        ("reports/tune/best.yaml", "reports/m/tune/best.yaml"),
        ("data/raw", "data/m/raw"),
        ("models/model", "models/m"),
        ("reports/m/gate.json", "reports/m/gate.json"),  # already the model's: kept
        ("/abs/reports/x.json", "/abs/reports/x.json"),  # chosen on purpose: kept
        ("elsewhere/x.json", "elsewhere/x.json"),
        ("reports", "reports"),
    ],
)
def test_scoped_path(value, scoped):
    assert scoped_path(value, "m") == scoped


def test_a_params_override_stays_scoped(repo):
    with contextlib.chdir(repo):
        settings = load_settings("params.yaml", environ={}, model="madewithml")
        tuned = override(settings, {"model.dir": "models/model", "train.epochs": 1}, "tuned")
    assert tuned.model.dir == "models/madewithml" and tuned.model_name == "madewithml"


def test_dvc_yaml_runs_each_stage_per_model_where_its_settings_write():
    """dvc.yaml's outs per model are the paths scope_outputs gives (one rule, two spellings)."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert all(stage["foreach"] == "${models}" for stage in stages.values())
    for model in catalog().models:
        settings = load_settings(REPO_ROOT / model.params, environ={}, model=model.name)
        written = {
            "ingest": [settings.data.raw_dir],
            "validate": [settings.validate_.report],
            "split": [settings.data.splits_dir],
            "train": [settings.model.dir, settings.train.report],
            "evaluate": [settings.evaluate.detail_dir],
            "register": [str(PurePosixPath(settings.train.report).with_name("registry.json"))],
            "gate": [settings.gate.report],
            "report": [settings.report.pr_comment],
        }
        for name, paths in written.items():
            do = stages[name]["do"]
            outs = [next(iter(o)) if isinstance(o, dict) else o for o in do["outs"]]
            assert [o.replace("${key}", model.name) for o in outs] == paths, name
            assert do["cmd"].startswith("ml --model ${key} ")
            if "params" in do:
                assert next(iter(do["params"][0])) == "${item.params}"


def test_a_submitted_job_reads_the_models_folders():
    from ml.train.ray_train import TrainOptions
    from ml.train.submit import job_command

    options = TrainOptions()
    scoped = job_command(Path("configs/fashion-mnist.yaml"), options, None, "fashion-mnist")
    assert scoped.startswith("python -m ml.cli --model fashion-mnist train")
    assert "--params" not in scoped
    assert job_command(Path("p.yaml"), options, None).startswith("python -m ml.cli --params p.yaml")
