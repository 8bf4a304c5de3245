"""What a release checks before anything moves: the commit is on main, the version registered
for it comes from a trusted training run of that commit, it passed the gate, and it is not
older than the champion.

The registry's permission model (MLflow's basic-auth app, docs/security.md) is what keeps
untrusted identities from writing the production registered model and the trusted experiment;
these checks make a release refuse anything that did not come through that path, and say why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

MAIN_REF_ENV = "ML_RELEASE_MAIN_REF"
DEFAULT_MAIN_REFS = ("origin/main", "main")
# The commit a training run ran from: `git_sha` (ml train; "-dirty" for a modified tree), and
# MLflow's own tag, which must agree where MLflow found a repository.
MLFLOW_COMMIT_TAG = "mlflow.source.git.commit"


class ReleaseError(UserError):
    """The release cannot go ahead, or failed and was rolled back; the message says which."""

    exit_code = 1


# ---- git ----------------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReleaseError(f"cannot run git in {root}: {exc}") from exc


def _is_shallow(root: Path) -> bool:
    return _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"


def _resolve(root: Path, revision: str) -> str | None:
    out = _git(root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    return out.stdout.strip() if out.returncode == 0 else None


def main_ref(root: Path, configured: str | None = None) -> str:
    """The ref that stands for main: `configured` (--main-ref / $ML_RELEASE_MAIN_REF), else
    origin/main, else a local main."""
    configured = configured or os.environ.get(MAIN_REF_ENV) or None
    candidates = (configured,) if configured else DEFAULT_MAIN_REFS
    for ref in candidates:
        if _resolve(root, ref):
            return ref
    shallow = " This checkout is shallow:" if _is_shallow(root) else ""
    raise ReleaseError(
        f"cannot tell whether the commit is on main: no {' or '.join(candidates)} in "
        f"{root}.{shallow} check out with full history and branches (actions/checkout "
        f"`fetch-depth: 0`, or `git fetch origin main`), or name the ref with --main-ref / "
        f"{MAIN_REF_ENV}"
    )


def is_ancestor(root: Path, older: str, newer: str) -> bool:
    out = _git(root, "merge-base", "--is-ancestor", older, newer)
    if out.returncode not in (0, 1):
        raise ReleaseError(f"git merge-base {older} {newer} failed: {out.stderr.strip()}")
    return out.returncode == 0


def check_on_main(root: Path, commit: str, configured_ref: str | None = None) -> str:
    """The full sha of `commit`, which must be on main (an ancestor of the main ref)."""
    sha = _resolve(root, commit)
    if sha is None:
        raise ReleaseError(
            f"commit {commit!r} is not in the checkout at {root}; fetch it (or check out with "
            "`fetch-depth: 0`)"
        )
    ref = main_ref(root, configured_ref)
    if not is_ancestor(root, sha, ref):
        shallow = (
            " (the checkout is shallow, so main's history may be cut off: fetch with "
            "`fetch-depth: 0`)"
            if _is_shallow(root)
            else ""
        )
        raise ReleaseError(
            f"commit {sha[:12]} is not on main ({ref}){shallow}; only a commit merged to main "
            "can be released: merge it, then tag the merge commit"
        )
    return sha


# ---- the registered version ---------------------------------------------------------------------


def find_version_for_commit(settings: Settings, registry: MlflowClient, commit: str) -> Any:
    """The newest registered version trained from `commit` (its git_sha tag)."""
    name = settings.mlflow.registered_model
    versions = [
        v
        for v in registry.search_model_versions(f"name='{name}'")
        if v.tags.get("git_sha") == commit
    ]
    if not versions:
        raise ReleaseError(
            f"no version of {name} was registered for commit {commit}; the main workflow "
            "registers one for every merge (run it for this commit, then tag again)"
        )
    return max(versions, key=lambda v: int(v.version))


def trusted_experiment(settings: Settings) -> str:
    """The experiment production's training runs log to (main and retrain); PR jobs log to
    mlflow.pr_experiment and cannot write this one."""
    from ml.access import PR

    if settings.mlflow.tier == PR:  # its settings name the PR experiment in place of this one
        raise ReleaseError(
            "ml release runs in the production tier (ML_TIER=production, the release job's "
            "environment), not the pr tier"
        )
    return settings.mlflow.experiment


def _source_run(registry: MlflowClient, version: ModelVersion) -> tuple[str | None, str | None]:
    """(run id, experiment id) that the version's artifacts come from, read from the artifacts'
    own record (a logged model's source run, or the run whose artifact folder holds them),
    not from the run_id the version claims."""
    source = version.source or ""
    if source.startswith("models:/m-"):
        logged = registry.get_logged_model(source.removeprefix("models:/").split("/")[0])
        return logged.source_run_id, logged.experiment_id
    if source.startswith("runs:/"):
        run_id = source.removeprefix("runs:/").split("/")[0]
        return run_id, registry.get_run(run_id).info.experiment_id
    if version.run_id:
        run = registry.get_run(version.run_id)
        if source.startswith(run.info.artifact_uri.rstrip("/") + "/"):
            return run.info.run_id, run.info.experiment_id
    return None, None


def check_provenance(
    settings: Settings, registry: MlflowClient, version: ModelVersion, commit: str
) -> str:
    """The version's artifacts come from a run in the trusted experiment whose source commit is
    `commit`, or a main commit before it whose training `commit` reused (DVC's run cache
    restores an unchanged train stage, and `ml registry register` then tags the same version
    with the new commit). Returns the run's commit."""
    label = f"version {version.version} of {version.name}"
    if version.name != settings.mlflow.registered_model:
        raise ReleaseError(
            f"{label} is not the production model {settings.mlflow.registered_model}"
        )
    run_id, experiment_id = _source_run(registry, version)
    if run_id is None or run_id != version.run_id:
        raise ReleaseError(
            f"{label}: its artifacts ({version.source}) are not those of its training run "
            f"{version.run_id or '(none)'}; register the model from the run that trained it"
        )
    expected = trusted_experiment(settings)
    experiment = registry.get_experiment(experiment_id).name
    if experiment != expected:
        raise ReleaseError(
            f"{label} was trained in experiment {experiment!r}, not the trusted {expected!r} "
            "(a pull request's run is evidence for its review, never a release candidate)"
        )
    tags = registry.get_run(run_id).data.tags
    run_commit = tags.get("git_sha", "")
    if not run_commit or tags.get(MLFLOW_COMMIT_TAG, run_commit) != run_commit:
        found = (
            f"git_sha={run_commit or '(none)'}, {MLFLOW_COMMIT_TAG}={tags.get(MLFLOW_COMMIT_TAG)}"
        )
        raise ReleaseError(f"{label}: its run {run_id} names no single source commit ({found})")
    if run_commit != commit and not (
        _resolve(settings.root, run_commit) == run_commit
        and is_ancestor(settings.root, run_commit, commit)
    ):
        raise ReleaseError(
            f"{label}: its run {run_id} was trained from {run_commit[:20]}, which is neither "
            f"commit {commit[:12]} nor a commit before it on main"
        )
    return run_commit


def check_gate(version: ModelVersion, champion: str | None, allow_downgrade: bool) -> None:
    """Passed the gate, against the champion it would replace (as `ml registry promote` asks,
    checked here so a release refuses before it deploys)."""
    from ml.registry import GATE_CHAMPION_TAG, GATE_STATUS_TAG, NO_CHAMPION

    status = version.tags.get(GATE_STATUS_TAG)
    if status != "passed":
        raise ReleaseError(
            f"version {version.version} did not pass the gate ({status or 'no decision'}); it "
            "cannot be released"
        )
    against = version.tags.get(GATE_CHAMPION_TAG)
    if str(version.version) == champion or allow_downgrade:
        return
    if against != (champion or NO_CHAMPION):
        raise ReleaseError(
            f"version {version.version} passed the gate against champion {against}, but the "
            f"champion is now {champion or NO_CHAMPION}; run `ml gate` for it again"
        )


def check_order(version: str, champion: str | None, allow_downgrade: bool) -> None:
    """Never replace the champion with an older version by accident (two tags pushed together
    can run in either order)."""
    if champion is not None and int(version) < int(champion) and not allow_downgrade:
        raise ReleaseError(
            f"version {version} is older than the champion, version {champion}; refusing to "
            "downgrade (pass --allow-downgrade to roll production back on purpose)"
        )
