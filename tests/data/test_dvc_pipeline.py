"""The data stages through a real DVC repo: reruns only what changed, stops on bad data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env

DATA_STAGES = ("ingest", "validate", "split")


def dvc(project: Path, *args: str, env: dict[str, str], check: bool = True):
    result = subprocess.run(
        [str(BIN_DIR / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def ran_stages(output: str) -> list[str]:
    return [s for s in DATA_STAGES if f"Running stage '{s}'" in output]


@pytest.fixture
def dvc_project(project: Path, shared_data: Path) -> tuple[Path, dict[str, str]]:
    for item in ("dvc.yaml", "ml"):
        source = REPO_ROOT / item
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, project / item)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = cli_env(ML_DATA_MIRROR=str(shared_data / "madewithml"))
    dvc(project, "init", "-q", env=env)
    shutil.copy(REPO_ROOT / ".dvc/config", project / ".dvc/config")
    return project, env


def test_repro_twice_runs_each_stage_once_and_outputs_round_trip_through_the_remote(
    dvc_project,
):
    # One project for both checks: a `dvc repro` of the data stages is most of each.
    project, env = dvc_project
    first = dvc(project, "repro", "split", env=env)
    assert ran_stages(first.stdout) == list(DATA_STAGES)
    second = dvc(project, "repro", "split", env=env)
    assert ran_stages(second.stdout) == []

    # A split param change reruns the split only.
    params = (project / "params.yaml").read_text().replace("seed: 42", "seed: 7")
    (project / "params.yaml").write_text(params)
    third = dvc(project, "repro", "split", env=env)
    assert ran_stages(third.stdout) == ["split"]

    # The outputs round-trip through the local remote. Only the stages that ran have outputs
    # to share (dvc.yaml also declares train and later); last, as `pull split` restores
    # the split's outputs only.
    expected = (project / "data/splits/train.csv").read_bytes()
    dvc(project, "push", "split", env=env)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc/cache")
    dvc(project, "pull", "split", env=env)
    assert (project / "data/splits/train.csv").read_bytes() == expected


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
    result = dvc(project, "repro", "split", env=env, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for kind in ("too_few_examples", "text_too_long", "unknown_label"):
        assert f"[{kind}]" in output, output
    assert not (project / "data/splits").exists()
