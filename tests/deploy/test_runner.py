"""deploy/runner/: the VM runner of each trust tier is ephemeral and sandboxed.

The units pass `systemd-analyze verify` and keep the job in its sandbox; setup-runner.sh (dry
run) installs root-owned files and no persistent registration; prepare-runner.py really runs:
it wipes what the last job left and fetches a one-job JIT config, and run-ephemeral.sh hands
that config to the runner through its environment. GitHub's REST API cannot be reached here:
a small stand-in on loopback answers `generate-jitconfig` the way GitHub documents it, and the
runner itself is a stand-in script that records how it was started.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

RUNNER = REPO_ROOT / "deploy" / "runner"
LIBEXEC = "/usr/local/libexec/gha-runner"
# The job user: any user but root (as root, the helper may hand files to `nobody`).
JOB_USER = "nobody" if os.geteuid() == 0 else getpass.getuser()


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's syntax: sections of keys that may repeat (configparser refuses repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line!r} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    (value,) = section[key]
    return value


def test_runner_unit_is_ephemeral_and_sandboxed():
    unit = parse_unit(RUNNER / "github-actions-runner@.service")
    assert {"Unit", "Service", "Install"} <= set(unit)
    service = unit["Service"]
    assert one(service, "User") == "gha-%i" and one(service, "Group") == "gha-%i"
    assert one(service, "Restart") == "always"  # the next job gets a new runner
    assert one(service, "KillMode") == "control-group"  # nothing a job started outlives it
    # As root, outside the sandbox, before and after every job: wipe, then a one-job JIT config.
    assert one(service, "ExecStartPre") == f"+{LIBEXEC}/prepare-runner %i"
    assert one(service, "ExecStopPost") == f"+{LIBEXEC}/prepare-runner --cleanup %i"
    assert one(service, "ExecStart") == f"{LIBEXEC}/run-ephemeral"
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "RestrictSUIDSGID": "yes", "RemoveIPC": "yes",
        "CapabilityBoundingSet": "",
    }.items():  # fmt: skip
        assert one(service, key) == value, key
    assert service["ReadWritePaths"] == ["/var/lib/gha-runner/%i"]  # the job's state, nothing else
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["BindReadOnlyPaths"]}
    assert mounts == {
        "/var/lib/gha-runner/%i/runner/bin": "/opt/actions-runner/bin",
        "/var/lib/gha-runner/%i/runner/externals": "/opt/actions-runner/externals",
    }
    # Read by systemd as root; the file holds addresses, the credentials live in GitHub.
    assert one(service, "EnvironmentFile") == "/etc/gha-runner/%i/job.env"


def test_ray_head_runs_as_its_own_user():
    unit = parse_unit(RUNNER / "ray-head.service")
    service = unit["Service"]
    assert one(service, "User") == "ray" != "gha-%i"
    assert "ray start --head" in one(service, "ExecStart")
    assert "--ray-client-server-port 10001" in one(service, "ExecStart")
    assert one(service, "KillMode") == "control-group"
    assert service["ReadWritePaths"] == ["/var/lib/ray"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one(service, key) == "yes", key
    assert one(service, "ProtectSystem") == "strict"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    """systemd's own checker: unknown keys, bad values, missing executables."""
    for unit in RUNNER.glob("*.service"):
        _installed_copy(unit, tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no",
         str(tmp_path / "github-actions-runner@pr.service"), str(tmp_path / "ray-head.service")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# systemd-analyze security rates exposure 0.0 (fully sandboxed) to 10.0; its threshold is in
# tenths: 50 is "5.0 OK" or better.
SANDBOX_MAX_EXPOSURE = "50"


def _installed_copy(unit: Path, into: Path, text: str | None = None) -> Path:
    """The unit in `into`, its helpers' install paths pointed at this checkout's copies."""
    text = (
        (text if text is not None else unit.read_text())
        .replace(f"{LIBEXEC}/prepare-runner", str(RUNNER / "prepare-runner.py"))
        .replace(f"{LIBEXEC}/run-ephemeral", str(RUNNER / "run-ephemeral.sh"))
    )
    (into / unit.name).write_text(text)
    return into / unit.name.replace("@.", "@pr.")


def _exposure(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--man=no",
         f"--threshold={SANDBOX_MAX_EXPOSURE}", str(unit)],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["github-actions-runner@.service", "ray-head.service"])
