"""End to end: `dvc repro` of the image task (configs/fashion-mnist.yaml) on a stratified subset
of the real Fashion-MNIST files, from ingest to the PR comment; and validation stopping the
pipeline before the split for corrupted files.

Slow (Ray trains the CNN for one epoch on 900 images), still part of the default run.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env
from tests.image_project import image_params, mirror_dir

pytestmark = pytest.mark.slow

STAGES = ("ingest", "validate", "split", "train", "evaluate", "register", "gate", "report")
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
    each to be in the file. The mirror comes from ML_DATA_MIRROR, as in CI."""
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
    write_params(project)
    env = cli_env(ML_DATA_MIRROR=str(mirror_dir()), GITHUB_ACTOR="e2e", GITHUB_SHA="e2e" * 10)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert dvc(project, "init", "-q", env=env).returncode == 0
    return project, env


def test_dvc_repro_runs_the_image_pipeline_to_the_pr_comment(image_dvc_project):
    project, env = image_dvc_project
    result = dvc(project, "repro", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert [s for s in STAGES if f"Running stage '{s}'" in output] == list(STAGES)

    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["num_samples"] == 300 and len(metrics["per_class"]) == 10
    assert "T-shirt/top" in metrics["per_class"] and "Ankle boot" in metrics["per_class"]
    assert set(metrics["slices"]) == {"dark", "bright", "tops", "footwear"}
    train = json.loads((project / "reports/train.json").read_text())
    assert train["run_id"]

    gate = json.loads((project / "reports/gate.json").read_text())
    assert gate["verdict"] in ("pass", "fail") and gate["mode"] == "floors"
    assert gate["task"] == "image-classification" and gate["challenger"]["version"] == "1"
    # The gate scored the registered pyfunc on the same holdout the stage scored the model dir.
    challenger = gate["challenger"]["overall"]
    assert challenger["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert gate["passed"] == (metrics["accuracy"] >= 0.9 and metrics["f1_macro"] >= 0.9)

    comment = (project / "reports/pr_comment.md").read_text()
    assert comment.startswith("<!--") and ("Gate passed" in comment) == gate["passed"]
    assert "_Task `image-classification`" in comment
    for section in ("### Per class", "### Slices", "Confusion matrix", "### Calibration"):
        assert section in comment
    assert "| T-shirt/top | 30 |" in comment and "footwear (classes Sandal, Sneaker" in comment
    assert "**not applicable**" in comment and len(comment) <= 65_536


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
    assert "Running stage 'split'" not in output and not (project / "data/splits").exists()

    # A truncated gzip stream is named too (not a traceback). DVC cannot see the mirror's
    # files change (ML_DATA_MIRROR is not a dependency), so ingest is forced.
    (corrupt / FILES["test_labels"]).write_bytes(
        gzip.compress(np.zeros(10, np.uint8).tobytes())[:-6]
    )
    result = dvc(
        project, "repro", "--force", "validate", env={**env, "ML_DATA_MIRROR": str(corrupt)}
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "[bad_gzip]" in output, output[-4000:]
    assert "Traceback" not in output
