"""The red team's engines: a real `mlflow server --app-name basic-auth` (one per session) with
the tier identities provisioned by `ml.access.apply`, and helpers that act as one identity."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.engines import engine_env, mlflow_server
from tests.evaluate.tiny import build_tiny_model

ADMIN = ("admin", "admin-password-for-tests")
PASSWORDS = {"pr": "pr-password-1234", "trusted": "trusted-password-1234",
             "production": "production-password-1234"}  # fmt: skip
EXPERIMENT = "tag-classifier"


@contextlib.contextmanager
def auth_mlflow_server(store: Path, default_permission: str = "NO_PERMISSIONS") -> Iterator[str]:
    """`mlflow server --app-name basic-auth` on a free loopback port, with its own user store."""
    store.mkdir(parents=True, exist_ok=True)
    ini = store / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{store / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # Each request re-hashes the password (scrypt) otherwise: seconds per test on 2 cores.
        "auth_cache_ttl_seconds = 600\n"
    )
    env = engine_env(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY="red-team-csrf-key-" + "x" * 16,
    )
    with mlflow_server(store, ("--app-name", "basic-auth"), env) as uri:
        yield uri


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with auth_mlflow_server(tmp_path_factory.mktemp("auth-mlflow")) as uri:
        yield uri


@dataclass
class World:
    """One production model on the auth server, provisioned by ml.access.apply, with v1 as
    champion and v2 as challenger, both registered by the trusted identity."""

    uri: str
    root: Path  # a project folder whose params.yaml names the model
    model: str
    run_id: str

    def settings(self, tier: str):
        from ml.config import load_settings

        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri, "ML_TIER": tier}
        return load_settings(self.root / "params.yaml", env)


def act_as(monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """Every MLflow call from here on authenticates as `who` (admin or a tier's identity), the way
    a job gets its credentials: environment variables."""
    user, password = ADMIN if who == "admin" else (f"ml-{who}", PASSWORDS[who])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("ML_TIER", "trusted" if who == "admin" else who)


def make_world(uri: str, root: Path, model: str, monkeypatch: pytest.MonkeyPatch) -> World:
    from mlflow import MlflowClient

    from ml.access import apply

    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    params["mlflow"] = {"tracking_uri": uri, "experiment": EXPERIMENT, "registered_model": model}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(root)
    # ml.registry's client() calls mlflow.set_tracking_uri, which also sets this variable: set
    # through monkeypatch, it is gone again after the test instead of leaking into later ones.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for tier, password in PASSWORDS.items():
        monkeypatch.setenv(f"ML_ACCESS_{tier.upper()}_PASSWORD", password)
    act_as(monkeypatch, "admin")
    world = World(uri, root, model, "")
    apply(world.settings("trusted"))

    act_as(monkeypatch, "trusted")  # main: trains (a run with an artifact) and registers
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run = client.create_run(experiment, tags={"git_sha": "a" * 40})
    (root / "weights.txt").write_text("trusted weights")
    client.log_artifact(run.info.run_id, str(root / "weights.txt"), "model")
    client.set_terminated(run.info.run_id)
    for _ in range(2):
        client.create_model_version(
            model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            tags={"git_sha": "a" * 40, "gate.status": "passed", "gate.champion_version": "1"},
        )  # fmt: skip
    act_as(monkeypatch, "production")  # release: moves champion
    client.set_registered_model_alias(model, "champion", "1")
    client.set_registered_model_alias(model, "challenger", "2")
    world.run_id = run.info.run_id
    return world


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same build (and folder) as tests/registry's: once per session.
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
