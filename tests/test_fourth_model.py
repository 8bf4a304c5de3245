"""A fourth model added by configuration alone (docs/models.md, "Add a model"): in a copy of the
repository, a params file (configs/fashion-mnist-wide.yaml: the Fashion-MNIST params with a
wider CNN and its own registered model) and one models.yaml entry, nothing under ml/ changed.
Then `dvc repro report@fashion-mnist-wide` trains, evaluates, registers, gates and reports it
under its own folders; `ml registry promote` makes it its registered model's champion; and
`ml serve --models fashion-mnist-wide` answers a PNG at /fashion-mnist-wide/predict over HTTP.

One model, one tiny training (600 images, one epoch): the three declared models' pipeline is
tests/evaluate/test_pipeline_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env, run_checked, run_ml
from tests.image_project import image_params
from tests.models_project import copy_models_project, ml
from tests.serve.conftest import free_port

NAME = "fashion-mnist-wide"
PARAMS = f"configs/{NAME}.yaml"
STAGES = ("ingest", "validate", "split", "train", "evaluate", "register", "gate", "report")
# Twice configs/fashion-mnist.yaml's widths ([32, 64]): a different model, same task code.
WIDE = [64, 128]
ENTRY = f"""
  # The Fashion-MNIST CNN at twice the width, its own registered model (added by a test).
  {NAME}:
    params: {PARAMS}
