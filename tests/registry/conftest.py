from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines import mlflow_server as running_mlflow_server
from tests.evaluate.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One build per session, shared with tests/registry (same base temp folder).
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real `mlflow server` (own SQLite store and artifact folder) for the registry tests:
    each test registers its own model name, so they share it without seeing each other."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url
