"""End to end: one `dvc repro` runs every declared model (dvc.yaml's STAGE@NAME copies) on tiny
params, from ingest to each model's PR comment; a second runs none of the cached stages; a
change to one model's params reruns that model only; `dvc metrics diff` shows every model;
and the outputs round-trip through the DVC remote.

One project for all of it: each check is a `dvc repro` of the same three models, and three
trainings are most of the time. Slow (Ray trains each model for one short epoch), still part of
the default run. Bad data stopping the pipeline: tests/data/test_dvc_pipeline.py and
tests/evaluate/test_image_pipeline.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, cli_env, run_checked
from tests.image_project import image_params

pytestmark = pytest.mark.slow

MODELS = ("madewithml", "medical-abstracts", "fashion-mnist")
STAGES = ("ingest", "validate", "split", "train", "evaluate", "register", "gate", "report")
# The registry-facing stages rerun on every `dvc repro` by design (dvc.yaml's always_changed).
ALWAYS = ("register", "gate", "report")
CACHED = tuple(s for s in STAGES if s not in ALWAYS)
PARAMS = {
    "madewithml": "params.yaml",
    "medical-abstracts": "configs/medical-abstracts.yaml",
    "fashion-mnist": "configs/fashion-mnist.yaml",
}


def dvc(project: Path, *args: str, env: dict[str, str]) -> str:
    return run_checked("dvc", args, project, env, timeout=2400)


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z]+@[a-z0-9-]+)'", output))


def write_tiny_params(project: Path) -> None:
    """Each model's params file, shrunk: one epoch on a stratified subset (every section a
    stage lists stays: DVC refuses a params file lacking one). The data come from
    ML_DATA_MIRROR_ROOT (each file's mirror_subdir), as in CI's multi-model jobs."""
    for name in ("madewithml", "medical-abstracts"):
        path = project / PARAMS[name]
        params = yaml.safe_load(path.read_text())
        params.setdefault("train", {}).update(epochs=1, num_workers=1)
        params.setdefault("model", {}).update(max_length=32)
        params.setdefault("split", {}).update(max_train_rows=200)
        if name == "medical-abstracts":
            params["split"]["max_holdout_rows"] = 150
        path.write_text(yaml.safe_dump(params, sort_keys=False))
    # 1,000 training and 300 test images of the real files.
    image = image_params(1000, 300, train={"epochs": 1, "num_workers": 1})
    image["data"].pop("mirror")
    (project / PARAMS["fashion-mnist"]).write_text(yaml.safe_dump(image, sort_keys=False))


@pytest.fixture
def three_models(project: Path, shared_data: Path) -> tuple[Path, dict[str, str]]:
    for item in ("dvc.yaml", "models.yaml", "ml"):
        source = REPO_ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / item)
    write_tiny_params(project)
    env = cli_env(ML_DATA_MIRROR_ROOT=str(shared_data), GITHUB_ACTOR="e2e", GITHUB_SHA="e2e" * 10)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q", env=env)
    shutil.copy(REPO_ROOT / ".dvc/config", project / ".dvc/config")
    return project, env


def read(project: Path, path: str):
    text = (project / path).read_text()
    return json.loads(text) if path.endswith(".json") else text


def check_text_model(project: Path) -> None:
    metrics = read(project, "reports/madewithml/metrics.json")
    assert metrics["num_samples"] == 191
    assert 0.0 <= metrics["f1_weighted"] <= 1.0 and set(metrics["per_class"]) == {
        "computer-vision",
        "mlops",
        "natural-language-processing",
        "other",
    }
    assert (project / "reports/madewithml/eval/predictions.csv").is_file()
    gate = read(project, "reports/madewithml/gate.json")
    assert gate["verdict"] in ("pass", "fail") and gate["mode"] == "floors"
    assert gate["challenger"]["version"] == "1" and gate["reasons"]
    comment = read(project, "reports/madewithml/pr_comment.md")
    assert comment.startswith("<!--") and "## Model report" in comment
    assert ("Gate passed" in comment) == gate["passed"]
    assert "```mermaid" in comment and len(comment) <= 65_536


def check_image_model(project: Path) -> None:
    metrics = read(project, "reports/fashion-mnist/metrics.json")
    assert metrics["num_samples"] == 300 and len(metrics["per_class"]) == 10
    assert "T-shirt/top" in metrics["per_class"] and "Ankle boot" in metrics["per_class"]
    assert set(metrics["slices"]) == {"dark", "bright", "tops", "footwear"}
    assert read(project, "reports/fashion-mnist/train.json")["run_id"]
    gate = read(project, "reports/fashion-mnist/gate.json")
    assert gate["verdict"] in ("pass", "fail") and gate["mode"] == "floors"
    assert gate["task"] == "image-classification" and gate["challenger"]["version"] == "1"
    # The gate scored the registered pyfunc on the same holdout the stage scored the model dir.
    challenger = gate["challenger"]["overall"]
    assert challenger["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert gate["passed"] == (metrics["accuracy"] >= 0.9 and metrics["f1_macro"] >= 0.9)
    comment = read(project, "reports/fashion-mnist/pr_comment.md")
    assert comment.startswith("<!--") and ("Gate passed" in comment) == gate["passed"]
    assert "_Task `image-classification`" in comment
    for section in ("### Per class", "### Slices", "Confusion matrix", "### Calibration"):
        assert section in comment
    assert "| T-shirt/top | 30 |" in comment and "footwear (classes Sandal, Sneaker" in comment
    assert "**not applicable**" in comment and len(comment) <= 65_536


def check_medical_model(project: Path) -> None:
    metrics = read(project, "reports/medical-abstracts/metrics.json")
    # Every row of its (stratified, about 150-row) holdout split is scored.
    import pandas as pd

    holdout = pd.read_csv(project / "data/medical-abstracts/splits/test.csv")
    assert metrics["num_samples"] == len(holdout) and 140 <= len(holdout) <= 150
    assert len(metrics["per_class"]) == 5
    gate = read(project, "reports/medical-abstracts/gate.json")
    # Its own registered model: version 1 there, not the default model's version 2.
    assert gate["challenger"]["version"] == "1" and gate["mode"] == "floors"
    comment = read(project, "reports/medical-abstracts/pr_comment.md")
    assert ("Gate passed" in comment) == gate["passed"]


def test_dvc_repro_runs_every_model_and_reruns_only_what_changed(three_models):
    project, env = three_models
    first = dvc(project, "repro", env=env)
    assert ran(first) == {f"{s}@{m}" for s in STAGES for m in MODELS}
    for model in MODELS:  # the stage order holds within each model
        order = [first.index(f"Running stage '{s}@{model}'") for s in STAGES]
        assert order == sorted(order), model
    check_text_model(project)
    check_image_model(project)
    check_medical_model(project)
    assert not (project / "reports/metrics.json").exists()  # nothing in the one-model layout
    shown = json.loads(dvc(project, "metrics", "show", "--json", env=env))
    assert "f1_weighted" in json.dumps(shown)

    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "repro"], cwd=project, check=True)

    # Nothing changed: no cached stage runs; only the registry-facing ones rerun, by design.
    second = dvc(project, "repro", env=env)
    assert ran(second) == {f"{s}@{m}" for s in ALWAYS for m in MODELS}
    for model in MODELS:
        for stage in CACHED:
            assert f"Stage '{stage}@{model}' didn't change" in second, (stage, model)

    # One model's params: that model's stage reading them reruns, no other model's.
    image = project / PARAMS["fashion-mnist"]
    params = yaml.safe_load(image.read_text())
    params.setdefault("evaluate", {})["ece_bins"] = 5
    image.write_text(yaml.safe_dump(params, sort_keys=False))
    third = dvc(project, "repro", env=env)
    assert ran(third) - {f"{s}@{m}" for s in ALWAYS for m in MODELS} == {"evaluate@fashion-mnist"}

    # Every model's metrics, against the committed run.
    diff = json.loads(dvc(project, "metrics", "diff", "--all", "--json", env=env))
    for model in MODELS:
        for name in ("metrics.json", "train_metrics.json"):
            assert f"reports/{model}/{name}" in diff, (model, name, sorted(diff))
    assert diff["reports/madewithml/metrics.json"]["f1_weighted"]["diff"] == 0

    # A split param reruns the split only (dvc repro of one stage), and the outputs round-trip
    # through the local remote: last, as `pull` restores the split's outputs only.
    text = project / PARAMS["madewithml"]
    params = yaml.safe_load(text.read_text())
    params["split"]["seed"] = 7
    text.write_text(yaml.safe_dump(params, sort_keys=False))
    fourth = dvc(project, "repro", "split@madewithml", env=env)
    assert ran(fourth) == {"split@madewithml"}
    expected = (project / "data/madewithml/splits/train.csv").read_bytes()
    dvc(project, "push", "split@madewithml", env=env)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc/cache")
    dvc(project, "pull", "split@madewithml", env=env)
    assert (project / "data/madewithml/splits/train.csv").read_bytes() == expected
