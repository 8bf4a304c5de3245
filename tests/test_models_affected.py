"""Which declared models a change affects (ml/models/affected.py): the rules on path lists
(examples and hypothesis properties) and `ml models affected` on a real git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.models import MODELS_FILE, Catalog, Model
from ml.models.affected import RULES, affected_models, lock_changes, rule_for
from tests.conftest import REPO_ROOT, run_ml
from tests.models_project import ALL, TEXT, catalog, copy_models_project, ml


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_models_project(tmp_path / "repo")


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
        ("data/raw.dvc", []),  # the one-model layout: each model reads data/NAME/raw
        ("data/madewithml/raw.dvc", ["madewithml"]),
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
    # Data kept inside shared code is still shared code: every model, and why for each.
    fixture = Model("fx", "configs/fx.yaml", "text-classification", ("ml/fx",))
    inside = Catalog((other, fixture), "tc")
    assert affected_models(inside, ["ml/fx/a.csv"]) == {
        "tc": [{"path": "ml/fx/a.csv", "why": "shared code"}],
        "fx": [
            {"path": "ml/fx/a.csv", "why": "its data: a file in ml/fx"},
            {"path": "ml/fx/a.csv", "why": "shared code"},
        ],
    }


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
    result = ml(root, "models", "affected", "--base", "main", "--json", *extra)
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
    text = run_ml(["models", "affected", "--base", "main"], repo)  # the console script
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
    assert "no model is affected" in ml(repo, "models", "affected", "--base", "main").stdout


def test_affected_names_a_ref_git_cannot_find(repo):
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"x.txt": "x"}, "base")
    result = ml(repo, "models", "affected", "--base", "origin/nosuch")
    assert result.returncode == 2
    assert "git merge-base" in result.stderr or "git diff" in result.stderr
    assert "fetch-depth: 0" in result.stderr and "Traceback" not in result.stderr


def test_the_docs_table_names_every_rule():
    page = (REPO_ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    missing = [rule.pattern for rule in RULES if f"`{rule.pattern}`" not in page]
    assert missing == [], f"docs/models.md does not explain {missing}"


def test_a_move_out_of_shared_code_names_both_sides(repo):
    """Rename detection would name only tests/loop.py (no model); the shared file is gone too."""
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"ml/train/loop.py": "x = 1\n" * 50}, "base")
    git(repo, "checkout", "-q", "-b", "move")
    (repo / "tests").mkdir()
    git(repo, "mv", "ml/train/loop.py", "tests/loop.py")
    git(repo, "commit", "-q", "-m", "move")
    assert affected(repo) == {name: ["ml/train/loop.py"] for name in ALL}
