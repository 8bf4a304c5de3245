"""`ml registry show`: the registered model's aliases, its newest versions with their key tags,
and the audit events of those versions (newest first). `ml registry history` (history.py) reads
the champion's periods instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.config import Settings


def show(settings: Settings, limit: int = 20) -> dict[str, Any]:
    """The registered model: aliases, newest versions with their key tags, and the alias history."""
    from mlflow.exceptions import MlflowException

    from ml.registry import (
        AUDIT_PREFIX,
        GATE_STATUS_TAG,
        RegistryError,
        _redact,
        client,
        tracking_uri,
    )

    registry = client(settings)
    name = settings.mlflow.registered_model
    try:
        model = registry.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(
            f"no registered model {name!r} yet; run `ml registry register`"
        ) from exc
    versions = sorted(
        registry.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)
    )
    rows, history = [], []
    for v in versions:
        tags = v.tags or {}
        history += [json.loads(val) for key, val in tags.items() if key.startswith(AUDIT_PREFIX)]
        rows.append(
            {
                "version": str(v.version),
                "aliases": list(v.aliases or []),
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                "run_id": v.run_id,
                "gate": tags.get(GATE_STATUS_TAG, ""),
                "f1_weighted": tags.get("metric.f1_weighted", ""),
                "git_sha": tags.get("git_sha", "")[:12],
                "branch": tags.get("git_branch", ""),
                "pr": tags.get("pr_number", ""),
            }
        )
    history.sort(key=lambda e: (e.get("when", ""), e.get("action") != "demote"), reverse=True)
    return {
        "name": name,
        "tracking_uri": _redact(tracking_uri(settings)),
        "aliases": {alias: str(version) for alias, version in (model.aliases or {}).items()},
        "versions": rows[:limit],
        "history": history[:limit],
    }
