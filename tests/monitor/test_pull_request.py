"""The retrain PR (ml/monitor/pull_request.py) on a real git repository whose origin is a real
bare repository, and a real DVC repository with a local-folder remote; the pipeline's stages
are stand-ins that write small files, so this runs in seconds (test_retrain.py runs the real
`ml retrain`). GitHub's REST API cannot run here: it is served by the recorded stand-in on
127.0.0.1 in github_standin.py, and the tests assert on the requests it recorded."""

from __future__ import annotations

import base64
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ml.monitor.pull_request import (
    STAGES,
    GitHubTarget,
    branch_name,
    propose,
    record_data_version,
    remote_branch,
    target_from_env,
)
from ml.monitor.retrain import RetrainError
from tests.conftest import BIN_DIR
from tests.monitor.github_standin import github_standin

BRANCH = branch_name("a" * 64, "b" * 64)


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(
        args, cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    return sh(cwd, "git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args)


def dvc(cwd: Path, *args: str) -> str:
    return sh(cwd, str(BIN_DIR / "dvc"), *args)


def write_outputs(root: Path, version: str) -> None:
    """What the in-process stages of `ml retrain` leave in the workspace, in miniature."""
    for path in ("data/raw/dataset.csv", "reports/data_validation.json", "data/splits/train.csv",
                 "models/model/weights.bin", "reports/metrics.json"):  # fmt: skip
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f"{path} {version}\n")


def pipeline() -> dict:
    """dvc.yaml with the stage names ml retrain commits, chained as in the real pipeline."""
    outs = {
        "ingest": ("data/raw", None),
        "validate": ("reports/data_validation.json", "data/raw"),
        "split": ("data/splits", "reports/data_validation.json"),
        "train": ("models/model", "data/splits"),
        "evaluate": ("reports/metrics.json", "models/model"),
    }
    stages = {}
    for name, (out, dep) in outs.items():
        stages[name] = {"cmd": f"test -e {out}", "outs": [out]}
        if dep:
            stages[name]["deps"] = [dep]
    assert tuple(stages) == STAGES
    return {"stages": stages}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """main, pushed to a bare origin, with dvc.lock for version 1 and its data on the remote;
    then the workspace holds version 2, as after `ml retrain` trained on new data."""
    origin = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    root = tmp_path / "checkout"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    dvc(root, "remote", "add", "-d", "trusted", str(tmp_path / "dvc-trusted"))
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline(), sort_keys=False))
    (root / ".gitignore").write_text("/data\n/models\n/reports\n")
    write_outputs(root, "v1")
    dvc(root, "commit", "-f", "-q")
    dvc(root, "push", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "main")
    git(root, "remote", "add", "origin", str(origin))
    git(root, "push", "-q", "origin", "main")
    write_outputs(root, "v2")
    return root


def target(url: str, remote: str = "origin") -> GitHubTarget:
    return GitHubTarget("owner/ml", "tok-secret", url, "main", remote)


def origin(root: Path) -> Path:
    return root.parent / "origin.git"


def run_cache_entries(root: Path) -> int:
    return sum(1 for p in (root / ".dvc/cache/runs").rglob("*") if p.is_file())


