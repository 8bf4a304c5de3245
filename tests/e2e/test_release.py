"""The release workflow (release.yml) under act, on the two-node loopback cluster: a tag deploys
every declared model as one application of one Serve instance (/NAME), smoke-tests each over
HTTP, and a corrupted version of one model is rolled back alone (docs/runbooks/rollback.md).

What main leaves in the registry for a merge (per model: a version trained from the commit by a
run of the trusted experiment, gate passed) is made here from tiny real models trained in this
process (seconds each, no Ray), logged as `ml train` logs them; main.yml's own run is not what
these tests are about, and training three models under act would cost CI minutes. One cluster,
one registry and one act repository serve the whole package (conftest.py); the tests share
state in order: the first release makes the champions the others must leave or move.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import ActRepo, git, run_act, tag_event

pytestmark = [pytest.mark.slow, pytest.mark.integration]
SERVE_TOKEN = "e2e-serve-token"


def registry(repo: ActRepo) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=repo.mlflow_uri)


def declared(repo: ActRepo) -> dict[str, Any]:
    """name -> its settings in the act repository, as the production release job reads them."""
    from ml.config import load_settings
    from ml.models import load_models

    found = {}
    for model in load_models(repo.root).models:
        settings = load_settings(repo.root / model.params, environ={"ML_TIER": "production"})
        settings.root = repo.root
        found[model.name] = settings
    return found


def _call(repo: ActRepo, path: str, payload: tuple[bytes, str] | None = None) -> dict:
    data, content_type = payload or (None, "application/json")
    request = urllib.request.Request(
        f"http://127.0.0.1:{repo.serve_port}{path}", data=data,
        headers={"Authorization": f"Bearer {SERVE_TOKEN}", "Content-Type": content_type},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def served(repo: ActRepo, name: str) -> str:
    return str(_call(repo, f"/{name}/model")["version"])


def predicts(repo: ActRepo, name: str, settings: Any) -> list[str]:
    """POST /NAME/predict with the model's task's smoke request; the labels it answers."""
    from ml.tasks import task_of

    answer = _call(repo, f"/{name}/predict", task_of(settings).smoke_request(settings))
    return [p["label"] for p in answer["predictions"]]


def champion(repo: ActRepo, settings: Any) -> str | None:
    from ml.registry import CHAMPION, alias_version

    found = alias_version(registry(repo), settings.mlflow.registered_model, CHAMPION)
    return str(found.version) if found else None


def register(repo: ActRepo, settings: Any, model_dir: Path, commit: str) -> str:
    """A version as main's `ml registry register` + `ml gate` leave it: the model logged by a
    run of the trusted experiment from `commit`, gate passed against the current champion."""
    import mlflow

    from ml.train.pyfunc import log_pyfunc_model

    mlflow.set_tracking_uri(repo.mlflow_uri)
    mlflow.set_registry_uri(repo.mlflow_uri)
    mlflow.set_experiment(settings.mlflow.experiment)
    tags = {"git_sha": commit, "mlflow.source.git.commit": commit}
    with mlflow.start_run(tags=tags):
        uri = log_pyfunc_model(model_dir)
    gate = {"gate.status": "passed", "gate.champion_version": champion(repo, settings) or "none"}
    name = settings.mlflow.registered_model
    return str(mlflow.register_model(uri, name, tags={"git_sha": commit, **gate}).version)


def register_corrupt(repo: ActRepo, settings: Any, commit: str, base: Path) -> str:
    """A version of main's own experiment from `commit` whose model has no weights."""
    client = registry(repo)
    broken = base / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    experiment = client.get_experiment_by_name(settings.mlflow.experiment).experiment_id
    run = client.create_run(experiment, run_name="broken", tags={"git_sha": commit})
    client.log_artifacts(run.info.run_id, str(broken), "model")
    client.set_terminated(run.info.run_id)
    tags = {"git_sha": commit, "gate.status": "passed",
            "gate.champion_version": champion(repo, settings)}  # fmt: skip
    version = client.create_model_version(
        settings.mlflow.registered_model, f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id, tags=tags,
    )  # fmt: skip
    return str(version.version)


def tiny_models(base: Path) -> dict[str, Path]:
    """A real model dir per declared model: the two text models' heads trained on a few rows of
    their own data, the CNN for a few steps on 200 Fashion-MNIST images."""
    from tests.conftest import shared_data_dir
    from tests.evaluate.tiny import build_tiny_model
    from tests.image_project import make_image_project, train_tiny_image_model

    medical = shared_data_dir() / "medical-abstracts" / "train.csv"
    project = make_image_project(base / "image", train_rows=200, holdout_rows=50)
    return {
        "madewithml": build_tiny_model(base / "madewithml", steps=20),
        "medical-abstracts": build_tiny_model(base / "medical", steps=20, data_file=medical),
        "fashion-mnist": train_tiny_image_model(project, steps=10),
    }


