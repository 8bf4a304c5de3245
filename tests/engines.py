"""Real engines the tests start: a free loopback port, an `mlflow server` process, and the
environment they run with. Each process starts in its own session so teardown ends exactly the
processes a test made, never a developer's own Ray or MLflow."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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
    """SIGTERM, then SIGKILL, every process in the given sessions (ones a test made)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(session_ids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while _session_pids(session_ids) and time.monotonic() < deadline:
            time.sleep(0.2)


def engine_env(**extra: str) -> dict[str, str]:
    """The environment for engine processes and CLI runs: this venv first, no telemetry, Ray
    token auth off (loopback only), and no inherited cluster or tracking server."""
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


@contextlib.contextmanager
def mlflow_server(
    store: Path, app_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[str]:
    """A real tracking server (SQLite backend, proxied artifacts) on a free loopback port;
    `app_args` (e.g. `("--app-name", "basic-auth")`) and `env` extend its command and
    environment."""
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (store / "server.log").open("w") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", *app_args, "--backend-store-uri",
             f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination",
             str(store / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env or engine_env(),
            start_new_session=True,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_text = (store / "server.log").read_text()
                    raise RuntimeError(f"mlflow server did not start: {log_text}") from None
                time.sleep(0.5)
        yield uri
    finally:
        end_sessions({process.pid})
