"""The model registry (MLflow): one registered model, versions tagged with provenance, aliases.

Aliases, not stages: `challenger` is the newest candidate, `champion` serves production.
Every alias move is recorded on the versions involved as `audit.NNNN` tags (JSON: action, alias,
who, when, why), and a promoted version remembers the champion it replaced
(`champion.previous_version`), so `rollback` restores it in one command, and repeated rollbacks
walk further back.

A version can only become champion when `ml gate` passed it against the current champion
(`gate.status` = passed); `--force` overrides, and the override is recorded with its reason.

In the pr tier (ml/access.py) nothing is written here: `register` describes the PR run's model
as an unregistered challenger in reports/registry.json and the gate evaluates it from its run.
A PR's model is evidence for its comment, never a release candidate.

Parts: history.py (`ml registry history`: who was champion when, from the ordered champion log
record_event keeps on the registered model) and card.py (the model card logged with every
version at `register` and completed by `ml gate`).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.access import PR, permission_errors
from ml.config import Settings, params_hash
from ml.errors import UserError
from ml.io import sha256_file, write_json
from ml.registry.card import CARD_TAG, gate_inputs, log_card, logged_inputs, register_inputs
from ml.registry.history import CHAMPION_MOVES, append_champion_log
from ml.registry.listing import show as show  # `from ml.registry import show` keeps working

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
# registry.json lives beside train.report (reports/train.json, or reports/NAME/train.json for a
# model's scoped outputs), as train_metrics.json does.
REGISTRY_FILE = "registry.json"
AUDIT_PREFIX = "audit."
PREVIOUS_CHAMPION_TAG = "champion.previous_version"
GATE_STATUS_TAG = "gate.status"
GATE_CHAMPION_TAG = "gate.champion_version"
NO_CHAMPION = "none"
UNREGISTERED = "unregistered"  # the version field of a pr-tier challenger
# MLflow caps tag values (5000 characters on SQL stores); keep free text well inside that.
MAX_TAG_CHARS = 4000


def registry_report(settings: Settings) -> Path:
    """reports/registry.json (beside train.report): what `register` did, for the gate and report."""
    return settings.path(settings.train.report).with_name(REGISTRY_FILE)


class RegistryError(UserError):
    """A registry operation cannot be done (unknown version, no champion, gate not passed)."""


def tracking_uri(settings: Settings) -> str:
    """The tracking/registry URI, resolved as training resolves it (one store for both)."""
    from ml.train.tracking import resolve_tracking_uri

    return resolve_tracking_uri(settings)


def client(settings: Settings) -> MlflowClient:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from ml.train.tracking import check_tracking_uri

    uri = tracking_uri(settings)
    check_tracking_uri(uri)  # fail fast: MLflow itself retries an unreachable server for minutes
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def actor() -> str:
    """Who is acting: the GitHub user in a workflow, else the OS user."""
    return os.environ.get("GITHUB_ACTOR") or getpass.getuser()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _git(settings: Settings, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=settings.root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def pr_number(environ: dict[str, str] | None = None) -> str:
    """The PR number from ML_PR_NUMBER, or from GITHUB_REF (refs/pull/N/merge) in a PR workflow."""
    env = os.environ if environ is None else environ
    if env.get("ML_PR_NUMBER"):
        return env["ML_PR_NUMBER"]
    match = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", env.get("GITHUB_REF", ""))
    return match.group(1) if match else ""


def data_checksum(settings: Settings) -> str:
    """One sha256 over the split files (train, val, test) the model was trained and scored on."""
    splits = settings.path(settings.data.splits_dir)
    digest = hashlib.sha256()
    for name in ("train.csv", "val.csv", "test.csv"):
        path = splits / name
        digest.update(f"{name}:{sha256_file(path) if path.is_file() else 'missing'}\n".encode())
    return digest.hexdigest()


def provenance_tags(settings: Settings) -> dict[str, str]:
    env = os.environ
    branch = env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME") or ""
    return {
        "git_sha": env.get("GITHUB_SHA") or _git(settings, "rev-parse", "HEAD") or "unknown",
        "git_branch": branch or _git(settings, "rev-parse", "--abbrev-ref", "HEAD") or "unknown",
        "pr_number": pr_number(),
        "data_sha256": data_checksum(settings),
        "params_sha256": params_hash(settings),
    }


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    if not path.is_file():
        raise RegistryError(f"{path} not found; {hint}")
    return json.loads(path.read_text())


def alias_version(registry: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return registry.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def get_version(registry: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    if not str(version).isdigit():
        raise RegistryError(f"model version must be a number, got {version!r}")
    try:
        return registry.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version}") from exc


def record_event(
    registry: MlflowClient, name: str, version: str, action: str, alias: str, why: str, **extra: Any
) -> dict[str, Any]:
    """Append one alias move to the version's audit tags (who/when/why)."""
    current = registry.get_model_version(name, version).tags
    sequence = 1 + sum(key.startswith(AUDIT_PREFIX) for key in current)
    event = {
        "action": action,
        "alias": alias,
        "version": str(version),
        "who": actor(),
        "when": utc_now(),
        "why": why[: MAX_TAG_CHARS // 2],
        **extra,
    }
    key = f"{AUDIT_PREFIX}{sequence:04d}"
    registry.set_model_version_tag(name, version, key, json.dumps(event))
    if alias == CHAMPION and action in CHAMPION_MOVES:
        append_champion_log(registry, name, event)
    return event


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    model_uri: str
    created: bool  # False when this run was already registered (dvc run-cache restore, rerun)
    registered: bool = True  # False in the pr tier: described in the report, not registered


def _candidate(settings: Settings) -> tuple[str, str, dict[str, str]]:
    """(model_uri, run_id, tags) of the last `ml train` run's model."""
    from ml.evaluate.metrics import HEADLINE

    train = _read_json(settings.path(settings.train.report), "run `ml train` first")
    metrics = _read_json(settings.path(settings.evaluate.metrics), "run `ml evaluate` first")
    model_uri, run_id = train.get("model_uri"), train.get("run_id")
    if not model_uri or not run_id:
        raise RegistryError(f"{settings.train.report} lacks model_uri/run_id; rerun `ml train`")
    tags = {
        **provenance_tags(settings),
        "run_id": run_id,
        "tier": settings.mlflow.tier,
        # The authenticated identity (what the server checked), else who ran it locally.
        "registered_by": os.environ.get("MLFLOW_TRACKING_USERNAME") or actor(),
        **{f"metric.{k}": f"{metrics[k]:.6f}" for k in HEADLINE if k in metrics},
    }
    return model_uri, run_id, tags


def _describe_unregistered(settings: Settings) -> Registered:
    """The pr tier's register: the run's model as the challenger, with nothing written to the
    registry (the PR identity cannot, and a PR's model must never become a release candidate)."""
    model_uri, run_id, tags = _candidate(settings)
    name = settings.mlflow.registered_model
    write_json(
        registry_report(settings),
        {
            "name": name,
            "version": UNREGISTERED,
            "registered": False,
            "tier": PR,
            "model_uri": model_uri,
            "source_uri": model_uri,
            "run_id": run_id,
            "tracking_uri": _redact(tracking_uri(settings)),
            "tags": tags,
        },
    )
    return Registered(name, UNREGISTERED, run_id, model_uri, created=False, registered=False)


@permission_errors("register a model version")
def register(settings: Settings) -> Registered:
    """Register the model of the last `ml train` run (reports/train.json) as a new version with
    provenance and headline-metric tags, and point `challenger` at it. Idempotent per run.
    In the pr tier only reports/registry.json is written (see the module docstring)."""
    if settings.mlflow.tier == PR:
        return _describe_unregistered(settings)
    model_uri, run_id, tags = _candidate(settings)
    name = settings.mlflow.registered_model
    registry = client(settings)
    existing = registry.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version, created = max(existing, key=lambda v: int(v.version)), False
    else:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            version = mlflow.register_model(model_uri, name, tags=tags)
        except MlflowException as exc:
            if exc.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                raise  # permission_errors names the identity and the fix
            raise RegistryError(f"cannot register {model_uri} as {name}: {exc.message}") from exc
        created = True
    for key, value in tags.items():
        registry.set_model_version_tag(name, version.version, key, value)
    previous = alias_version(registry, name, CHALLENGER)
    if previous is None or previous.version != version.version:
        registry.set_registered_model_alias(name, CHALLENGER, version.version)
        record_event(
            registry,
            name,
            version.version,
            "register",
            CHALLENGER,
            f"newest candidate, trained in run {run_id}",
            from_version=previous.version if previous else None,
        )
    if CARD_TAG not in (registry.get_model_version(name, version.version).tags or {}):
        card = register_inputs(settings, str(version.version), run_id, tags)
        log_card(settings, registry, card, registry_report(settings).parent)
    result = Registered(name, str(version.version), run_id, model_uri, created)
    write_json(
        registry_report(settings),
        {
            "name": name,
            "version": result.version,
            "registered": True,
            "tier": settings.mlflow.tier,
            "model_uri": f"models:/{name}/{result.version}",
            "source_uri": model_uri,
            "run_id": run_id,
            "tracking_uri": _redact(tracking_uri(settings)),
            "tags": tags,
        },
    )
    return result


def _redact(uri: str) -> str:
    """Drop credentials from a URI before it lands in a report."""
    return re.sub(r"//[^/@]+@", "//", uri)


@permission_errors("record the gate decision on a model version")
def record_gate(
    settings: Settings, version: str, passed: bool, champion_version: str | None, summary: str
) -> None:
    """Store the gate decision on the version; promote reads it."""
    registry = client(settings)
    name = settings.mlflow.registered_model
    for key, value in {
        GATE_STATUS_TAG: "passed" if passed else "failed",
        GATE_CHAMPION_TAG: champion_version or NO_CHAMPION,
        "gate.decided_at": utc_now(),
        "gate.summary": summary[:MAX_TAG_CHARS],
    }.items():
        registry.set_model_version_tag(name, version, key, value)
    found = registry.get_model_version(name, version)
    # A version registered before cards existed (or by hand) has no card to add the gate to.
    card = logged_inputs(found.run_id, version) if CARD_TAG in (found.tags or {}) else None
    if card is not None:
        card["gate"] = gate_inputs(json.loads(settings.path(settings.gate.report).read_text()))
        log_card(settings, registry, card, registry_report(settings).parent)


@dataclass(frozen=True)
class AliasMove:
    name: str
    version: str
    previous: str | None
    forced: bool = False


@permission_errors(f"move the {CHAMPION} alias")
def promote(
    settings: Settings, version: str | None, reason: str, force: bool = False, release: str = ""
) -> AliasMove:
    """Point `champion` at `version` (default: the challenger). Refuses a version that did not
    pass the gate against the current champion, unless `force` (recorded with the reason).
    `release`: the release tag deploying it (recorded; `ml registry history` shows it)."""
    if not reason.strip():
        raise RegistryError("a --reason is required: it is recorded with the promotion")
    registry = client(settings)
    name = settings.mlflow.registered_model
    if version is None:
        challenger = alias_version(registry, name, CHALLENGER)
        if challenger is None:
            raise RegistryError(f"{name} has no {CHALLENGER}; register a model or name a version")
        version = str(challenger.version)
    target = get_version(registry, name, version)
    current = alias_version(registry, name, CHAMPION)
    current_version = str(current.version) if current else None
    if current_version == str(target.version):
        raise RegistryError(f"version {version} is already the {CHAMPION}")

    gate_status = target.tags.get(GATE_STATUS_TAG)
    gated_against = target.tags.get(GATE_CHAMPION_TAG)
    if gate_status != "passed":
        problem = (
            f"version {version} failed the gate ({target.tags.get('gate.summary', '')})"
            if gate_status == "failed"
            else f"version {version} has no gate decision; run `ml gate` first"
        )
    elif gated_against != (current_version or NO_CHAMPION):
        problem = (
            f"version {version} passed the gate against champion {gated_against}, but the "
            f"champion is now {current_version or NO_CHAMPION}; run `ml gate` again"
        )
    else:
        problem = ""
    if problem and not force:
        raise RegistryError(f"{problem}. Refusing to promote (override: --force with --reason)")

    registry.set_registered_model_alias(name, CHAMPION, str(target.version))
    registry.set_model_version_tag(
        name, target.version, PREVIOUS_CHAMPION_TAG, current_version or ""
    )
    record_event(
        registry,
        name,
        target.version,
        "promote",
        CHAMPION,
        reason,
        from_version=current_version,
        gate_status=gate_status or "none",
        forced=bool(problem and force),
        override=problem if force else "",
        **({"release": release} if release else {}),
    )
    if current_version:
        record_event(
            registry, name, current_version, "demote", CHAMPION, reason, to_version=version
        )
    return AliasMove(name, str(target.version), current_version, bool(problem and force))


@permission_errors(f"move the {CHAMPION} alias back")
def rollback(settings: Settings, reason: str) -> AliasMove:
    """Point `champion` back at the version it replaced."""
    if not reason.strip():
        raise RegistryError("a --reason is required: it is recorded with the rollback")
    registry = client(settings)
    name = settings.mlflow.registered_model
    current = alias_version(registry, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no {CHAMPION}; nothing to roll back")
    previous = current.tags.get(PREVIOUS_CHAMPION_TAG, "")
    if not previous:
        raise RegistryError(
            f"{CHAMPION} version {current.version} replaced no earlier champion; nothing to roll "
            "back to (promote a specific version instead)"
        )
    get_version(registry, name, previous)  # still exists?
    registry.set_registered_model_alias(name, CHAMPION, previous)
    record_event(
        registry, name, previous, "rollback", CHAMPION, reason, from_version=str(current.version)
    )
    record_event(
        registry, name, str(current.version), "rolled_back", CHAMPION, reason, to_version=previous
    )
    return AliasMove(name, previous, str(current.version))
