"""The pull request that `ml retrain` opens: the new data version on its own branch, pushed to
the git remote, and a PR opened through GitHub's REST API.

1. DVC: the stages `ml retrain` ran in-process (ingest .. evaluate; STAGE@MODEL where
   dvc.yaml runs every declared model, so only that model's entries change) are committed to
   dvc.lock and their outputs plus the run cache are pushed (`dvc push --run-cache`) to the trusted
   remote, so the PR's own `dvc repro --pull` restores the retrained model instead of training.
2. git: one commit holding the changed dvc.lock on top of HEAD, built in a private index (the
   checked-out branch and its index are left alone), pushed to `retrain/<model>-<data>-<params>`:
   a name derived from the model and the data and params hashes, so the same data and params of
   one model map to one branch (and each drifted model gets its own PR).
3. GitHub: `POST /repos/{owner}/{repo}/pulls`. The token comes from $ML_RETRAIN_GITHUB_TOKEN (a
   GitHub App installation token: a PR opened with the job's GITHUB_TOKEN would not trigger
   pr.yml). It reaches git through environment-scoped config (GIT_CONFIG_COUNT), never the
   remote URL, .git/config, argv or a log line.

Idempotent: an open PR from that branch, or a branch already pushed whose PR was closed, means
nothing is pushed or opened; the existing PR is reported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.monitor.retrain import RetrainError

TOKEN_ENV = "ML_RETRAIN_GITHUB_TOKEN"
# The stages `ml retrain` runs in-process, in pipeline order. ingest is recorded in dvc.lock but
# not in the run cache: newly labelled rows are appended after `ml data ingest`, so data/raw is
# not what that command alone produces from these params.
STAGES = ("ingest", "validate", "split", "train", "evaluate")
NO_RUN_CACHE = {"ingest"}
DATA_STAGES = ("ingest", "validate", "split")
COMMITTED_PATHS = ("dvc.lock",)
DEFAULT_AUTHOR = ("ml-retrain", "ml-retrain@users.noreply.github.com")


@dataclass(frozen=True)
class GitHubTarget:
    repository: str  # owner/name
    token: str
    api_url: str
    base: str
    remote: str = "origin"

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]


@dataclass(frozen=True)
class PullRequestOutcome:
    url: str | None
    created: bool
    branch: str
    commit: str | None
    message: str


def target_from_env(default_base: str, environ: Mapping[str, str] | None = None):
    """The GitHub repository to open the PR in, or None when no token is set (then `ml retrain`
    writes only the PR body). A token without a repository is a configuration error."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "")
    if not token:
        return None
    repository = env.get("GITHUB_REPOSITORY", "")
    if repository.count("/") != 1 or not all(repository.split("/")):
        raise RetrainError(
            f"${TOKEN_ENV} is set but GITHUB_REPOSITORY is {repository!r}: set it to owner/name "
            "(GitHub Actions sets it), or unset the token to only write the PR body"
        )
    return GitHubTarget(
        repository=repository,
        token=token,
        api_url=env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        base=env.get("ML_RETRAIN_BASE") or env.get("GITHUB_REF_NAME") or default_base,
        remote=env.get("ML_RETRAIN_REMOTE", "origin"),
    )


def branch_name(data_sha: str, params_sha: str, model: str | None = None) -> str:
    """One branch per model, data and params (the model's name first, so each drifted model's
    PR is told apart at a glance)."""
    prefix = f"{model}-" if model else ""
    return f"retrain/{prefix}{data_sha[:12]}-{params_sha[:12]}"


# --- GitHub's REST API ------------------------------------------------------------------------


