"""The data stages through a real DVC repo: bad data stop the pipeline before the split.

Reruns of only what changed, and the outputs' round trip through the remote, are checked on
the three-model project of tests/evaluate/test_pipeline_e2e.py (one `dvc repro` for both)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env


def dvc(project: Path, *args: str, env: dict[str, str], check: bool = True):
    result = subprocess.run(
        [str(BIN_DIR / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def dvc_project(project: Path, shared_data: Path) -> tuple[Path, dict[str, str]]:
    for item in ("dvc.yaml", "models.yaml", "ml"):
        source = REPO_ROOT / item
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, project / item)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = cli_env(ML_DATA_MIRROR=str(shared_data / "madewithml"))
    dvc(project, "init", "-q", env=env)
    shutil.copy(REPO_ROOT / ".dvc/config", project / ".dvc/config")
    return project, env


def test_corrupted_data_stops_the_pipeline_before_split(dvc_project, tmp_path, shared_data):
    project, env = dvc_project
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    train = pd.read_csv(shared_data / "madewithml/dataset.csv")
    train.loc[0, "tag"] = "not-a-class"  # one example only: too_few_examples
    train.loc[1, "description"] = "x" * 30000  # text_too_long
    train.to_csv(corrupt / "dataset.csv", index=False)
    holdout = pd.read_csv(shared_data / "madewithml/holdout.csv")
    holdout.loc[0, "tag"] = "quantum-computing"  # unknown_label: never seen in training
    holdout.to_csv(corrupt / "holdout.csv", index=False)
    params = (project / "params.yaml").read_text()
    # The corrupted copies have other checksums: drop the pinned ones for this test.
    params = "\n".join(line for line in params.splitlines() if ".csv: " not in line) + "\n"
    (project / "params.yaml").write_text(params)

    env = {**env, "ML_DATA_MIRROR": str(corrupt)}
    result = dvc(project, "repro", "split@madewithml", env=env, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for kind in ("too_few_examples", "text_too_long", "unknown_label"):
        assert f"[{kind}]" in output, output
    assert "Running stage 'validate@madewithml'" in output
    assert "Running stage 'split@" not in output
    assert not (project / "data/madewithml/splits").exists()
