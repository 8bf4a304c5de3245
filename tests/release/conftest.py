"""A release-ready project: a real git repository (main, plus a branch main never merged), a real
MLflow registry in a SQLite file, and versions registered as `ml registry register` and
`ml gate` leave them (a pyfunc model logged by a run in the trusted experiment)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.release.fake_serve import FakeServe

MODEL = "tag-classifier"
TRUSTED = "tag-classifier"  # params.yaml mlflow.experiment
TOKEN = "release-test-token"


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def _echo_model() -> Any:
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any) -> Any:
            return model_input

    return Echo()


@dataclass
class Project:
    root: Path
    tracking_uri: str
    commits: dict[str, str] = field(default_factory=dict)  # name -> sha

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def settings(self) -> Any:
        from ml.config import load_settings

        return load_settings(self.root / "params.yaml")

    def commit(self, name: str, branch: str = "main") -> str:
        git(self.root, "checkout", "-q", branch)
        (self.root / "change.txt").write_text(name)
        git(self.root, "add", "change.txt")
        git(self.root, "commit", "-qm", name)
        self.commits[name] = git(self.root, "rev-parse", "HEAD")
        git(self.root, "checkout", "-q", "main")
        return self.commits[name]

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # Artifacts inside the test's folder, never ./mlruns of whoever runs the tests.
        location = (self.root / "mlruns" / name).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def register(
        self,
        commit: str,
        against: str | None = None,
        *,
        experiment: str = TRUSTED,
        run_commit: str | None = None,
        gate: str = "passed",
        model: str = MODEL,
    ) -> str:
        """A version of MODEL for `commit`, trained by a run of `experiment` from `run_commit`
        (default: `commit`), gated `gate` against champion `against`."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        trained_from = run_commit or commit
        run_tags = {"git_sha": trained_from, "mlflow.source.git.commit": trained_from}
        with mlflow.start_run(experiment_id=self.experiment(experiment), tags=run_tags):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=_echo_model(), pip_requirements=[]
            )
        tags = {"git_sha": commit, "gate.status": gate, "gate.champion_version": against or "none"}
        return str(mlflow.register_model(info.model_uri, model, tags=tags).version)

    def champion(self, model: str = MODEL) -> str | None:
        from ml.registry import CHAMPION, alias_version

        found = alias_version(self.client, model, CHAMPION)
        return str(found.version) if found else None


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """Commits c1 and c2 on main; c3 on branch `feature`, which main never merged."""
    root = tmp_path / "project"
    root.mkdir()
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params["mlflow"].update(tracking_uri=uri, experiment=TRUSTED, registered_model=MODEL)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "params.yaml")
    git(root, "commit", "-qm", "project")
    made = Project(root, uri)
    made.commit("c1")
    made.commit("c2")
    git(root, "branch", "feature")
    made.commit("c3", branch="feature")
    monkeypatch.chdir(root)  # settings.root is the working folder, as for `ml`
    monkeypatch.setenv("GITHUB_ACTOR", "release-bot")
    monkeypatch.setenv("ML_SERVE_TOKEN", TOKEN)
    monkeypatch.delenv("ML_SERVE_URL", raising=False)
    monkeypatch.delenv("ML_RELEASE_MAIN_REF", raising=False)
    monkeypatch.delenv("ML_TIER", raising=False)
    return made


@pytest.fixture
def serving() -> Iterator[FakeServe]:
    with FakeServe(token=TOKEN) as fake:
        yield fake


# Three declared models (models.yaml), each its own params file and registered model; all three
# are text models here, since what is tested is the choice and the rollback, not the task.
MODELS = ("alpha", "beta", "gamma")


@pytest.fixture
def models_project(project: Project) -> Project:
    """`project` with models.yaml declaring MODELS: alpha reads params.yaml (the default) and
    registers as MODEL, beta and gamma have configs/NAME.yaml and register as NAME."""
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    (project.root / "configs").mkdir()
    entries = {"alpha": {"params": "params.yaml"}}
    for name in MODELS[1:]:
        params["mlflow"]["registered_model"] = name
        (project.root / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(params))
        entries[name] = {"params": f"configs/{name}.yaml"}
    (project.root / "models.yaml").write_text(
        yaml.safe_dump({"default": "alpha", "models": entries}, sort_keys=False)
    )
    return project


def registered(name: str) -> str:
    """The registered model of declared model `name` in models_project."""
    return MODEL if name == "alpha" else name
