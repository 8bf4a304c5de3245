"""Fixtures for the serving tests: a small real model registered in a throwaway MLflow store."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_NAME = "tag-classifier"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"

os.environ.pop("ML_PREDICTION_LOG_DIR", None)


def build_small_model(out_dir: Path, steps: int = 60, seed: int = 0) -> Path:
    """The packaged MiniLM-L6 with a head trained for a few steps on a few dozen real rows."""
    from tests.evaluate.tiny import build_tiny_model

    return build_tiny_model(out_dir, steps=steps, seed=seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same build (and folder) as tests/evaluate's, tests/registry's and tests/security's:
    # once per session.
    return build_small_model(tmp_path_factory.getbasetemp() / "tiny-model")


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    versions: list[str]


def register_versions(root: Path, model_dir: Path, count: int = 2) -> Registry:
    """Log `model_dir` once as the pyfunc model and register it `count` times (versions 1..n)
    with the tags `ml registry register` writes; version 1 becomes champion."""
    import mlflow
    from mlflow import MlflowClient

    from ml.train.pyfunc import log_pyfunc_model

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # A new experiment's artifacts would default to ./mlruns of the working folder: the checkout.
    if client.get_experiment_by_name("serve-test") is None:
        client.create_experiment("serve-test", artifact_location=(root / "mlruns").as_uri())
    mlflow.set_experiment("serve-test")
    with mlflow.start_run():
        model_uri = log_pyfunc_model(model_dir)
    versions = []
    for i in range(count):
        tags = {"git_sha": GIT_SHA, "metric.f1_weighted": f"{0.5 + i / 100:.6f}"}
        versions.append(str(mlflow.register_model(model_uri, MODEL_NAME, tags=tags).version))
    client.set_registered_model_alias(MODEL_NAME, "champion", versions[0])
    return Registry(uri, versions)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