def test_pushes_the_data_version_and_opens_one_pr(checkout: Path) -> None:
    head, cache_before = git(checkout, "rev-parse", "HEAD"), run_cache_entries(checkout)
    with github_standin() as github:
        first = propose(checkout, target(github.url), BRANCH, "Retrain v2", "## report\n", True)
        second = propose(checkout, target(github.url), BRANCH, "Retrain v2", "## report\n", True)

    assert first.created and first.url == "https://github.com/owner/ml/pull/1"
    (post,) = github.posts()  # the second run opened none
    assert post.body == {"title": "Retrain v2", "head": BRANCH, "base": "main",
                         "body": "## report\n"}  # fmt: skip
    assert post.headers["authorization"] == "Bearer tok-secret"
    assert not second.created and second.url == first.url and "already open" in second.message
    gets = [r.query for r in github.requests if r.method == "GET"]
    assert {"head": f"owner:{BRANCH}", "state": "open"} in gets

    # The branch's commit holds the new dvc.lock on top of main; the checkout stays on main.
    pushed = git(origin(checkout), "rev-parse", f"refs/heads/{BRANCH}")
    assert pushed == first.commit and git(checkout, "rev-parse", "HEAD") == head
    assert git(origin(checkout), "rev-parse", f"{BRANCH}^") == head
    assert git(origin(checkout), "diff", "--name-only", head, BRANCH).split() == ["dvc.lock"]
    lock = yaml.safe_load(git(origin(checkout), "show", f"{BRANCH}:dvc.lock"))
    assert lock == yaml.safe_load((checkout / "dvc.lock").read_text())
    assert git(checkout, "log", "-1", "--format=%an", pushed) == "ml-retrain"

    # Every output that lock names is on the trusted remote; the run cache got the four stages
    # whose outputs their command makes (not ingest, which gains labelled rows after it).
    remote = checkout.parent / "dvc-trusted" / "files" / "md5"
    for stage in STAGES:
        md5 = lock["stages"][stage]["outs"][0]["md5"]
        assert (remote / md5[:2] / md5[2:]).is_file(), stage
    assert run_cache_entries(checkout) == cache_before + 4
    assert (checkout.parent / "dvc-trusted" / "runs").is_dir()


def test_fresh_clone_of_the_branch_restores_instead_of_running(checkout: Path) -> None:
    """What the PR's `dvc repro --pull` does with the branch: every stage is pulled, none run
    (each stage's command would fail here: the outputs it tests for are not in a clone)."""
    with github_standin() as github:
        propose(checkout, target(github.url), BRANCH, "Retrain v2", "body", True)
    clone = checkout.parent / "clone"
    sh(checkout.parent, "git", "clone", "-q", "-b", BRANCH, str(origin(checkout)), str(clone))
    log = dvc(clone, "repro", "--pull")
    assert "Running stage" not in log, log
    assert (clone / "models/model/weights.bin").read_text() == "models/model/weights.bin v2\n"


def test_a_closed_pr_is_not_reopened(checkout: Path) -> None:
    with github_standin() as github:
        propose(checkout, target(github.url), BRANCH, "Retrain v2", "body", True)
        github.close_all()
        again = propose(checkout, target(github.url), BRANCH, "Retrain v2", "body", True)
    assert len(github.posts()) == 1
    assert not again.created and "closed" in again.message and again.url.endswith("/pull/1")


def test_a_failed_pr_call_is_opened_from_the_pushed_branch_next_time(checkout: Path) -> None:
    with github_standin() as github:
        github.fail_posts = 1
        with pytest.raises(RetrainError, match="HTTP 502"):
            propose(checkout, target(github.url), BRANCH, "Retrain v2", "body", True)
        pushed = git(origin(checkout), "rev-parse", f"refs/heads/{BRANCH}")
        write_outputs(checkout, "v3")  # not pushed again: the branch already holds this data
        again = propose(checkout, target(github.url), BRANCH, "Retrain v2", "body", True)
    assert again.created and again.commit == pushed and len(github.pulls) == 1
    assert git(origin(checkout), "rev-parse", f"refs/heads/{BRANCH}") == pushed


def test_unchanged_data_opens_nothing(checkout: Path) -> None:
    write_outputs(checkout, "v1")  # what main's dvc.lock already holds
    with github_standin() as github:
        outcome = propose(checkout, target(github.url), BRANCH, "Retrain", "body", True)
    assert not outcome.created and outcome.url is None and "already holds" in outcome.message
    assert github.posts() == [] and remote_branch(checkout, target(github.url), BRANCH) is None


