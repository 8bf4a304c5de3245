"""Real engines for the training tests: an `mlflow server` process and a two-node Ray cluster
on loopback. Each is started in its own session so teardown ends exactly those processes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engines import VENV_BIN, end_sessions, engine_env, free_port
from tests.engines import mlflow_server as running_mlflow_server

# Kept as names here: the training tests import them from this module.
cli_env = engine_env


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real tracking server (sqlite backend, proxied artifacts) on a free loopback port."""
    with running_mlflow_server(tmp_path / "mlflow-server") as uri:
        yield uri


# A custom resource only the second node has.
WORKER_RESOURCE = "second_node"


@dataclass
class RayCluster:
    gcs_address: str
    jobs_address: str
    temp_dir: Path


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """`ray start --head` plus a second node joined over loopback, 1 CPU each, unique ports.
    One per test module: its tests leave no job running and no resources held. The temp dir
    is short (unix socket paths are limited to ~107 chars)."""
    tmp_path = tmp_path_factory.mktemp("ray-cluster")
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    worker_temp_dir = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp"))
    gcs_port, dashboard_port = free_port(), free_port()
    env = cli_env()
    sessions: set[int] = set()

    def start(args: list[str], name: str, node_temp_dir: Path) -> None:
        log = (tmp_path / f"ray-{name}.log").open("w")
        process = subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                *args,
                "--num-cpus",
                "1",
                "--num-gpus",
                "0",
                "--node-ip-address",
                "127.0.0.1",
                "--temp-dir",
                str(node_temp_dir),
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--dashboard-agent-grpc-port",
                str(free_port()),
                "--metrics-export-port",
                str(free_port()),
                "--runtime-env-agent-port",
                str(free_port()),
                "--disable-usage-stats",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        sessions.add(process.pid)
        if process.wait(timeout=180) != 0:
            raise RuntimeError(
                f"ray start ({name}) failed:\n{(tmp_path / f'ray-{name}.log').read_text()}"
            )

    try:
        start(
            [
                "--head",
                "--port",
                str(gcs_port),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(dashboard_port),
                "--ray-client-server-port",
                str(free_port()),
            ],
            "head",
            temp_dir,
        )
        # Its own temp dir: nodes sharing one would garbage-collect each other's runtime envs.
        # WORKER_RESOURCE lets a test pin actors to this node (serving auth across nodes).
        start(
            ["--address", f"127.0.0.1:{gcs_port}", "--resources", f'{{"{WORKER_RESOURCE}": 1}}'],
            "worker",
            worker_temp_dir,
        )
        yield RayCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", temp_dir)
    finally:
        end_sessions(sessions)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(worker_temp_dir, ignore_errors=True)
