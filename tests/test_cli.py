"""The CLI surface: every command has working help, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

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


def test_the_installed_ml_command_has_help(tmp_path):
    result = run_ml(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: ml" in result.stdout


# In this process: the same Typer app the console script runs (checked above), without a
# Python start-up per command.
@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "ml")
def test_every_command_has_help(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="ml")
    assert result.exit_code == 0, result.output
    assert "Usage: ml" in result.output


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


def test_run_stage_is_the_one_place_errors_become_exit_codes():
    import typer

    from ml.cli.common import run_stage
    from ml.config import ConfigError
    from ml.errors import UserError

    class Refused(UserError):
        exit_code = 7

    def stage(exc: Exception | None = None, value: int = 0) -> int:
        if exc is not None:
            raise exc
        return value

    assert run_stage(stage, None, value=3) == 3
    cases = [
        (Refused("no"), None, 7),
        (Refused("no"), 4, 4),  # a command that documents its own code
        (ConfigError("bad key"), None, 2),
        (UserError("fix it"), None, 1),
        (FileNotFoundError("gone"), None, 1),
    ]
    for exc, code, expected in cases:
        with pytest.raises(typer.Exit) as raised:
            run_stage(stage, exc, exit_code=code)
        assert raised.value.exit_code == expected, exc
    with pytest.raises(ZeroDivisionError):  # a bug stays a traceback
        run_stage(stage, ZeroDivisionError("bug"))


def test_an_mlflow_refusal_is_one_line():
    from mlflow.exceptions import MlflowException

    from ml.cli.common import run_stage

    def refused() -> None:
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such model")

    def command() -> None:
        run_stage(refused)

    runner_app = typer_app(command)
    result = CliRunner().invoke(runner_app, [])
    assert result.exit_code == 1
    assert "MLflow: RESOURCE_DOES_NOT_EXIST" in result.output and "Traceback" not in result.output


def typer_app(command):
    import typer

    one = typer.Typer()
    one.command()(command)
    return one


def test_predict_batch_is_a_sub_command_and_plain_inputs_route_to_predict_inputs(tmp_path):
    names = {" ".join(p) for p in command_paths()}
    assert {"predict inputs", "predict batch"} <= names
    usage = run_ml(["predict", "batch"], tmp_path)
    assert usage.returncode == 2 and "Missing argument 'INPUT'" in usage.stderr
    # `ml predict TEXT` reaches `predict inputs`, which reads the params (none here: exit 2).
    routed = run_ml(["predict", "some text", "--model", "models:/m@champion"], tmp_path)
    assert routed.returncode == 2 and "params file not found" in routed.stderr
    group_help = run_ml(["predict", "--help"], tmp_path)
    assert "inputs" in group_help.stdout and "batch" in group_help.stdout


def test_python_dash_m_runs_the_same_app(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ml.cli", "config", "show"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "params file not found" in result.stderr


def test_every_stage_the_cli_imports_exists():
    """Commands import their stages inside the function (to keep `ml --help` light), so a stage
    renamed or moved would only fail when the command runs; check every such import here."""
    import ast
    import importlib

    missing = []
    for path in sorted((REPO_ROOT / "ml" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ml")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.name}: from {node.module} import {alias.name}")
    assert not missing, missing