def test_token_reaches_an_https_remote_as_a_header_only(
    checkout: Path, tmp_path: Path, monkeypatch
) -> None:
    """A loopback HTTPS server (self-signed) records what git sends: the token goes as an
    Authorization header scoped to that host; it is not in the remote URL, .git/config or the
    error message."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    sh(tmp_path, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
       "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
       "-keyout", str(key), "-out", str(cert))  # fmt: skip
    seen: list[str | None] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/owner/ml.git"
    git(checkout, "remote", "add", "github", url)
    monkeypatch.setenv("GIT_SSL_CAINFO", str(cert))  # trust the self-signed certificate
    try:
        with pytest.raises(RetrainError) as failure:
            remote_branch(checkout, target("http://unused", remote="github"), BRANCH)
    finally:
        server.shutdown()
        server.server_close()
    expected = base64.b64encode(b"x-access-token:tok-secret").decode()
    assert seen and seen[0] == f"basic {expected}", str(failure.value)
    assert "tok-secret" not in str(failure.value) and expected not in str(failure.value)
    config = (checkout / ".git/config").read_text()
    assert "tok-secret" not in config and expected not in config


def test_target_comes_from_the_environment() -> None:
    assert target_from_env("main", {}) is None  # no token: only the body is written
    with pytest.raises(RetrainError, match="GITHUB_REPOSITORY"):
        target_from_env("main", {"ML_RETRAIN_GITHUB_TOKEN": "t"})
    found = target_from_env(
        "main",
        {"ML_RETRAIN_GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "o/r", "GITHUB_REF_NAME": "dev",
         "GITHUB_API_URL": "http://127.0.0.1:9/"},
    )  # fmt: skip
    assert found == GitHubTarget("o/r", "t", "http://127.0.0.1:9", "dev", "origin")
    # The job's own GITHUB_TOKEN is never used: a PR it opens would not trigger pr.yml.
    assert target_from_env("main", {"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "o/r"}) is None


def test_branch_name_is_the_data_and_params() -> None:
    assert branch_name("0123456789abcdef" * 4, "fedcba9876543210" * 4) == (
        "retrain/0123456789ab-fedcba987654"
    )
    # One branch, hence one PR, per model: the same data under two models is two proposals.
    assert branch_name("0" * 64, "f" * 64, "fashion-mnist") == (
        "retrain/fashion-mnist-000000000000-ffffffffffff"
    )


def test_one_models_retrain_records_only_its_own_stages(tmp_path: Path) -> None:
    """dvc.yaml runs every declared model (`foreach`, STAGE@NAME): retraining b commits b's
    entries of dvc.lock; a's stay as main has them, though a's workspace changed too."""
    root = tmp_path / "checkout"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    stages = {
        name: {"foreach": ["a", "b"], "do": {"cmd": f"test -e {name}/${{item}}",
                                            "outs": [f"{name}/${{item}}"]}}
        for name in STAGES
    }  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))

    def outputs(version: str) -> None:
        for name in STAGES:
            (root / name).mkdir(exist_ok=True)
            for model in ("a", "b"):
                (root / name / model).write_text(f"{name} {model} {version}\n")

    outputs("v1")
    dvc(root, "commit", "-f", "-q")
    main_lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    outputs("v2")
    assert record_data_version(root, True, model="b") == [f"{s}@b" for s in STAGES]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for name in STAGES:
        assert lock[f"{name}@a"] == main_lock[f"{name}@a"], name
        assert lock[f"{name}@b"] != main_lock[f"{name}@b"], name
    with pytest.raises(RetrainError, match="no stage ingest@c"):
        record_data_version(root, True, model="c")


def test_a_reused_version_proposes_only_the_data_stages(checkout: Path) -> None:
    """No model was trained in this run (a registered version was reused): whatever model the
    workspace holds may be from other data, so only ingest, validate and split are recorded and
    the PR run trains."""
    main_lock = yaml.safe_load((checkout / "dvc.lock").read_text())
    with github_standin() as github:
        propose(checkout, target(github.url), BRANCH, "Retrain", "body", True, trained_here=False)
    lock = yaml.safe_load(git(origin(checkout), "show", f"{BRANCH}:dvc.lock"))
    for stage in ("ingest", "validate", "split"):
        assert lock["stages"][stage] != main_lock["stages"][stage], stage
    for stage in ("train", "evaluate"):
        assert lock["stages"][stage] == main_lock["stages"][stage], stage
