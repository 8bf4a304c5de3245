"""Release: deploy the model trained from exactly the tagged commit, or leave production as it was.

find the registered version whose git_sha tag is the commit (never retrain at release time)
  -> it must have passed the gate -> promote it to `champion`
  -> deploy it to Ray Serve (pinned to that version) -> smoke-test the live endpoint
  -> on any failure after the promotion: roll the alias back, redeploy the previous champion,
     smoke-test that, and report the release as failed.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ml.config import Settings

SMOKE_TEXTS = [
    "Transformers for text classification: fine-tuning BERT on a small labelled set.",
    "Real-time object detection in video streams with a convolutional network.",
]


class ReleaseError(RuntimeError):
    """The release cannot go ahead, or failed and was rolled back; the message says which."""


@dataclass
class ReleaseResult:
    tag: str
    version: str
    previous: str | None
    url: str
    smoke: dict[str, Any] = field(default_factory=dict)


def find_version_for_commit(settings: Settings, commit: str) -> Any:
    """The newest registered version trained from `commit` (its git_sha tag)."""
    from ml.registry import client

    name = settings.mlflow.registered_model
    versions = [
        v
        for v in client(settings).search_model_versions(f"name='{name}'")
        if v.tags.get("git_sha") == commit
    ]
    if not versions:
        raise ReleaseError(
            f"no version of {name} was registered for commit {commit}; the main workflow "
            "registers one for every merge (run it for this commit, then tag again)"
        )
    return max(versions, key=lambda v: int(v.version))


def _http(method: str, url: str, token: str | None, payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise ReleaseError(
            f"smoke test: {method} {url} answered HTTP {exc.code}: {detail}"
        ) from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise ReleaseError(f"smoke test: {method} {url} failed: {exc}") from exc


def smoke_test(url: str, expected_version: str, token: str | None) -> dict[str, Any]:
    """The live endpoint is healthy, serves `expected_version`, and predicts known labels."""
    health = _http("GET", f"{url}/healthz", token)
    model = _http("GET", f"{url}/model", token)
    if str(model.get("version")) != str(expected_version):
        raise ReleaseError(
            f"smoke test: endpoint serves version {model.get('version')}, expected "
            f"{expected_version}"
        )
    answer = _http("POST", f"{url}/predict", token, {"texts": SMOKE_TEXTS})
    labels = [p["label"] for p in answer.get("predictions", [])]
    if len(labels) != len(SMOKE_TEXTS) or not set(labels) <= set(model.get("labels", [])):
        raise ReleaseError(f"smoke test: bad predictions {answer}")
    return {"healthz": health, "version": model["version"], "labels": labels}


def deploy_version(settings: Settings, version: str) -> str:
    """Deploy the app pinned to one registered version (Serve upgrades replicas in place)."""
    from ml.serve.app import start_local

    uri = f"models:/{settings.mlflow.registered_model}/{version}"
    return start_local(settings, model_uri=uri)


def endpoint_url(settings: Settings, deployed_url: str) -> str:
    return (os.environ.get("ML_SERVE_URL") or deployed_url).rstrip("/")


def _withdraw_first_champion(settings: Settings, version: str, reason: str) -> None:
    """Undo a first-ever promotion: production had no champion, so it gets none again."""
    from ml.registry import CHAMPION, client, record_event

    registry = client(settings)
    name = settings.mlflow.registered_model
    registry.delete_registered_model_alias(name, CHAMPION)
    record_event(registry, name, version, "withdraw", CHAMPION, reason)


def release(
    settings: Settings,
    tag: str,
    commit: str,
    deploy: Callable[[Settings, str], str] = deploy_version,
    smoke: Callable[[str, str, str | None], dict[str, Any]] = smoke_test,
    settle_s: float = 0.0,
) -> ReleaseResult:
    from ml.registry import CHAMPION, GATE_STATUS_TAG, alias_version, client, promote, rollback

    token = os.environ.get(settings.serve.auth_token_env) or None
    target = find_version_for_commit(settings, commit)
    version = str(target.version)
    if target.tags.get(GATE_STATUS_TAG) != "passed":
        raise ReleaseError(
            f"version {version} (commit {commit[:12]}) did not pass the gate "
            f"({target.tags.get(GATE_STATUS_TAG, 'no decision')}); it cannot be released"
        )
    current = alias_version(client(settings), settings.mlflow.registered_model, CHAMPION)
    previous = str(current.version) if current else None
    if previous != version:
        promote(settings, version, f"release {tag}")

    try:
        url = endpoint_url(settings, deploy(settings, version))
        time.sleep(settle_s)
        checks = smoke(url, version, token)
    except Exception as exc:  # any failure after the promotion must restore production
        message = f"release {tag} of version {version} failed: {exc}"
        if previous == version:
            raise ReleaseError(f"{message}; it was already the champion") from exc
        if previous is None:
            _withdraw_first_champion(settings, version, f"release {tag} failed: {exc}"[:500])
            raise ReleaseError(
                f"{message}; champion alias removed (there was none before)"
            ) from exc
        rollback(settings, f"release {tag} failed: {exc}"[:500])
        try:
            url = endpoint_url(settings, deploy(settings, previous))
            smoke(url, previous, token)
        except Exception as again:
            raise ReleaseError(
                f"{message}; champion alias rolled back to {previous}, but redeploying it "
                f"failed too: {again}"
            ) from exc
        raise ReleaseError(f"{message}; rolled back to version {previous}, which is live") from exc
    return ReleaseResult(tag, version, previous, url, checks)
