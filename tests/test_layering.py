"""The layering contracts in pyproject.toml ([tool.importlinter]), checked by import-linter.

A task is a plug-in: shared stages reach it only through ml.tasks (get_task / task_of) and
ml.tasks.base, and a task never imports the apps built on top of it. These tests run the real
`lint-imports` on the repository, check the contracts name every module, and break each
contract in a copy of the package to show it can fail.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR, REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"


def contracts() -> dict[str, dict]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's ml, not the installed one
    return subprocess.run(
        [str(BIN_DIR / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def top_level_modules() -> set[str]:
    return {f"ml.{info.name}" for info in pkgutil.iter_modules([str(REPO_ROOT / "ml")])}


def test_the_repository_keeps_its_layering():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(contracts())} kept, 0 broken" in result.stdout


def test_the_contracts_name_every_top_level_module():
    """A new stage or module is covered without anyone remembering to add it."""
    modules = top_level_modules()
    assert {"ml.tasks", "ml.errors", "ml.cli", "ml.train"} <= modules
    stages = contracts()["stages-reach-tasks-through-the-registry"]
    assert set(stages["source_modules"]) == modules - {"ml.tasks", "ml.errors"}
    leaf = contracts()["errors-is-a-leaf"]
    assert set(leaf["forbidden_modules"]) == modules - {"ml.errors"}
    tasks = set(pkgutil.iter_modules([str(REPO_ROOT / "ml" / "tasks")]))
    packages = {f"ml.tasks.{info.name}" for info in tasks if info.ispkg}
    assert set(contracts()["stages-reach-tasks-through-the-registry"]["forbidden_modules"]) == (
        packages
    )
    assert set(contracts()["tasks-are-independent"]["modules"]) == packages


def test_the_pre_commit_hook_runs_the_contracts():
    config = (REPO_ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    assert "id: lint-imports" in config and "entry: lint-imports" in config


# (module to edit, the import added, the contract it breaks)
VIOLATIONS = [
    ("ml/tasks/text_classification/evaluation.py", "import ml.serve.app", "tasks-stay-below"),
    ("ml/tasks/image_classification/data.py", "import ml.cli.common", "tasks-stay-below"),
    ("ml/tasks/base.py", "import ml.monitor.retrain", "tasks-stay-below"),
    ("ml/evaluate/slices.py", "import ml.tasks.text_classification", "stages-reach-tasks"),
    ("ml/serve/batch.py", "import ml.tasks.image_classification.model", "stages-reach-tasks"),
    ("ml/tasks/image_classification/cnn.py", "import ml.tasks.text_classification", "tasks-are"),
    ("ml/errors.py", "import ml.config", "errors-is-a-leaf"),
]


@pytest.mark.parametrize("path, line, contract", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_a_forbidden_import_breaks_its_contract(tmp_path, path, line, contract):
    shutil.copytree(REPO_ROOT / "ml", tmp_path / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    module = tmp_path / path
    module.write_text(module.read_text(encoding="utf-8") + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    name = next(c["name"] for i, c in contracts().items() if i.startswith(contract))
    assert f"{name} BROKEN" in result.stdout
    importer = path.removesuffix(".py").replace("/", ".")
    assert importer in result.stdout  # the report names the offending module
