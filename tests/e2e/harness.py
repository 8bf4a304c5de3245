"""Run the real workflow files under act on this machine: a repository copy, a prepared runner
venv, a two-node Ray cluster. Used by the e2e tests and by benchmarks/pr_loop.py."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import BIN_DIR, REPO_ROOT, shared_data_dir
from tests.engines import end_sessions, engine_env, free_port

# Remote actions that act resolves before a job starts even though their steps are skipped
# under act (`if: !env.ACT`): each is mapped to a stub that would fail if it ever ran.
REMOTE_ACTIONS = [
    "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065",
    "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02",
    "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093",
    "actions/upload-pages-artifact@56afc609e74202658d3ffba0e8f6dda462b719fa",
    "actions/deploy-pages@d6db90164ac5ed86f2b6aed7e0febac5b3c0c03e",
    "actions/create-github-app-token@1b10c78c7865c340bc4f6099eb2f838309f1e8c3",
]
STUB_ACTION = (
    "name: stub\ndescription: stands in for a remote action skipped under act\n"
    "runs:\n  using: composite\n  steps:\n"
    "    - shell: bash\n      run: echo 'remote action ran under act' >&2; exit 1\n"
)
# The artifact actions do run under act (the PR's model jobs hand their reports to the report
# job through them): stand-ins keeping each artifact in a folder of the run ($ML_ACT_ARTIFACTS),
# laid out as the real v4 actions lay it out (tests/e2e/artifact_standin.py).
ARTIFACT_ACTIONS = {
    "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02": "upload",
    "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093": "download",
}

_ARTIFACT_INPUTS = {
    "upload": ("name", "path", "if-no-files-found", "retention-days"),
    "download": ("name", "pattern", "path", "merge-multiple", "run-id", "github-token"),
}


def artifact_standin(kind: str) -> str:
    """action.yml of the `kind` ("upload" or "download") stand-in: its inputs as INPUT_*."""
    inputs = _ARTIFACT_INPUTS[kind]
    env = "".join(
        f"        INPUT_{i.upper().replace('-', '_')}: ${{{{ inputs.{i} }}}}\n" for i in inputs
    )
    script = Path(__file__).with_name("artifact_standin.py")
    return (
        f"name: {kind}-artifact stand-in\ndescription: {kind}s an artifact under act\n"
        "inputs:\n"
        + "".join(f"  {i}:\n    default: ''\n" for i in inputs)
        + "runs:\n  using: composite\n  steps:\n    - shell: bash\n      env:\n"
        + env
        + f"      run: {BIN_DIR / 'python'} {script} {kind}\n"
    )


@dataclass
class Cluster:
    address: str
    sessions: set[int]


@contextlib.contextmanager
def ray_cluster(logs: Path) -> Iterator[Cluster]:
    """`ray start --head` plus a worker node on loopback, 1 CPU each: the cluster the
    self-hosted runner sits on. Stops exactly the processes it started."""
    temp_dir = Path(tempfile.mkdtemp(prefix="re", dir="/tmp"))  # short: socket path limits
    port = free_port()
    sessions: set[int] = set()

    def start(name: str, *args: str) -> None:
        with (logs / f"ray-{name}.log").open("w") as log:
            process = subprocess.Popen(
                [str(BIN_DIR / "ray"), "start", *args, "--num-cpus", "1", "--num-gpus", "0",
                 "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
                 "--dashboard-agent-listen-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()),
                 "--metrics-export-port", str(free_port()),
                 "--runtime-env-agent-port", str(free_port()), "--disable-usage-stats"],
                stdout=log, stderr=subprocess.STDOUT, env=engine_env(), start_new_session=True,
            )  # fmt: skip
        sessions.add(process.pid)
        if process.wait(timeout=180) != 0:
            raise RuntimeError(
                f"ray start {name} failed:\n{(logs / f'ray-{name}.log').read_text()}"
            )

    try:
        start("head", "--head", "--port", str(port), "--include-dashboard", "false",
              "--ray-client-server-port", str(free_port()))  # fmt: skip
        start("worker", "--address", f"127.0.0.1:{port}")
        yield Cluster(f"127.0.0.1:{port}", sessions)
    finally:
        end_sessions(sessions)
        shutil.rmtree(temp_dir, ignore_errors=True)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


@dataclass
class ActRepo:
    root: Path
    venv: Path
    stub: Path
    mlflow_uri: str
    serve_port: int
    artifacts: Path | None = None  # what the last run_act's artifact actions stored


# Smoke-sized training inputs: a seeded stratified subset (split.max_train_rows /
# max_holdout_rows) is all a workflow test needs, and training time follows the rows.
TINY_ROWS = {"text-classification": (200, 200), "image-classification": (1000, 300)}


def tiny_params(params: dict[str, Any]) -> dict[str, Any]:
    """A smoke-sized model: what a PR that shrinks training looks like. The scaling stays the
    default (train.num_workers, cpus_per_worker: auto): it has to fit the loopback cluster's
    1-CPU nodes as it is."""
    task = params.get("task", "text-classification")
    train_rows, holdout_rows = TINY_ROWS[task]
    params.setdefault("split", {}).update(max_train_rows=train_rows, max_holdout_rows=holdout_rows)
    params["train"].update(epochs=1, early_stopping_patience=0)
    if task == "image-classification":
        params["image"].update(conv_channels=[8, 16], hidden=32, augment=False)
    else:
        params["model"]["max_length"] = 16
    # One epoch on a subset is a smoke test, not a candidate: the no-champion floors are low
    # (a model predicting the majority class clears them on these data sets) and the
    # behavioural checks are reported but not required.
    params["gate"]["floors"] = {"accuracy": 0.2, "f1_weighted": 0.1, "f1_macro": 0.05}
    params["gate"]["min_behavioural_pass_rate"] = 0.0
    return params


def declared_params(root: Path) -> dict[str, str]:
    """models.yaml at `root`: each model's name -> its params file."""
    models = yaml.safe_load((root / "models.yaml").read_text())["models"]
    if isinstance(models, list):
        return {entry["name"]: entry["params"] for entry in models}
    return {name: entry["params"] for name, entry in models.items()}


