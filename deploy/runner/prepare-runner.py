#!/usr/bin/env python3
"""Root-owned helper of github-actions-runner@TIER.service: before every job it wipes the tier's
state and asks GitHub for a just-in-time (JIT) runner configuration good for exactly one job.

    prepare-runner.py TIER            (ExecStartPre=+, as root)
    prepare-runner.py --cleanup TIER  (ExecStopPost=+, as root)

It reads /etc/gha-runner/TIER/runner.conf (KEY=VALUE: GITHUB_URL, RUNNER_LABELS, RUNNER_GROUP_ID,
RUNNER_USER) and /etc/gha-runner/TIER/github-token, a token allowed to register runners (a
fine-grained token with "Administration: write" on the repository, or "Self-hosted runners:
write" on the organisation). Both stay root-only: the runner and its jobs never see the token,
only the JIT config, which registers one ephemeral runner and is deleted once the runner has
read it. Standard library only: it runs on the host's python3 before any venv exists.
GHA_RUNNER_CONF_DIR, GHA_RUNNER_STATE_DIR and GITHUB_API_URL override the paths and the API.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

CONF_DIR = Path(os.environ.get("GHA_RUNNER_CONF_DIR", "/etc/gha-runner"))
STATE_DIR = Path(os.environ.get("GHA_RUNNER_STATE_DIR", "/var/lib/gha-runner"))
RUNTIME_DIR = Path(os.environ.get("RUNTIME_DIRECTORY", "/run/gha-runner"))
TIERS = ("pr", "trusted", "release")
# The runner's install is bind-mounted read-only over these (see the unit's BindReadOnlyPaths).
MOUNT_POINTS = ("bin", "externals")


class SetupError(Exception):
    pass


def read_conf(tier: str) -> dict[str, str]:
    path = CONF_DIR / tier / "runner.conf"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SetupError(
            f"cannot read {path} ({exc.strerror}); run deploy/runner/setup-runner.sh"
        ) from exc
    conf = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    missing = {"GITHUB_URL", "RUNNER_LABELS", "RUNNER_USER"} - set(conf)
    if missing:
        raise SetupError(f"{path} lacks {', '.join(sorted(missing))}")
    return conf


def read_token(tier: str) -> str:
    """The registration credential, refused unless only its owner (root) can read it."""
    path = CONF_DIR / tier / "github-token"
    try:
        info = path.stat()
    except OSError as exc:
        raise SetupError(
            f"cannot read {path} ({exc.strerror}); run setup-runner.sh --token-file"
        ) from exc
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SetupError(
            f"{path} must be owned by uid {os.geteuid()} with mode 0600 (it is uid "
            f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}): "
            f"chown root:root {path} && chmod 0600 {path}"
        )
    token = path.read_text().strip()
    if not token:
        raise SetupError(f"{path} is empty")
    return token


def jitconfig_endpoint(github_url: str, api_url: str) -> str:
    """https://github.com/OWNER/REPO -> repo runners; https://github.com/ORG -> org runners."""
    parts = [p for p in urlparse(github_url).path.split("/") if p]
    if len(parts) == 2:
        return f"{api_url}/repos/{parts[0]}/{parts[1]}/actions/runners/generate-jitconfig"
    if len(parts) == 1:
        return f"{api_url}/orgs/{parts[0]}/actions/runners/generate-jitconfig"
    raise SetupError(f"GITHUB_URL {github_url!r} is not https://github.com/OWNER[/REPO]")


def request_jitconfig(tier: str, conf: dict[str, str], token: str) -> str:
    api_url = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    body = {
        # A fresh name per job: GitHub removes an ephemeral runner after its one job.
        "name": f"{socket.gethostname()}-{tier}-{secrets.token_hex(4)}",
        "runner_group_id": int(conf.get("RUNNER_GROUP_ID", "1")),
        "labels": conf["RUNNER_LABELS"].split(","),
        "work_folder": "_work",
    }
    request = urllib.request.Request(
        jitconfig_endpoint(conf["GITHUB_URL"], api_url),
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        raise SetupError(
            f"GitHub refused the JIT config ({exc.code} {exc.reason}): check that the token in "
            f"{CONF_DIR / tier / 'github-token'} may register runners for {conf['GITHUB_URL']} "
            "and that RUNNER_GROUP_ID exists"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SetupError(f"cannot reach {api_url} for a JIT config: {exc}") from exc
    jit = answer.get("encoded_jit_config")
    if not isinstance(jit, str) or not jit:
        raise SetupError("GitHub's answer has no encoded_jit_config")
    return jit


def wipe_state(tier: str, user: pwd.struct_passwd) -> Path:
    """A fresh runner root and home for every job: nothing a job wrote survives it."""
    state = STATE_DIR / tier
    if state.is_symlink():
        raise SetupError(f"{state} is a symlink; refusing to wipe through it")
    state.mkdir(parents=True, exist_ok=True)
    for child in state.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for name in ("runner", "home", "runner/_diag", "runner/_work"):
        (state / name).mkdir(mode=0o700)
        os.chown(state / name, user.pw_uid, user.pw_gid)
    for name in MOUNT_POINTS:  # empty and root-owned until the read-only bind mount covers them
        (state / "runner" / name).mkdir(mode=0o755)
    os.chown(state, user.pw_uid, user.pw_gid)
    os.chmod(state, 0o700)
    return state


def write_secret(path: Path, text: str, user: pwd.struct_passwd) -> None:
    """Atomic, 0600 and owned by the runner user from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jit-")
    try:
        os.fchown(fd, user.pw_uid, user.pw_gid)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str]) -> int:
    cleanup = argv[:1] == ["--cleanup"]
    args = argv[1:] if cleanup else argv
    if len(args) != 1 or args[0] not in TIERS:
        print(f"usage: prepare-runner.py [--cleanup] {{{','.join(TIERS)}}}", file=sys.stderr)
        return 2
    tier = args[0]
    try:
        conf = read_conf(tier)
        try:
            user = pwd.getpwnam(conf["RUNNER_USER"])
        except KeyError:
            raise SetupError(f"no user {conf['RUNNER_USER']!r}; run setup-runner.sh") from None
        if user.pw_uid == 0:
            raise SetupError("RUNNER_USER must not be root: jobs would own the host")
        (RUNTIME_DIR / "jitconfig").unlink(missing_ok=True)
        wipe_state(tier, user)
        if cleanup:
            return 0
        jit = request_jitconfig(tier, conf, read_token(tier))
        write_secret(RUNTIME_DIR / "jitconfig", jit, user)
    except SetupError as exc:
        print(f"prepare-runner ({tier}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
