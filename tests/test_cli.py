"""The CLI surface: every command has working help, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.main import get_command

from ml.cli import app
from tests.conftest import REPO_ROOT, cli_env, run_ml

HEAVY_MODULES = ("ray", "torch", "mlflow", "evidently", "transformers", "pandas", "sklearn")


def command_paths() -> list[list[str]]:
    """Every command and sub-command path of the CLI, e.g. ['data', 'ingest']."""
    paths: list[list[str]] = []

    def walk(command, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(get_command(app), [])
    return paths


def test_cli_import_keeps_heavy_libraries_out():
    code = (
        "import sys, json, ml.cli; "
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "ml")
def test_every_command_has_help(path, tmp_path):
    result = run_ml([*path, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: ml" in result.stdout


def test_expected_areas_exist():
    names = {" ".join(p) for p in command_paths()}
    assert {"config show", "data ingest", "data validate", "data split"} <= names


def test_config_show_reports_sources(project):
    env = cli_env(MLFLOW_TRACKING_URI="http://127.0.0.1:5999", ML_DATA_MIRROR="/srv/mirror")
    result = run_ml(["config", "show", "--json"], project, env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows["mlflow.tracking_uri"] == {
        "value": "http://127.0.0.1:5999",
        "source": "env MLFLOW_TRACKING_URI",
    }
    assert rows["data.mirror"]["source"] == "env ML_DATA_MIRROR"
    assert rows["data.train_file"] == {"value": "dataset.csv", "source": "params.yaml"}
    assert rows["data.raw_dir"]["source"] == "default"


def test_bad_params_file_is_a_clear_error(tmp_path):
    missing = run_ml(["config", "show"], tmp_path)
    assert missing.returncode == 2 and "params file not found" in missing.stderr
    (tmp_path / "params.yaml").write_text("data:\n  source: x\n  train_fil: typo.csv\n")
    typo = run_ml(["config", "show"], tmp_path)
    assert typo.returncode == 2
    assert "data.train_fil" in typo.stderr and "Traceback" not in typo.stderr
