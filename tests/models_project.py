"""The repository's models.yaml and params files in a throwaway folder, for the models tests."""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from ml.cli import app
from ml.models import MODELS_FILE, Catalog, load_models
from tests.conftest import REPO_ROOT

ALL = ["madewithml", "medical-abstracts", "fashion-mnist"]
TEXT = ["madewithml", "medical-abstracts"]


def copy_models_project(root: Path) -> Path:
    """ROOT holding models.yaml, params.yaml and configs/ as the repository has them."""
    root.mkdir()
    for name in (MODELS_FILE, "params.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    return root


@functools.cache
def catalog() -> Catalog:
    """The repository's own model list (read once: the property tests call it per example)."""
    return load_models(REPO_ROOT)


def ml(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ml ARGS` run in ROOT in-process (the app the console script runs; no interpreter start).
    An exception the CLI did not turn into a message and exit code is raised here."""
    with contextlib.chdir(root):
        result = CliRunner().invoke(app, list(args), prog_name="ml")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)
