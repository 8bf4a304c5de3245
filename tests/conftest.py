"""Fixtures shared by every test: the shared datasets, a throwaway project folder, the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent

# Tests must never reach the network or a user's real tracking server / cluster.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_OUTSIDE = ("ML_PARAMS", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")
for _var in (*_OUTSIDE, "ML_DATA_MIRROR", "ML_DATA_MIRROR_ROOT"):
    os.environ.pop(_var, None)


# Fixtures that need something beyond the package itself: a test using one is an integration
# test (`make test-unit` deselects them; `make test`, which CI runs, includes them).
INTEGRATION_FIXTURES = {"shared_data", "project"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs_more = INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
        if needs_more or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.integration)


def shared_data_dir() -> Path:
    """The datasets beside the checkout (../shared/data), or $ML_SHARED_DATA."""
    return Path(os.environ.get("ML_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


# mlflow.set_tracking_uri also sets these in os.environ, so a test that runs a stage in-process
# would point the `ml` subprocesses of every later test (cli_env copies os.environ) at its store.
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _mlflow_uri_stays_in_its_test():
    before = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_configure(config: pytest.Config) -> None:
    # A shell's background job (`make test &`, a script's `cmd &`) starts with SIGINT ignored,
    # and every `ml`, `ray` and `mlflow` child would inherit that: the Ctrl-C tests would pass
    # or fail by how the suite was launched. Run as from a terminal; the serve tests start
    # `ml serve` with SIGINT ignored on purpose, to cover that case.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_SIGINT_BEFORE = pytest.StashKey[object]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    item.stash[_SIGINT_BEFORE] = signal.getsignal(signal.SIGINT)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """A SIGINT handler a test (or a fixture torn down with it) leaves behind is put back.
    SIG_IGN fails the test: every later `ml`, `ray` or `mlflow` child would inherit it, and
    Ctrl-C tests far away would fail. Another handler (not inherited across exec) warns."""
    result = yield
    before = item.stash.get(_SIGINT_BEFORE, None)
    after = signal.getsignal(signal.SIGINT)
    if before is None or after is before:
        return result
    signal.signal(signal.SIGINT, before)
    message = (
        f"{item.nodeid} (or a fixture torn down after it) left the SIGINT handler {after!r} "
        f"(it was {before!r}); restore it where it is changed"
    )
    if after is signal.SIG_IGN:
        raise AssertionError(message)
    warnings.warn(message, pytest.PytestWarning, stacklevel=1)
    return result


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "madewithml" / "dataset.csv").is_file():
        pytest.fail(
            f"shared datasets not found at {path}: clone with ../shared beside the repo "
            "or set ML_SHARED_DATA"
        )
    return path


@dataclass(frozen=True)
class ImageProject:
    params_file: Path
    model_dir: Path


@pytest.fixture(scope="session")
def tiny_image_project(tmp_path_factory: pytest.TempPathFactory) -> ImageProject:
    """A Fashion-MNIST project (1,000 train / 300 holdout images, ingested and split) and a
    model trained 40 steps on it, built once per session: the image endpoint, multi-model and
    image evaluation tests only read them (each writes under its own folder, or a copy), and
    the build is most of a minute on 2 busy cores."""
    from tests.image_project import make_image_project, train_tiny_image_model

    root = tmp_path_factory.getbasetemp() / "tiny-image"
    params_file = make_image_project(root, train_rows=1000, holdout_rows=300)
    return ImageProject(params_file, train_tiny_image_model(params_file, steps=40))


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_tool(
    tool: str,
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a console script of the venv (ml, dvc, ...) as a user would, output captured."""
    return subprocess.run(
        [str(BIN_DIR / tool), *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_checked(tool: str, args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float):
    """`run_tool` that fails the test with the command and its output's tail; the output."""
    result = run_tool(tool, args, cwd, env, timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{tool} {' '.join(args)}:\n{output[-6000:]}"
    return output


def run_ml(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed `ml` console script as a user would."""
    return run_tool("ml", args, cwd, env, timeout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project folder holding the repo's params.yaml and configs (no data yet)."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    return root