def _api(target: GitHubTarget, method: str, path: str, payload: dict | None = None) -> Any:
    request = urllib.request.Request(
        f"{target.api_url}{path}",
        data=None if payload is None else json.dumps(payload).encode(),
        method=method,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {target.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "ml-retrain",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        hint = (
            f"; check ${TOKEN_ENV}: the GitHub App needs contents and pull-requests write on "
            f"{target.repository}"
            if exc.code in (401, 403, 404)
            else ""
        )
        raise RetrainError(f"GitHub API {method} {path}: HTTP {exc.code} {detail}{hint}") from exc
    except OSError as exc:
        raise RetrainError(f"GitHub API {method} {target.api_url}{path}: {exc}") from exc


def find_pulls(target: GitHubTarget, branch: str, state: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"head": f"{target.owner}:{branch}", "state": state})
    return _api(target, "GET", f"/repos/{target.repository}/pulls?{query}") or []


def create_pull(target: GitHubTarget, branch: str, title: str, body: str) -> dict[str, Any]:
    payload = {"title": title, "head": branch, "base": target.base, "body": body}
    return _api(target, "POST", f"/repos/{target.repository}/pulls", payload)


# --- git --------------------------------------------------------------------------------------


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=root,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RetrainError(f"git {args[0]} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


def _auth_env(root: Path, target: GitHubTarget) -> dict[str, str]:
    """The token as an HTTP header for this remote's host only, passed as environment-scoped
    git config: not in argv (visible to `ps`), not in the URL, not written to .git/config."""
    url = _git(root, "remote", "get-url", target.remote)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        return {}  # a local or ssh remote authenticates by other means
    port = f":{parts.port}" if parts.port else ""
    basic = base64.b64encode(f"x-access-token:{target.token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        # git matches http.<url>.* by port too: a URL without one means 443 only.
        "GIT_CONFIG_KEY_0": f"http.https://{parts.hostname}{port}/.extraheader",
        "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
    }


def remote_branch(root: Path, target: GitHubTarget, branch: str) -> str | None:
    """The commit the remote's branch points at, or None when it has no such branch."""
    out = _git(
        root,
        "ls-remote",
        "--heads",
        target.remote,
        f"refs/heads/{branch}",
        env=_auth_env(root, target),
    )
    return out.split()[0] if out else None


def commit_paths(root: Path, paths: tuple[str, ...], message: str) -> str | None:
    """A commit of HEAD plus the working-tree content of `paths`, built in a private index so the
    checkout's branch and index stay as they were; None when nothing differs from HEAD."""
    name = os.environ.get("ML_RETRAIN_GIT_NAME") or DEFAULT_AUTHOR[0]
    email = os.environ.get("ML_RETRAIN_GIT_EMAIL") or DEFAULT_AUTHOR[1]
    with tempfile.TemporaryDirectory(prefix="ml-retrain-index-") as tmp:
        env = {
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        _git(root, "read-tree", "HEAD", env=env)
        _git(root, "update-index", "--add", "--", *paths, env=env)
        tree = _git(root, "write-tree", env=env)
        if tree == _git(root, "rev-parse", "HEAD^{tree}"):
            return None
        return _git(root, "commit-tree", tree, "-p", "HEAD", "-m", message, env=env)


def push_branch(root: Path, target: GitHubTarget, commit: str, branch: str) -> None:
    # No force: a branch someone pushed meanwhile is never overwritten.
    _git(
        root,
        "push",
        "--quiet",
        target.remote,
        f"{commit}:refs/heads/{branch}",
        env=_auth_env(root, target),
    )


# --- DVC --------------------------------------------------------------------------------------


def _stage(repo: Any, name: str, model: str | None) -> Any:
    """The stage `name` of `model`: NAME@MODEL where dvc.yaml runs every model (`foreach`),
    else the one stage of that name (a one-model pipeline)."""
    stages = repo.stage.collect(name)
    if len(stages) == 1:
        return stages[0]
    wanted = f"{name}@{model}"
    for stage in stages:
        if stage.name == wanted:
            return stage
    raise RetrainError(
        f"dvc.yaml has no stage {wanted}: its {name} stages are "
        f"{sorted(s.name for s in stages)}; is model {model!r} in models.yaml?"
    )


def record_data_version(
    root: Path, train_is_reproducible: bool, trained_here: bool = True, model: str | None = None
) -> list[str]:
    """Commit the stages `ml retrain` ran to dvc.lock (and, where the outputs are what the
    stage's command produces, to the run cache): `model`'s stages only, so the PR changes that
    model's entries and no other model's. Without `trained_here` (a registered version was
    reused) only the data stages: a model left in the workspace may be from other data; the
    PR run trains. Stops at the first stage whose outputs are missing. Returns those committed."""
    from dvc.repo import Repo

    committed: list[str] = []
    # DVC's stage code resolves paths against the cwd (its CLI changes into the repo first).
    with contextlib.chdir(root), Repo(".") as repo, repo.lock:
        for name in STAGES if trained_here else DATA_STAGES:
            stage = _stage(repo, name, model)
            if not all(out.exists for out in stage.outs):
                break
            run_cache = name not in NO_RUN_CACHE and (
                train_is_reproducible or name not in ("train", "evaluate")
            )
            stage.save(run_cache=run_cache)
            stage.commit()
            stage.dvcfile.dump_stages([stage], update_pipeline=False)
            committed.append(stage.name)
    if not committed:
        raise RetrainError(
            f"none of the stages {', '.join(STAGES)} has its outputs in {root}: nothing to "
            "commit to dvc.lock (did the data stages run?)"
        )
    return committed


def _dvc(root: Path, *args: str) -> str:
    # This interpreter's DVC (a dependency of the package), whatever PATH holds.
    command = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RetrainError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def push_data_version(root: Path, stages: list[str]) -> None:
    """`dvc push --run-cache` to the trusted remote ($ML_RETRAIN_DVC_REMOTE, else DVC's default
    remote), then check that the remote holds every output dvc.lock names for those stages."""
    remote = os.environ.get("ML_RETRAIN_DVC_REMOTE")
    where = ["-r", remote] if remote else []
    _dvc(root, "push", "--run-cache", *where, *stages)
    missing = json.loads(_dvc(root, "status", "--cloud", "--json", *where, *stages) or "{}")
    if missing:
        raise RetrainError(
            f"after dvc push the remote still lacks {sorted(missing)}: the PR would not restore "
            "the retrained model; nothing was pushed to git"
        )


# --- the whole proposal -----------------------------------------------------------------------


def propose(
    root: Path,
    target: GitHubTarget,
    branch: str,
    title: str,
    body: str,
    train_is_reproducible: bool,
    trained_here: bool = True,
    model: str | None = None,
) -> PullRequestOutcome:
    """Open the retrain PR once per branch; see the module doc."""
    open_pulls = find_pulls(target, branch, "open")
    if open_pulls:
        url = open_pulls[0].get("html_url")
        return PullRequestOutcome(
            url, False, branch, None, f"pull request {url} is already open for this data"
        )
    pushed = remote_branch(root, target, branch)
    if pushed is not None:
        earlier = find_pulls(target, branch, "all")
        if earlier:
            url = earlier[0].get("html_url")
            return PullRequestOutcome(
                url,
                False,
                branch,
                pushed,
                f"pull request {url} for this data was closed or merged: not opened again",
            )
        commit = pushed  # pushed by an earlier run whose PR call failed: open it now
    else:
        stages = record_data_version(root, train_is_reproducible, trained_here, model)
        push_data_version(root, stages)
        commit = commit_paths(root, COMMITTED_PATHS, f"{title}\n\n{_commit_note(stages)}")
        if commit is None:
            return PullRequestOutcome(
                None, False, branch, None, "dvc.lock at HEAD already holds this data: no PR needed"
            )
        push_branch(root, target, commit, branch)
    pull = create_pull(target, branch, title, body)
    url = pull.get("html_url")
    return PullRequestOutcome(url, True, branch, commit, f"opened pull request {url}")


def _commit_note(stages: list[str]) -> str:
    return (
        f"dvc.lock records the stages {', '.join(stages)} as `ml retrain` ran them; their "
        "outputs and run cache are on the trusted DVC remote, so the PR run restores them."
    )