def yaml_edit(edit: Callable[[dict], dict]) -> Callable[[str], str]:
    """A text edit that applies `edit` to a YAML file's parsed content."""
    return lambda text: yaml.safe_dump(edit(yaml.safe_load(text)), sort_keys=False)


def edit_yaml(path: Path, edit: Callable[[dict], dict]) -> None:
    path.write_text(yaml_edit(edit)(path.read_text()))


def build_act_repo(
    base: Path, mlflow_uri: str, adjust: Callable[[dict], dict] = lambda p: p
) -> ActRepo:
    """A git repository holding this working tree (tracked and untracked-not-ignored files)
    with every declared model's params file `adjust`ed, committed on main, plus the runner's
    venv with `make setup` already done (as a self-hosted runner keeps one)."""
    root = base / "repo"
    root.mkdir(parents=True)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file() and name != "dvc.lock":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    serve_port = free_port()

    def for_the_runner(params: dict) -> dict:
        params = adjust(params)
        params.setdefault("serve", {}).update(
            host="127.0.0.1", port=serve_port, num_cpus_per_replica=0.5
        )
        return params

    for params_file in declared_params(root).values():
        edit_yaml(root / params_file, for_the_runner)
    # The DVC remote is shared storage outside any checkout, as on a real runner.
    dvc_config = (root / ".dvc/config").read_text()
    (root / ".dvc/config").write_text(
        dvc_config.replace("url = ../.dvc-storage", f"url = {base / 'dvc-remote'}")
    )
    git(root, "init", "-q", "-b", "main")
    # act derives github.repository from the origin remote; PR jobs compare it with the head repo.
    git(root, "remote", "add", "origin", "https://github.com/owner/ml.git")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "main")
    venv = _runner_venv(base, root)
    stub = base / "remote-action-stub"
    stub.mkdir()
    (stub / "action.yml").write_text(STUB_ACTION)
    for kind in ("upload", "download"):
        (base / f"{kind}-artifact-standin").mkdir()
        (base / f"{kind}-artifact-standin" / "action.yml").write_text(artifact_standin(kind))
    return ActRepo(root, venv, stub, mlflow_uri, serve_port)


