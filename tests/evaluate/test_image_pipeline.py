"""`dvc repro` of the image task (configs/fashion-mnist.yaml) in a project declaring only that
model: validation stops the pipeline before the split for corrupted files.

The image model's run from ingest to the PR comment is part of the three-model `dvc repro` in
tests/evaluate/test_pipeline_e2e.py (one project for every model keeps CI's time down).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env
from tests.image_project import image_params, mirror_dir

pytestmark = pytest.mark.slow

MODEL = "fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def dvc(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "dvc"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def write_params(project: Path, **sections) -> None:
    """params.yaml = configs/fashion-mnist.yaml (1,000 train / 300 test images, one epoch) with
    every other section at its default: dvc.yaml names params of every stage, and DVC requires
    each to be in the file. The mirror comes from ML_DATA_MIRROR (one model), as in CI."""
    from ml.config import Settings

    params = image_params(1000, 300, train={"epochs": 1, "num_workers": 1}, **sections)
    params["data"].pop("mirror")
    resolved = Settings.model_validate(params).as_dict()
    resolved["data"].pop("mirror")
    (project / "params.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


@pytest.fixture
def image_dvc_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    project.mkdir()
    for item in ("dvc.yaml", "ml", "configs"):
        source = REPO_ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / item)
    # The image model alone: dvc.yaml's stages become STAGE@fashion-mnist, reading params.yaml.
    models = {"default": MODEL, "models": {MODEL: {"params": "params.yaml"}}}
    (project / "models.yaml").write_text(yaml.safe_dump(models))
    write_params(project)
    env = cli_env(ML_DATA_MIRROR=str(mirror_dir()), GITHUB_ACTOR="e2e", GITHUB_SHA="e2e" * 10)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert dvc(project, "init", "-q", env=env).returncode == 0
    return project, env


def corrupt_mirror(folder: Path) -> None:
    """The real files with one problem of several kinds each, written back as IDX gzip."""
    from ml.tasks.image_classification import idx

    folder.mkdir()
    arrays = {k: idx.read(mirror_dir() / name).copy() for k, name in FILES.items()}
    arrays["train_labels"][0] = 12  # unknown_label
    arrays["train_images"][1] = 0  # blank_image
    arrays["train_images"][3] = arrays["train_images"][2]  # duplicate_image
    arrays["test_images"][0] = arrays["train_images"][5]  # leakage_image
    for key, name in FILES.items():
        idx.write(folder / name, arrays[key])


def test_validation_stops_the_image_pipeline(image_dvc_project, tmp_path: Path):
    project, env = image_dvc_project
    corrupt = tmp_path / "corrupt"
    corrupt_mirror(corrupt)
    # The corrupted copies have other checksums: drop the pinned ones for this test.
    write_params(project, data={"sha256": {}})
    result = dvc(project, "repro", env={**env, "ML_DATA_MIRROR": str(corrupt)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for kind in ("unknown_label", "blank_image", "duplicate_image", "leakage_image"):
        assert f"[{kind}]" in output, output[-4000:]
    assert "Running stage 'validate@fashion-mnist'" in output
    assert "Running stage 'split@" not in output
    assert not (project / "data" / MODEL / "splits").exists()

    # A truncated gzip stream is named too (not a traceback). DVC cannot see the mirror's
    # files change (ML_DATA_MIRROR is not a dependency), so ingest is forced.
    (corrupt / FILES["test_labels"]).write_bytes(
        gzip.compress(np.zeros(10, np.uint8).tobytes())[:-6]
    )
    result = dvc(
        project,
        "repro",
        "--force",
        f"validate@{MODEL}",
        env={**env, "ML_DATA_MIRROR": str(corrupt)},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "[bad_gzip]" in output, output[-4000:]
    assert "Traceback" not in output
