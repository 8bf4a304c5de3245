"""Trust tiers and who may write what in MLflow: pr (pull-request jobs), trusted (main, retrain)
and production (release).

The tier setting (`mlflow.tier`, env `ML_TIER`) only picks behaviour: the pr tier logs its runs
to the PR experiment and registers nothing. What enforces the tiers is the tracking server
(`mlflow server --app-name basic-auth`, deploy/mlflow/) and the credentials each job gets from
its GitHub environment (MLFLOW_TRACKING_USERNAME/PASSWORD): a PR job holding the pr identity
cannot write the production model whatever its code does.

`apply` provisions the identities, experiments, registered model and grants from admin
credentials, idempotently (`ml registry access apply`). MLflow's unit of permission is the
experiment and the registered model: a version, its tags and the model's aliases share the
model's EDIT, so trusted and production are told apart by which job holds which credential,
not by MLflow.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.errors import UserError

if TYPE_CHECKING:
    from ml.config import Settings

PR, TRUSTED, PRODUCTION = "pr", "trusted", "production"
TIERS = (PR, TRUSTED, PRODUCTION)
DEFAULT_USERNAMES = {PR: "ml-pr", TRUSTED: "ml-trusted", PRODUCTION: "ml-production"}
EXPERIMENT, MODEL = "experiment", "registered_model"


class AccessError(UserError):
    """Provisioning cannot be done, or the tracking server refused this identity."""


def apply_tier(raw: dict[str, Any], provenance: dict[str, str]) -> None:
    """In the pr tier the run experiment is the PR one, so training, its epoch logger and every
    later lookup use it without knowing about tiers (called by load_settings)."""
    section = raw.setdefault("mlflow", {})
    if section is None:
        section = raw["mlflow"] = {}
    if not isinstance(section, dict):
        return  # not a mapping: validation reports it
    experiment = section.get("experiment") or "tag-classifier"
    pr_experiment = section.get("pr_experiment") or f"{experiment}-pr"
    section["pr_experiment"] = pr_experiment
    if section.get("tier") == PR:
        section["experiment"] = pr_experiment
        provenance["mlflow.experiment"] = "tier pr (mlflow.pr_experiment)"


def identity(tier: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(username, password) of a tier's identity: ML_ACCESS_<TIER>_USERNAME / _PASSWORD."""
    env = os.environ if environ is None else environ
    prefix = f"ML_ACCESS_{tier.upper()}_"
    return env.get(prefix + "USERNAME") or DEFAULT_USERNAMES[tier], env.get(prefix + "PASSWORD", "")


@dataclass(frozen=True)
class Grant:
    tier: str
    resource_type: str  # EXPERIMENT or MODEL
    name: str  # experiment or registered model name
    permission: str  # READ / EDIT


def policy(production_experiment: str, pr_experiment: str, model: str) -> list[Grant]:
    """Who may do what: the one table docs/security.md describes. Everything not granted here
    falls to default_permission (NO_PERMISSIONS in deploy/mlflow/basic_auth.ini)."""
    return [
        # PR jobs: their own runs, and reading what they compare with (the champion's run).
        Grant(PR, EXPERIMENT, pr_experiment, "EDIT"),
        Grant(PR, EXPERIMENT, production_experiment, "READ"),
        Grant(PR, MODEL, model, "READ"),
        # main/retrain: train, register, gate (version tags), the challenger alias.
        Grant(TRUSTED, EXPERIMENT, production_experiment, "EDIT"),
        Grant(TRUSTED, MODEL, model, "EDIT"),
        # release: reads the runs, moves champion and writes the audit tags.
        Grant(PRODUCTION, EXPERIMENT, production_experiment, "READ"),
        Grant(PRODUCTION, MODEL, model, "EDIT"),
        # ... and reads PR runs, so it can say why it refuses a version made from one.
        Grant(PRODUCTION, EXPERIMENT, pr_experiment, "READ"),
    ]


def _names(settings: Settings) -> tuple[str, str, str]:
    if settings.mlflow.tier == PR:
        raise AccessError(
            "provisioning needs the production experiment's name, which the pr tier replaces; "
            "run it with ML_TIER=trusted and the admin credentials"
        )
    names = settings.mlflow
    return names.experiment, names.pr_experiment, names.registered_model


def _ensure_user(auth: Any, username: str, password: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        user = auth.get_user(username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        if not password:
            raise AccessError(f"user {username} does not exist and no password was given") from exc
        auth.create_user(username, password)
        return "created"
    if user.is_admin:
        auth.update_user_admin(username, False)  # an admin bypasses every grant below
    if password:
        auth.update_user_password(username, password)
    return "exists"


def _ensure_resources(client: Any, experiments: list[str], model: str) -> dict[str, str]:
    """Experiment name -> id, creating what is missing; the registered model too."""
    from mlflow.exceptions import MlflowException

    ids = {}
    for name in experiments:
        found = client.get_experiment_by_name(name)
        ids[name] = found.experiment_id if found else client.create_experiment(name)
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model)
    return ids


def _grant(auth: Any, username: str, resource_type: str, resource_id: str, level: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, level)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # Re-grant so a changed level (or a hand-made one) ends up as the policy says.
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, level)


def apply(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Create the three users, the experiments and the registered model, and grant the policy.
    Runs as the admin named by MLFLOW_TRACKING_USERNAME/PASSWORD; safe to repeat."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    from ml.registry import tracking_uri

    env = os.environ if environ is None else environ
    if not env.get("MLFLOW_TRACKING_USERNAME"):
        raise AccessError("set MLFLOW_TRACKING_USERNAME/PASSWORD to the MLflow admin's credentials")
    production, pr_experiment, model = _names(settings)
    uri = tracking_uri(settings)
    if not uri.startswith(("http://", "https://")):
        raise AccessError(f"{uri} is not a tracking server; access control needs basic-auth")
    auth, client = AuthServiceClient(uri), MlflowClient(tracking_uri=uri, registry_uri=uri)
    with permission_errors("provision access (is this the admin?)"):
        users = {tier: identity(tier, env) for tier in TIERS}
        done = {name: _ensure_user(auth, name, password) for name, password in users.values()}
        ids = _ensure_resources(client, [production, pr_experiment], model)
        grants = policy(production, pr_experiment, model)
        for grant in grants:
            resource_id = ids[grant.name] if grant.resource_type == EXPERIMENT else grant.name
            _grant(auth, users[grant.tier][0], grant.resource_type, resource_id, grant.permission)
    return {
        "tracking_uri": uri,
        "users": done,
        "experiments": ids,
        "registered_model": model,
        "grants": [
            f"{users[g.tier][0]} ({g.tier}): {g.permission} on {g.resource_type} {g.name}"
            for g in grants
        ],
    }


@contextlib.contextmanager
def permission_errors(action: str) -> Iterator[None]:
    """MLflow's 401/403 as one clear error naming the identity, its tier and the fix."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        code = exc.error_code
        if code not in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no MLFLOW_TRACKING_USERNAME)"
        tier = os.environ.get("ML_TIER") or "trusted"
        why = (
            "the credentials were not accepted; check MLFLOW_TRACKING_USERNAME/PASSWORD"
            if code == "UNAUTHENTICATED"
            else "this identity may not do that; only trusted (main, retrain) and production "
            "(release) jobs write the production model (docs/security.md)"
        )
        raise AccessError(
            f"the tracking server refused to {action} for user {user} (tier {tier}): {why}"
        ) from exc