def _runner_venv(base: Path, root: Path) -> Path:
    """The project's dependencies from this venv (a .pth file), `root` installed editable on
    top."""
    venv = base / "venv"
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    base_site = next((BIN_DIR.parent / "lib").glob("python3*/site-packages"))
    (site / "_project_deps.pth").write_text(f"{base_site}\n")
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
         "--no-build-isolation", "-e", str(root)],
        check=True, capture_output=True,
    )  # fmt: skip
    # act copies the tree (fresh mtimes) before `make setup` runs: mark the install as newer.
    subprocess.run(["touch", "-d", "+1 hour", str(venv / ".installed")], check=True)
    return venv


@contextlib.contextmanager
def pull_request(
    repo: ActRepo, message: str, edits: dict[str, Callable[[str], str]]
) -> Iterator[str]:
    """A PR branch off main with one commit that edits these files (path -> text edit; YAML:
    yaml_edit); its sha while inside, main checked out again after."""
    git(repo.root, "checkout", "-q", "-B", "a-change", "main")
    try:
        for path, edit in edits.items():
            (repo.root / path).write_text(edit((repo.root / path).read_text()))
        git(repo.root, "commit", "-qam", message)
        yield git(repo.root, "rev-parse", "HEAD")
    finally:
        git(repo.root, "checkout", "-q", "-f", "main")


def pr_event(repo: ActRepo, number: int = 7) -> dict[str, Any]:
    """The pull_request event of HEAD against main (the base the affected models are computed
    from: HEAD on main itself affects none)."""
    return {
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": "a-change", "sha": git(repo.root, "rev-parse", "HEAD"),
                     "repo": {"full_name": "owner/ml"}},
            "base": {"ref": "main", "sha": git(repo.root, "rev-parse", "main"),
                     "repo": {"full_name": "owner/ml"}},
        },
        "repository": {"full_name": "owner/ml", "name": "ml", "owner": {"login": "owner"}},
    }  # fmt: skip


def tag_event(repo: ActRepo, tag: str) -> dict[str, Any]:
    sha = git(repo.root, "rev-parse", "HEAD")
    return {"ref": f"refs/tags/{tag}", "after": sha, "repository": {"full_name": "owner/ml"}}


def run_act(
    repo: ActRepo, cluster: Cluster, event: str, workflow: str, payload: dict[str, Any],
    timeout: float = 1800, extra: Sequence[str] = (), mirror: Path | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """act EVENT on one workflow file, host mode (.actrc), with the cluster's addresses as the
    repository variables a real runner would have (plus `extra` act arguments: more variables,
    secrets). `mirror`: ML_DATA_MIRROR, for the one-model workflows that read it (the
    Made-With-ML files unless given); every model's workflow reads its subfolder of
    ML_DATA_MIRROR_ROOT. The log is kept beside the repo, artifacts in a fresh folder per run."""
    event_file = repo.root.parent / f"{event}.json"
    event_file.write_text(json.dumps(payload))
    artifacts = repo.artifacts = Path(tempfile.mkdtemp(prefix="artifacts-", dir=repo.root.parent))
    args = [str(BIN_DIR / "act"), event, "-W", f".github/workflows/{workflow}",
            "--eventpath", str(event_file),
            "--env", f"VENV={repo.venv}",
            "--env", f"ML_ACT_ARTIFACTS={artifacts}",
            "--var", f"RAY_ADDRESS={cluster.address}",
            "--var", f"MLFLOW_TRACKING_URI={repo.mlflow_uri}",
            "--var", f"ML_DATA_MIRROR={mirror or shared_data_dir() / 'madewithml'}",
            "--var", f"ML_DATA_MIRROR_ROOT={shared_data_dir()}",
            "--var", f"ML_SERVE_URL=http://127.0.0.1:{repo.serve_port}"]  # fmt: skip
    for action in REMOTE_ACTIONS:
        kind = ARTIFACT_ACTIONS.get(action)
        where = repo.root.parent / f"{kind}-artifact-standin" if kind else repo.stub
        args += ["--local-repository", f"{action}={where}"]
    args += list(extra)
    env = engine_env(PATH=f"{repo.venv / 'bin'}:{engine_env()['PATH']}")
    result = subprocess.run(args, cwd=repo.root, env=env, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    (repo.root.parent / f"act-{workflow}-{event}.log").write_text(result.stdout + result.stderr)
    return result