def test_units_sandbox_scores_ok_and_the_score_measures_the_sandbox(tmp_path, name):
    unit = RUNNER / name
    result = _exposure(_installed_copy(unit, tmp_path))
    assert result.returncode == 0, result.stdout[-600:]
    # The same unit without its sandboxing lines is over the threshold: the check has teeth.
    sandbox = ("Protect", "Private", "Restrict", "NoNew", "Capability", "Ambient", "Lock",
               "SystemCall", "DevicePolicy", "UMask", "RemoveIPC")  # fmt: skip
    keep = [line for line in unit.read_text().splitlines() if not line.startswith(sandbox)]
    bare = tmp_path / "bare"
    bare.mkdir()
    unprotected = _exposure(_installed_copy(unit, bare, "\n".join(keep) + "\n"))
    assert unprotected.returncode != 0 and "Overall exposure level" in unprotected.stdout


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(RUNNER / "setup-runner.sh"), *args, "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("tier", ["pr", "trusted", "release"])
def test_setup_installs_root_owned_files_and_no_registration(tier):
    subprocess.run(["bash", "-n", str(RUNNER / "setup-runner.sh")], check=True)
    result = dry_run("--tier", tier, "--url", "https://github.com/o/r", "--token-file", "t")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "config.sh" not in out  # no long-lived registration: one JIT config per job
    assert (
        f"useradd --system --user-group --no-create-home --home-dir "
        f"/var/lib/gha-runner/{tier}/home --shell /usr/sbin/nologin gha-{tier}" in out
    )
    assert "chown -R root:root /opt/actions-runner" in out and "chmod -R go-w" in out
    assert f"install -o root -g root -m 0600 t /etc/gha-runner/{tier}/github-token" in out
    assert f"write /etc/gha-runner/{tier}/job.env (root:root 0600)" in out
    assert f"RUNNER_LABELS=self-hosted,ray-{tier}" in out and f"RUNNER_USER=gha-{tier}" in out
    assert "RAY_AUTH_TOKEN" not in out  # secrets are written, never printed
    assert out.index("ray-head.service") < out.index(f"enable --now github-actions-runner@{tier}")


def test_setup_refuses_what_it_cannot_do_safely():
    assert dry_run().returncode == 2
    missing = dry_run("--tier", "pr", "--url", "https://github.com/o/r")
    assert missing.returncode == 2 and "--token-file" in missing.stderr
    bad_tier = dry_run("--tier", "prod", "--url", "https://github.com/o/r", "--token-file", "t")
    assert bad_tier.returncode == 2 and "pr, trusted or release" in bad_tier.stderr
    old = dry_run("--tier", "pr", "--url", "https://github.com/o/r", "--token", "T")
    assert old.returncode == 2 and "JIT" in old.stderr


class StandInGitHub:
    """`POST .../actions/runners/generate-jitconfig` as GitHub documents it (201 with
    `runner` and `encoded_jit_config`), or a fixed error status. Records every request."""

    def __init__(self, status: int = 201) -> None:
        self.requests: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests.append(
                    {"path": self.path, "auth": self.headers["Authorization"], "body": body}
                )
                answer = {"runner": {"id": len(stand_in.requests), "name": body["name"]},
                          "encoded_jit_config": f"JIT-{len(stand_in.requests)}"}  # fmt: skip
                payload = json.dumps(answer if status == 201 else {"message": "Bad"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github() -> Iterator[StandInGitHub]:
    stand_in = StandInGitHub()
    yield stand_in
    stand_in.close()


def tier_host(tmp_path: Path, url: str = "https://github.com/o/r", user: str = "") -> dict:
    """/etc/gha-runner/pr and /var/lib/gha-runner of a host, under tmp_path, owned by us."""
    conf = tmp_path / "etc" / "pr"
    conf.mkdir(parents=True)
    (conf / "runner.conf").write_text(
        f"GITHUB_URL={url}\nRUNNER_LABELS=self-hosted,ray-pr\nRUNNER_GROUP_ID=3\n"
        f"RUNNER_USER={user or JOB_USER}\n"
    )
    token = conf / "github-token"
    token.write_text("registration-secret\n")
    token.chmod(0o600)
    (tmp_path / "run").mkdir()
    return {"GHA_RUNNER_CONF_DIR": str(tmp_path / "etc"),
            "GHA_RUNNER_STATE_DIR": str(tmp_path / "state"),
            "RUNTIME_DIRECTORY": str(tmp_path / "run")}  # fmt: skip


def prepare(env: dict, api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER / "prepare-runner.py"), *args],
        env={**os.environ, **env, "GITHUB_API_URL": api}, capture_output=True, text=True,
    )  # fmt: skip


