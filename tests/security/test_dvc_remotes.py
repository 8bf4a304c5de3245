"""Red team, DVC: a PR job tries to overwrite the trusted run cache that main restores from.

The engine is the filesystem: the trusted remote (a local-directory remote, as in .dvc/config)
is owned by the trusted side and not writable by the PR job's user, so a PR job reads it and
pushes, if anything, to the `pr` remote. Tests run as root, which ignores file modes, so the PR
side's DVC commands run as an unprivileged uid (setpriv, uid/gid 65534). With the protection
off (a world-writable trusted remote) the same attack must poison what main restores."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines import VENV_BIN, engine_env

pytestmark = pytest.mark.slow
NOBODY = 65534
DVC_YAML = (
    "stages:\n  build:\n    cmd: sh make.sh\n    deps:\n      - input.txt\n"
    "    outs:\n      - out.txt\n"
)


def dvc(cwd: Path, *args: str, as_pr: bool = False, check: bool = True):
    command = [str(VENV_BIN / "dvc"), *args]
    if as_pr:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    env = engine_env(HOME=str(cwd), DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(cwd / ".site"))
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def workspace(base: Path, name: str, make: str) -> Path:
    """A DVC project with the trusted and pr remotes, one stage whose command is not a dep
    (like PR code a stage runs without declaring it)."""
    root = base / name
    root.mkdir()
    dvc(root, "init", "--no-scm")
    (root / ".dvc" / "config").write_text(
        "[core]\n    no_scm = true\n    analytics = false\n    remote = trusted\n"
        f"['remote \"trusted\"']\n    url = {base / 'trusted-remote'}\n"
        f"['remote \"pr\"']\n    url = {base / 'pr-remote'}\n"
    )
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "make.sh").write_text(f"echo {make} > out.txt\n")
    (root / "input.txt").write_text("the data\n")  # a stage without deps is never cached
    return root


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root, so uid 65534 could not
    # even reach its own workspace.
    path = Path(tempfile.mkdtemp(prefix="ml-red-team-dvc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _chmod_tree(path: Path, mode: int) -> None:
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        for name in files:
            os.chmod(Path(folder) / name, mode & 0o666)


@pytest.mark.parametrize("protected", [True, False], ids=["protected", "protection-off"])
def test_pr_job_overwrites_the_trusted_run_cache(base: Path, protected: bool):
    # main: builds and pushes the trusted run cache (root owns the remote, mode 755).
    main = workspace(base, "main", "trusted")
    dvc(main, "repro")
    dvc(main, "push", "--run-cache")
    (base / "pr-remote").mkdir()
    os.chown(base / "pr-remote", NOBODY, NOBODY)
    _chmod_tree(base / "trusted-remote", 0o777 if not protected else 0o755)

    # The PR job: its own checkout, with a changed make.sh that the stage does not declare.
    pr = workspace(base, "pr", "poisoned")
    for folder, _dirs, files in os.walk(pr):
        for name in [folder, *(Path(folder) / f for f in files)]:
            os.chown(name, NOBODY, NOBODY)
    dvc(pr, "repro", "--pull", as_pr=True)  # reads the trusted remote: restored, not run
    assert (pr / "out.txt").read_text().strip() == "trusted"
    dvc(pr, "repro", "-f", as_pr=True)  # the attack: a poisoned result under main's key
    assert (pr / "out.txt").read_text().strip() == "poisoned"
    dvc(pr, "push", "-r", "pr", "--run-cache", as_pr=True)  # what pr.yml does: allowed
    runs = base / "trusted-remote" / "runs"
    mains = [str(p) for p in runs.rglob("*") if p.is_file()]
    attack = dvc(pr, "push", "-r", "trusted", "--run-cache", as_pr=True, check=False)
    # ... and, with write access, removes main's entry so its own is the one restored.
    wipe = " ".join(mains)
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-c",
         f"rm -f {wipe}"], capture_output=True,
    )  # fmt: skip

    # main again, from a fresh checkout: what does `dvc repro --pull` restore?
    again = workspace(base, "main-again", "trusted")
    dvc(again, "repro", "--pull")
    restored = (again / "out.txt").read_text().strip()
    if protected:
        assert attack.returncode != 0, attack.stdout
        assert "ermission denied" in attack.stdout + attack.stderr
        assert restored == "trusted"
    else:
        assert attack.returncode == 0, attack.stdout + attack.stderr
        assert restored == "poisoned"
