"""End to end: `dvc repro` on the Made-With-ML data, from ingest to the PR comment.

Slow (it trains for one short epoch with Ray), still part of the default run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env

pytestmark = pytest.mark.slow


def test_dvc_repro_produces_metrics_gate_decision_and_report(project: Path, shared_data: Path):
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    if "train" not in pipeline:
        pytest.fail("dvc.yaml has no `train` stage yet: evaluate has no model to read")
    for item in ("dvc.yaml", "ml"):
        source = REPO_ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / item)
    params = yaml.safe_load((project / "params.yaml").read_text())
    # One short epoch on a stratified 200 of the training rows (every holdout row is still
    # scored): this test checks the wiring, not the model's quality.
    params.setdefault("train", {}).update(epochs=1, num_workers=1)
    params.setdefault("model", {}).update(max_length=32)
    params.setdefault("split", {}).update(max_train_rows=200)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = cli_env(ML_DATA_MIRROR=str(shared_data / "madewithml"), GITHUB_ACTOR="e2e")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([str(BIN_DIR / "dvc"), "init", "-q"], cwd=project, env=env, check=True)

    result = subprocess.run(
        [str(BIN_DIR / "dvc"), "repro"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["num_samples"] == 191
    assert 0.0 <= metrics["f1_weighted"] <= 1.0 and set(metrics["per_class"]) == {
        "computer-vision",
        "mlops",
        "natural-language-processing",
        "other",
    }
    assert (project / "reports/eval/predictions.csv").is_file()
    gate = json.loads((project / "reports/gate.json").read_text())
    assert gate["verdict"] in ("pass", "fail") and gate["mode"] == "floors"
    assert gate["challenger"]["version"] == "1" and gate["reasons"]
    comment = (project / "reports/pr_comment.md").read_text()
    assert comment.startswith("<!--") and "## Model report" in comment
    assert ("Gate passed" in comment) == gate["passed"]
    assert "```mermaid" in comment and len(comment) <= 65_536
    shown = subprocess.run(
        [str(BIN_DIR / "dvc"), "metrics", "show", "--json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "f1_weighted" in shown.stdout