@pytest.fixture(scope="module")
def release_repo(act_repo: ActRepo, tmp_path_factory) -> tuple[ActRepo, dict, dict]:
    """The act repository with production's secrets, replicas that fit three applications (and
    one rolling update) on two 1-CPU nodes, and a tiny model per declared model."""
    repo = act_repo
    # The release job's secrets, as the `production` environment holds them (act reads
    # ./.secrets); serving fails closed, so without the token nothing deploys.
    (repo.root / ".secrets").write_text(f"ML_SERVE_TOKEN={SERVE_TOKEN}\n")
    for params in ("configs/medical-abstracts.yaml", "configs/fashion-mnist.yaml"):
        path = repo.root / params
        raw = yaml.safe_load(path.read_text())
        raw.setdefault("serve", {}).update(num_cpus_per_replica=0.5)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    if git(repo.root, "status", "--porcelain", "--untracked-files=no"):
        git(repo.root, "commit", "-qam", "serve: three applications fit the loopback cluster")
    return repo, declared(repo), tiny_models(tmp_path_factory.mktemp("tiny-models"))


def release(repo: ActRepo, cluster, tag: str):
    result = run_act(repo, cluster, "push", "release.yml", tag_event(repo, tag))
    return result, result.stdout + result.stderr


def test_a_tag_deploys_every_model_as_one_serve_config(release_repo, cluster):
    repo, models, dirs = release_repo
    head = git(repo.root, "rev-parse", "HEAD")
    versions = {name: register(repo, models[name], dirs[name], head) for name in models}
    result, log = release(repo, cluster, "v0.1.0")
    assert result.returncode == 0, log[-8000:]
    assert "released v0.1.0" in log
    for name, settings in models.items():
        assert f"{name}: released: v{versions[name]} (" in log
        assert champion(repo, settings) == versions[name]
        assert served(repo, name) == versions[name]
        assert predicts(repo, name, settings)  # each application answers /NAME/predict
    assert log.count("auth: a request without the token got 401") >= len(models)


def test_a_tag_on_a_branch_commit_is_refused(release_repo, cluster):
    """A tag on a commit main never merged, with a version registered for it as main would:
    the release job refuses before anything moves, for every model."""
    repo, models, dirs = release_repo
    before = {name: champion(repo, settings) for name, settings in models.items()}
    git(repo.root, "checkout", "-q", "-b", "unmerged")
    git(repo.root, "commit", "-q", "--allow-empty", "-m", "never merged")
    sha = git(repo.root, "rev-parse", "HEAD")
    try:
        register(repo, models["madewithml"], dirs["madewithml"], sha)
        result, log = release(repo, cluster, "v0.1.1")
    finally:
        git(repo.root, "checkout", "-q", "main")
    assert result.returncode != 0
    assert f"commit {sha[:12]} is not on main (main)" in log, log[-6000:]
    for name, settings in models.items():
        assert champion(repo, settings) == before[name]
        assert served(repo, name) == before[name]


def test_a_corrupted_version_of_one_model_is_rolled_back_alone(release_repo, cluster, tmp_path):
    """A new commit on main: the text models retrained fine, fashion-mnist's registered model is
    corrupt (no weights). Its deploy fails, so its application and alias go back to the
    previous champion; the text models are released; the job fails."""
    repo, models, dirs = release_repo
    before = {name: champion(repo, settings) for name, settings in models.items()}
    git(repo.root, "commit", "-q", "--allow-empty", "-m", "a release with a broken image model")
    head = git(repo.root, "rev-parse", "HEAD")
    texts = ("madewithml", "medical-abstracts")
    new = {name: register(repo, models[name], dirs[name], head) for name in texts}
    broken = register_corrupt(repo, models["fashion-mnist"], head, tmp_path)
    result, log = release(repo, cluster, "v0.2.0")
    assert result.returncode != 0
    assert "release v0.2.0 failed for some models" in log, log[-8000:]
    assert f"fashion-mnist: rolled back: release v0.2.0 of version {broken} failed" in log
    assert f"rolled back to version {before['fashion-mnist']}, which is live" in log
    for name in texts:
        assert f"{name}: released: v{new[name]} (champion v{before[name]})" in log
    expected = {**new, "fashion-mnist": before["fashion-mnist"]}
    for name, settings in models.items():
        assert champion(repo, settings) == expected[name]
        assert served(repo, name) == expected[name]
        assert predicts(repo, name, settings)