def test_prepare_wipes_the_last_job_and_fetches_a_one_job_config(tmp_path, github):
    env = tier_host(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the job's")
    leftover = tmp_path / "state" / "pr" / "runner" / "_work"
    leftover.mkdir(parents=True)
    (leftover / "planted.sh").write_text("echo from the last job")
    (tmp_path / "state" / "pr" / "link").symlink_to(outside)

    for expected in ("JIT-1", "JIT-2"):  # every start registers a new runner
        result = prepare(env, github.url, "pr")
        assert result.returncode == 0, result.stderr
        jit = tmp_path / "run" / "jitconfig"
        assert jit.read_text() == expected and (jit.stat().st_mode & 0o777) == 0o600
    state = tmp_path / "state" / "pr"
    assert sorted(p.name for p in state.iterdir()) == ["home", "runner"]
    assert sorted(p.name for p in (state / "runner").iterdir()) == [
        "_diag", "_work", "bin", "externals"]  # fmt: skip
    assert not any((state / "runner" / "_work").iterdir())
    assert outside.read_text() == "not the job's"  # the wipe never follows a link out

    first, second = github.requests
    assert first["path"] == "/repos/o/r/actions/runners/generate-jitconfig"
    assert first["auth"] == "Bearer registration-secret"
    assert first["body"]["labels"] == ["self-hosted", "ray-pr"]
    assert first["body"]["runner_group_id"] == 3 and first["body"]["work_folder"] == "_work"
    assert first["body"]["name"] != second["body"]["name"]


def test_prepare_for_an_organisation_and_cleanup(tmp_path, github):
    env = tier_host(tmp_path, url="https://github.com/org")
    assert prepare(env, github.url, "pr").returncode == 0
    assert github.requests[0]["path"] == "/orgs/org/actions/runners/generate-jitconfig"
    (tmp_path / "state" / "pr" / "runner" / "_work" / "x").write_text("checkout")
    result = prepare(env, github.url, "--cleanup", "pr")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "run" / "jitconfig").exists()
    assert not any((tmp_path / "state" / "pr" / "runner" / "_work").iterdir())
    assert len(github.requests) == 1  # cleanup registers nothing


def test_prepare_refuses_a_token_others_can_read(tmp_path, github):
    env = tier_host(tmp_path)
    (tmp_path / "etc" / "pr" / "github-token").chmod(0o644)
    result = prepare(env, github.url, "pr")
    assert result.returncode == 1 and "chmod 0600" in result.stderr
    assert not github.requests and not (tmp_path / "run" / "jitconfig").exists()


def test_prepare_refuses_root_as_the_job_user(tmp_path, github):
    result = prepare(tier_host(tmp_path, user="root"), github.url, "pr")
    assert result.returncode == 1 and "must not be root" in result.stderr
    assert not github.requests


def test_prepare_names_a_refused_token(tmp_path):
    refusing = StandInGitHub(status=401)
    try:
        result = prepare(tier_host(tmp_path), refusing.url, "pr")
    finally:
        refusing.close()
    assert result.returncode == 1
    assert "401" in result.stderr and "github-token" in result.stderr
    assert not (tmp_path / "run" / "jitconfig").exists()


def test_run_ephemeral_hands_the_config_over_by_environment(tmp_path):
    root = tmp_path / "runner"
    (root / "bin").mkdir(parents=True)
    record = tmp_path / "record.json"
    listener = root / "bin" / "Runner.Listener"  # stands in for the runner: records its start
    listener.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'jit': os.environ.get("
        f"'ACTIONS_RUNNER_INPUT_JITCONFIG'), 'cwd': os.getcwd()}}, open({str(record)!r}, 'w'))\n"
    )
    listener.chmod(0o755)
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "jitconfig").write_text("ONE-JOB-CONFIG")
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime), "RUNNER_ROOT": str(root)}
    subprocess.run(["sh", str(RUNNER / "run-ephemeral.sh")], env=env, check=True)
    started = json.loads(record.read_text())
    assert started["argv"] == ["run", "--startuptype", "service"]  # never on the command line
    assert started["jit"] == "ONE-JOB-CONFIG" and started["cwd"] == str(root)
    assert not (runtime / "jitconfig").exists()
    again = subprocess.run(["sh", str(RUNNER / "run-ephemeral.sh")], env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 1 and "no JIT config" in again.stderr
