"""The declared models (models.yaml, ml/models/): loading it, `ml models list`, `ml --model`,
and which models a change affects, on path lists and on a real git repository."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.models import MODELS_FILE, Catalog, Model, ModelsError, load_models, parse_models_file
from ml.models.affected import RULES, affected_models, lock_changes, rule_for
from tests.conftest import REPO_ROOT, run_ml

ALL = ["madewithml", "medical-abstracts", "fashion-mnist"]
TEXT = ["madewithml", "medical-abstracts"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A folder holding the repository's models.yaml and the params files it names."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in (MODELS_FILE, "params.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    return root


def write_models(root: Path, models: list[dict], default: str = "madewithml") -> None:
    (root / MODELS_FILE).write_text(yaml.safe_dump({"default": default, "models": models}))


@functools.cache
def catalog() -> Catalog:
    return load_models(REPO_ROOT)


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
@given(st.text(max_size=45))
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
    assert json.loads(listed.stdout) == [
        {"name": "madewithml", "task": "text-classification", "params": "params.yaml"},
        {
            "name": "medical-abstracts",
            "task": "text-classification",
            "params": "configs/medical-abstracts.yaml",
        },
        {
            "name": "fashion-mnist",
            "task": "image-classification",
            "params": "configs/fashion-mnist.yaml",
        },
    ]


def test_models_list_reports_a_bad_list_with_exit_code_2(repo):
    write_models(repo, [{"name": "madewithml", "params": "params.yaml"}] * 2)
    result = run_ml(["models", "list", "--json"], repo)
    assert result.returncode == 2 and "declared twice" in result.stderr
    assert "Traceback" not in result.stderr


def config_task(repo: Path, *args: str) -> dict:
    result = run_ml([*args, "config", "show", "--json"], repo)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["task"]


def test_model_option_selects_that_models_params(repo):
    assert config_task(repo, "--model", "fashion-mnist") == {
        "value": "image-classification",
        "source": "configs/fashion-mnist.yaml",
    }
    assert config_task(repo)["value"] == "text-classification"  # no option: params.yaml
    medical = run_ml(["--model", "medical-abstracts", "config", "show", "--json"], repo)
    assert json.loads(medical.stdout)["data.train_file"]["value"] == "train.csv"


def test_model_and_params_together_are_a_usage_error(repo):
    result = run_ml(["--model", "fashion-mnist", "--params", "params.yaml", "config", "show"], repo)
    assert result.returncode == 2
    assert "give --model or --params, not both" in result.stderr


def test_an_unknown_model_option_names_the_declared_ones(repo):
    result = run_ml(["--model", "fashionmnist", "config", "show"], repo)
    assert result.returncode == 2
    assert "did you mean 'fashion-mnist'?" in result.stderr and "Traceback" not in result.stderr


# --- affected models: the rules on path lists --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("configs/fashion-mnist.yaml", ["fashion-mnist"]),
        ("params.yaml", ["madewithml"]),
        ("ml/tasks/image_classification/cnn.py", ["fashion-mnist"]),
        ("ml/tasks/text_classification/tokenizer.py", TEXT),
        ("ml/tasks/base.py", ALL),
        ("ml/tasks/__init__.py", ALL),
        ("ml/train/loop.py", ALL),
        ("dvc.yaml", ALL),
        ("pyproject.toml", ALL),
        ("constraints.txt", ALL),
        (".github/workflows/pr.yml", ALL),
        (".github/actions/setup/action.yml", ALL),
        ("data/fashion-mnist/train.idx", ["fashion-mnist"]),
        ("data/fashion-mnist.dvc", ["fashion-mnist"]),
        ("data/raw.dvc", ALL),  # today every model's raw_dir is data/raw
        ("dvc.lock:data/medical-abstracts/splits", ["medical-abstracts"]),
        ("dvc.lock:models/model", []),
        ("dvc.lock", []),
        ("docs/models.md", []),
        ("README.md", []),
        ("reports/benchmarks/training.md", []),
        ("tests/test_models.py", []),
        ("configs/unused.yaml", []),
        (".github/workflows/docs.yml", []),
        ("deploy/serve_config.yaml", []),
        ("somewhere/new.py", ALL),
    ],
)
def test_what_a_path_affects(path, expected):
    assert list(affected_models(catalog(), [path])) == expected


def sample(pattern: str) -> str:
    return pattern.replace("**/", "").replace("**", "x.py").replace("*", "x")


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.pattern)
def test_no_rule_is_hidden_behind_an_earlier_one(rule):
    assert rule_for(sample(rule.pattern)) is rule


def test_a_change_says_why_each_model_is_affected():
    affected = affected_models(catalog(), ["configs/fashion-mnist.yaml", "ml/tasks/base.py"])
    assert affected == {
        "madewithml": [
            {"path": "ml/tasks/base.py", "why": "the task interface every task builds on"}
        ],
        "medical-abstracts": [
            {"path": "ml/tasks/base.py", "why": "the task interface every task builds on"}
        ],
        "fashion-mnist": [
            {"path": "configs/fashion-mnist.yaml", "why": "its params file"},
            {"path": "ml/tasks/base.py", "why": "the task interface every task builds on"},
        ],
    }


segment = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)
tail = st.lists(segment, min_size=1, max_size=4).map("/".join)
docs_paths = st.one_of(
    tail.map("docs/{}".format),
    tail.map("reports/{}".format),
    tail.map("tests/{}".format),
    segment.map("{}.md".format),
    st.just("README.md"),
)
shared_paths = st.one_of(
    tail.filter(lambda p: not p.startswith("tasks/")).map("ml/{}".format),
    segment.map("ml/tasks/{}.py".format),
    st.sampled_from(["dvc.yaml", "pyproject.toml", "constraints.txt", ".github/workflows/pr.yml"]),
)
any_paths = st.one_of(
    docs_paths, shared_paths, tail, st.sampled_from(["configs/fashion-mnist.yaml"])
)


@settings(deadline=None)
@given(st.lists(docs_paths, max_size=20))
def test_a_docs_reports_or_tests_change_never_affects_a_model(paths):
    assert affected_models(catalog(), paths) == {}


@settings(deadline=None)
@given(shared_paths, st.lists(any_paths, max_size=5))
def test_any_shared_code_path_affects_every_model(shared, others):
    assert list(affected_models(catalog(), [*others, shared])) == ALL


@settings(deadline=None)
@given(st.lists(any_paths, max_size=8), st.lists(any_paths, max_size=8))
def test_a_change_affects_the_union_of_what_its_paths_affect(left, right):
    models = catalog()
    both = set(affected_models(models, left + right))
    assert both == set(affected_models(models, left)) | set(affected_models(models, right))


@settings(deadline=None)
@given(tail)
def test_a_task_package_change_affects_only_that_tasks_models(path):
    affected = affected_models(catalog(), [f"ml/tasks/image_classification/{path}"])
    assert list(affected) == ["fashion-mnist"]


def test_a_model_list_change_affects_the_models_it_adds_or_repoints():
    base = {"madewithml": "params.yaml", "medical-abstracts": "configs/medical-abstracts.yaml"}
    assert list(affected_models(catalog(), [MODELS_FILE], base)) == ["fashion-mnist"]
    same = {m.name: m.params for m in catalog().models}
    assert affected_models(catalog(), [MODELS_FILE], same) == {}
    assert list(affected_models(catalog(), [MODELS_FILE], None)) == ALL


def test_lock_changes_names_the_paths_whose_entries_differ():
    def lock(raw_md5: str, model_md5: str) -> dict:
        return {
            "schema": "2.0",
            "stages": {
                "ingest": {"cmd": "ml data ingest", "outs": [{"path": "data/raw", "md5": raw_md5}]},
                "train": {
                    "cmd": "ml train",
                    "deps": [{"path": "data/raw", "md5": raw_md5}],
                    "outs": [{"path": "models/model", "md5": model_md5}],
                },
            },
        }

    assert lock_changes(lock("a", "m"), lock("a", "m")) == []
    assert lock_changes(lock("a", "m"), lock("a", "n")) == ["models/model"]
    assert lock_changes(lock("a", "m"), lock("b", "m")) == ["data/raw"]
    assert lock_changes(None, lock("a", "m")) == ["data/raw", "models/model"]


def test_a_model_with_its_own_data_folder_is_affected_alone():
    own = Model("fm", "configs/fm.yaml", "image-classification", ("data/fm/raw",))
    other = Model("tc", "params.yaml", "text-classification", ("data/raw",))
    models = Catalog((other, own), "tc")
    assert list(affected_models(models, ["data/fm/raw/train.idx.gz"])) == ["fm"]
    assert list(affected_models(models, ["data/fm.dvc"])) == ["fm"]  # a pointer above it
    assert list(affected_models(models, ["data.dvc"])) == ["tc", "fm"]


# --- affected models: a real git repository ----------------------------------------------------


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    result = subprocess.run(
        ["git", *identity, *args], cwd=root, capture_output=True, text=True, check=True
    )
    return result.stdout


def commit(root: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "--", *files)
    git(root, "commit", "-q", "-m", message)


def affected(root: Path, *extra: str) -> dict[str, list[str]]:
    result = run_ml(["models", "affected", "--base", "main", "--json", *extra], root)
    assert result.returncode == 0, result.stderr
    return {
        row["name"]: sorted(r["path"] for r in row["reasons"]) for row in json.loads(result.stdout)
    }


LOCK = """schema: '2.0'
stages:
  ingest@fashion-mnist:
    outs:
    - path: {path}
      md5: {md5}
