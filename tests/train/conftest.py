"""Real engines for the training tests: an `mlflow server` process and a two-node Ray cluster
on loopback. Each is started in its own session so teardown ends exactly those processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_pids(session_ids: set[int]) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, sid = (int(x) for x in line.split())
        if sid in session_ids and pid != os.getpid():
            pids.append(pid)
    return pids


def end_sessions(session_ids: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process in the given sessions (ones this fixture made)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _session_pids(session_ids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while _session_pids(session_ids) and time.monotonic() < deadline:
            time.sleep(0.2)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        RAY_AUTH_MODE="disabled",
        RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS="0",
        TOKENIZERS_PARALLELISM="false",
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real tracking server (sqlite backend, proxied artifacts) on a free loopback port."""
    port = free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    log = (store / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(),
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(store / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield uri
    finally:
        end_sessions({process.pid})
        log.close()


@dataclass
class RayCluster:
    gcs_address: str
    jobs_address: str
    temp_dir: Path


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """`ray start --head` plus a second node joined over loopback, 1 CPU each, unique ports.
    The temp dir is short (unix socket paths are limited to ~107 chars)."""
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
        start(["--address", f"127.0.0.1:{gcs_port}"], "worker", worker_temp_dir)
        yield RayCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", temp_dir)
    finally:
        end_sessions(sessions)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(worker_temp_dir, ignore_errors=True)