"""


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def wide_params() -> dict:
    """The Fashion-MNIST params, tiny (600 training and 200 test images, one epoch) and wider,
    registered as NAME. Floors a one-epoch CNN clears: the gate passes, so it can be promoted."""
    params = image_params(
        600,
        200,
        image={"conv_channels": WIDE, "augment": False},
        train={"epochs": 1, "num_workers": 1},
        gate={"floors": {"accuracy": 0.2, "f1_weighted": 0.1, "f1_macro": 0.05}},
        mlflow={"registered_model": NAME},
    )
    params["data"].pop("mirror")  # from ML_DATA_MIRROR_ROOT's fashion-mnist/, as in CI
    return params


@pytest.fixture
def fourth(project: Path, shared_data: Path) -> tuple[Path, dict[str, str]]:
    """The repository's pipeline, code and models, plus the fourth model's two pieces."""
    for item in ("dvc.yaml", "models.yaml", "ml"):
        source = REPO_ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / item)
    (project / PARAMS).write_text(yaml.safe_dump(wide_params(), sort_keys=False))
    with (project / "models.yaml").open("a") as handle:
        handle.write(ENTRY)
    env = cli_env(ML_DATA_MIRROR_ROOT=str(shared_data), GITHUB_ACTOR="e2e", GITHUB_SHA="e2e" * 10)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run(project, env, "dvc", "init", "-q")
    return project, env


def run(project: Path, env: dict[str, str], *command: str) -> str:
    return run_checked(command[0], command[1:], project, env, timeout=1800)


def read_json(project: Path, path: str) -> dict:
    return json.loads((project / path).read_text())


def check_reports(project: Path) -> None:
    reports = f"reports/{NAME}"
    meta = read_json(project, f"models/{NAME}/meta.json")
    assert meta["architecture"]["conv_channels"] == WIDE
    metrics = read_json(project, f"{reports}/metrics.json")
    assert metrics["num_samples"] == 200 and len(metrics["per_class"]) == 10
    assert read_json(project, f"{reports}/train.json")["run_id"]
    gate = read_json(project, f"{reports}/gate.json")
    assert gate["task"] == "image-classification" and gate["mode"] == "floors"
    assert gate["challenger"]["version"] == "1" and gate["passed"], gate["reasons"]
    comment = (project / f"{reports}/pr_comment.md").read_text()
    assert "_Task `image-classification`" in comment and "Gate passed" in comment
    # Its own folders only (beside DVC's .gitignore): the other models' stages did not run.
    for folder in ("data", "models", "reports"):
        names = sorted(p.name for p in (project / folder).iterdir() if p.name != ".gitignore")
        assert names == [NAME], folder


def png_of_first_test_image(project: Path) -> bytes:
    import numpy as np
    from PIL import Image

    with np.load(project / f"data/{NAME}/splits/test.npz") as split:
        first = split["images"][0]
    out = io.BytesIO()
    Image.fromarray(first).save(out, format="PNG")
    return out.getvalue()


def serve_and_predict(project: Path, env: dict[str, str]) -> tuple[dict, dict]:
    """`ml serve --models NAME` as a user runs it: its /healthz and one PNG's answer."""
    port = free_port()
    env = {**env, "ML_PREDICTION_LOG_DIR": str(project / "predictions")}
    command = ["serve", "--models", NAME, "--no-auth", "--runtime", "torch", "--port", str(port)]
    proc = subprocess.Popen(
        [str(BIN_DIR / "ml"), *command],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/{NAME}"
    try:
        health = wait_healthy(proc, url)
        png = png_of_first_test_image(project)
        headers = {"Content-Type": "image/png"}
        answer = requests.post(f"{url}/predict", data=png, headers=headers, timeout=120)
        problem = None if answer.status_code == 200 else f"predict: {answer.text}"
    except AssertionError as error:
        problem = str(error)
    output = stop(proc)
    if problem:
        pytest.fail(f"{problem}\n`ml {' '.join(command)}` printed:\n{output[-6000:]}")
    return health, answer.json()


def wait_healthy(proc: subprocess.Popen, url: str) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            response = requests.get(f"{url}/healthz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except requests.RequestException:  # not listening yet, or the app not deployed yet
            pass
        time.sleep(1)
    raise AssertionError(f"{url}/healthz did not answer 200 (exit code {proc.poll()})")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)  # Ctrl-C: ml serve shuts its Ray down
    try:
        return proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", *identity, *args], cwd=root, capture_output=True, check=True)


def test_the_pull_request_adding_the_model_trains_it_alone(tmp_path):
    """What pr.yml's matrix gets (`ml models affected`) for the how-to's change: the params
    file, the models.yaml entry, its Serve application and a docs line."""
    repo = copy_models_project(tmp_path / "repo")
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(REPO_ROOT / "deploy", repo / "deploy")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "three models")
    git(repo, "checkout", "-q", "-b", "add-model")
    (repo / PARAMS).write_text(yaml.safe_dump(wide_params(), sort_keys=False))
    with (repo / "models.yaml").open("a") as handle:
        handle.write(ENTRY)
    with (repo / "deploy/serve_config.yaml").open("a") as handle:
        handle.write(f"# the application {NAME}\n")
    (repo / "docs").mkdir()
    (repo / "docs/models.md").write_text(f"{NAME}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a fourth model")
    result = ml(repo, "models", "affected", "--base", "main", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["name"] == NAME
    assert {reason["path"] for reason in row["reasons"]} == {"models.yaml", PARAMS}


@pytest.mark.slow
def test_a_fourth_model_by_configuration_alone_is_trained_reported_and_served(fourth):
    project, env = fourth
    assert tree_digest(project / "ml") == tree_digest(REPO_ROOT / "ml")

    listed = json.loads(run(project, env, "ml", "models", "list", "--json"))
    (entry,) = [m for m in listed if m["name"] == NAME]
    assert entry["task"] == "image-classification" and entry["params"] == PARAMS
    assert entry["registered_model"] == NAME and len(listed) == 4

    output = run(project, env, "dvc", "repro", f"report@{NAME}")
    ran = set(re.findall(r"Running stage '([a-z]+@[a-z0-9-]+)'", output))
    assert ran == {f"{stage}@{NAME}" for stage in STAGES}
    check_reports(project)

    promoted = run_ml(
        ["--model", NAME, "registry", "promote", "--reason", "the fourth model's first"],
        cwd=project,
        env=env,
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    health, answer = serve_and_predict(project, env)
    assert health["model_name"] == NAME and str(health["model_version"]) == "1"
    labels = yaml.safe_load((REPO_ROOT / "configs/fashion-mnist.yaml").read_text())["data"]
    assert set(answer["probabilities"]) == set(labels["labels"])
    assert answer["label"] in labels["labels"]
    # Nothing under ml/ changed while it ran either (no generated code, no edited module).
    assert tree_digest(project / "ml") == tree_digest(REPO_ROOT / "ml")