"""


def test_affected_on_a_real_git_repository(repo):
    git(repo, "init", "-q", "-b", "main")
    lock = LOCK.format(path="data/fashion-mnist/raw", md5="a")
    commit(repo, {"ml/train/loop.py": "x = 1\n", "dvc.lock": lock}, "base")
    for path in (
        MODELS_FILE,
        "params.yaml",
        "configs/fashion-mnist.yaml",
        "configs/medical-abstracts.yaml",
    ):
        git(repo, "add", path)
    git(repo, "commit", "-q", "-m", "models")
    git(repo, "checkout", "-q", "-b", "change")
    image = (repo / "configs" / "fashion-mnist.yaml").read_text()
    commit(repo, {"configs/fashion-mnist.yaml": image + "\n# retuned\n", "docs/x.md": "x"}, "image")
    # main moves on after the fork: BASE...HEAD leaves its changes out.
    git(repo, "checkout", "-q", "main")
    commit(repo, {"ml/train/loop.py": "x = 2\n"}, "shared code on main")
    git(repo, "checkout", "-q", "change")
    assert affected(repo) == {"fashion-mnist": ["configs/fashion-mnist.yaml"]}
    text = run_ml(["models", "affected", "--base", "main"], repo)
    assert "fashion-mnist (image-classification):" in text.stdout
    assert "configs/fashion-mnist.yaml: its params file" in text.stdout

    commit(repo, {"dvc.lock": LOCK.format(path="data/fashion-mnist/raw", md5="b")}, "data")
    assert affected(repo)["fashion-mnist"] == [
        "configs/fashion-mnist.yaml",
        "dvc.lock:data/fashion-mnist/raw",
    ]
    commit(repo, {"ml/tasks/text_classification/model.py": "y = 1\n"}, "text task")
    assert list(affected(repo)) == ALL
    assert affected(repo, "--head", "change~2") == {"fashion-mnist": ["configs/fashion-mnist.yaml"]}

    git(repo, "checkout", "-q", "-b", "docs-only", "main")
    commit(repo, {"docs/y.md": "y", "README.md": "r"}, "docs")
    assert affected(repo) == {}
    assert "no model is affected" in run_ml(["models", "affected", "--base", "main"], repo).stdout


def test_affected_names_a_ref_git_cannot_find(repo):
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"x.txt": "x"}, "base")
    result = run_ml(["models", "affected", "--base", "origin/nosuch"], repo)
    assert result.returncode == 2
    assert "git merge-base" in result.stderr or "git diff" in result.stderr
    assert "fetch-depth: 0" in result.stderr and "Traceback" not in result.stderr
