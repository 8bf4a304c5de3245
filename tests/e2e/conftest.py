"""Engines for the workflow tests (see harness.py): one Ray cluster and one act repository for
the whole package, because the PR run registers what the release runs ship."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import (
    ActRepo,
    Cluster,
    build_act_repo,
    ray_cluster,
    tiny_params,
)
from tests.engines import mlflow_server


@pytest.fixture(scope="package")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with ray_cluster(tmp_path_factory.mktemp("ray-logs")) as running:
        yield running


@pytest.fixture(scope="package")
def tracking_uri(tmp_path_factory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="package")
def act_repo(tmp_path_factory, tracking_uri) -> ActRepo:
    return build_act_repo(tmp_path_factory.mktemp("act"), tracking_uri, tiny_params)
