"""Who was champion when: one row per champion period of a registered model.

Every move of the `champion` alias (promote, rollback, withdraw) is appended, in order, to the
registered model's `champion_log.NNNN` tags by `ml.registry.record_event`: one sequence per model,
so the order is exact whatever the clocks of the machines that moved it. A period runs from the
move that made a version champion to the next move. The versions' own `audit.NNNN` tags carry the
same events; a registry written before the log existed is read from those, ordered by time.

The release tag of a row is the `release` of the promotion that made the version champion, or of
its latest earlier promotion for a rollback (the tag whose deploy put it in production).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ml.config import Settings

CHAMPION_LOG_PREFIX = "champion_log."
# The actions that move the champion alias (demote/rolled_back describe the version it left).
CHAMPION_MOVES = ("promote", "rollback", "withdraw")
# The release workflow's promotion reason: "release v1.2.0" (ml/release): older events lack
# the `release` field.
_RELEASE_WHY = re.compile(r"release (\S+)")


def append_champion_log(registry: MlflowClient, name: str, event: dict[str, Any]) -> None:
    """Append one champion move to the registered model's ordered log."""
    tags = registry.get_registered_model(name).tags or {}
    sequence = 1 + sum(key.startswith(CHAMPION_LOG_PREFIX) for key in tags)
    registry.set_registered_model_tag(
        name, f"{CHAMPION_LOG_PREFIX}{sequence:04d}", json.dumps(event)
    )


def champion_moves(registry: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The champion moves of `name`, oldest first: the model's log, else the versions' audit."""
    from ml.registry import AUDIT_PREFIX, CHAMPION

    tags = registry.get_registered_model(name).tags or {}
    logged = sorted((k, v) for k, v in tags.items() if k.startswith(CHAMPION_LOG_PREFIX))
    if logged:
        return [json.loads(value) for _, value in logged]
    events = []
    for version in registry.search_model_versions(f"name = '{name}'"):
        for key, value in (version.tags or {}).items():
            if key.startswith(AUDIT_PREFIX):
                events.append(json.loads(value))
    moves = [e for e in events if e.get("alias") == CHAMPION and e.get("action") in CHAMPION_MOVES]
    return sorted(moves, key=lambda e: e.get("when", ""))


def _release_of(event: dict[str, Any]) -> str:
    if event.get("release"):
        return str(event["release"])
    match = _RELEASE_WHY.match(event.get("why", ""))
    return match.group(1) if match and event.get("action") == "promote" else ""


def periods(moves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Champion periods from the ordered moves: version, from, to (None: still champion), who
    moved it there and why, the previous champion, and the release tag that deployed it."""
    released: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for event in moves:
        if rows and rows[-1]["to"] is None:
            rows[-1]["to"] = event.get("when")
            rows[-1]["ended_by"] = event.get("action")
        if event.get("action") == "withdraw":
            continue
        version = str(event.get("version"))
        if event.get("action") == "promote" and _release_of(event):
            released[version] = _release_of(event)
        rows.append(
            {
                "version": version,
                "from": event.get("when"),
                "to": None,
                "action": event.get("action"),
                "who": event.get("who", ""),
                "why": event.get("why", ""),
                "previous": event.get("from_version"),
                "release": released.get(version, ""),
                "forced": bool(event.get("forced")),
                "ended_by": None,
            }
        )
    return rows


def history(settings: Settings) -> dict[str, Any]:
    """The champion periods of the settings' registered model, oldest first."""
    from mlflow.exceptions import MlflowException

    from ml.registry import CHAMPION, alias_version, client

    registry = client(settings)
    name = settings.mlflow.registered_model
    try:
        rows = periods(champion_moves(registry, name))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        # Not registered yet: of several models, the others' history still prints.
        return {"name": name, "registered": False, "champion": None, "periods": []}
    current = alias_version(registry, name, CHAMPION)
    return {
        "name": name,
        "registered": True,
        "champion": str(current.version) if current else None,
        "periods": rows,
    }
