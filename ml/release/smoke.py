"""The release's smoke test: what it asks the live endpoint over HTTP before `champion` moves
(health, auth fails closed, the expected version, known labels for the task's smoke input)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ml.release_checks import ReleaseError

# What `smoke_test` sends when no request is given: a text model's smoke input. A release
# sends its task's instead (`task.smoke_request`, bound in `release`).
SMOKE_TEXTS = [
    "Transformers for text classification: fine-tuning BERT on a small labelled set.",
    "Real-time object detection in video streams with a convolutional network.",
]
SmokeRequest = tuple[bytes, str]  # (body, content type)


def _request(
    method: str, url: str, token: str | None, payload: Any = None
) -> urllib.request.Request:
    """`payload`: a JSON value, or a (body, content type) smoke request."""
    content_type = "application/json"
    if isinstance(payload, tuple):
        data, content_type = payload
    else:
        data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    return request


def _http(method: str, url: str, token: str | None, payload: Any = None) -> Any:
    try:
        with urllib.request.urlopen(_request(method, url, token, payload), timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise ReleaseError(
            f"smoke test: {method} {url} answered HTTP {exc.code}: {detail}"
        ) from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise ReleaseError(f"smoke test: {method} {url} failed: {exc}") from exc


def _status_without_token(url: str, request: SmokeRequest) -> int:
    try:
        with urllib.request.urlopen(_request("POST", url, None, request), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, TimeoutError) as exc:
        raise ReleaseError(f"smoke test: POST {url} without a token failed: {exc}") from exc


def check_auth(url: str, token: str | None, request: SmokeRequest | None = None) -> str:
    """With a token configured, a request without it must get 401 (serving fails closed)."""
    if not token:
        return "skipped: serving auth is off (serve.auth: false), so there is no token to enforce"
    status = _status_without_token(f"{url}/predict", request or _text_smoke())
    if status != 401:
        raise ReleaseError(
            f"smoke test: POST {url}/predict without the bearer token answered HTTP {status}, "
            "expected 401; the endpoint does not enforce its token"
        )
    return "a request without the token got 401"


def _text_smoke() -> SmokeRequest:
    return json.dumps({"texts": SMOKE_TEXTS}).encode(), "application/json"


def _item_count(request: SmokeRequest) -> int:
    """How many predictions the smoke request asks for: the length of a JSON batch, else 1."""
    body, content_type = request
    payload = json.loads(body) if "json" in content_type else None
    if isinstance(payload, dict) and len(payload) == 1:
        (value,) = payload.values()
        if isinstance(value, list):
            return len(value)
    return 1


def smoke_test(
    url: str, expected_version: str, token: str | None, request: SmokeRequest | None = None
) -> dict[str, Any]:
    """The live endpoint is healthy, refuses requests without its token, serves
    `expected_version`, and predicts known labels for `request` (the task's smoke request;
    default: two texts)."""
    request = request or _text_smoke()
    health = _http("GET", f"{url}/healthz", token)
    auth = check_auth(url, token, request)
    model = _http("GET", f"{url}/model", token)
    if str(model.get("version")) != str(expected_version):
        raise ReleaseError(
            f"smoke test: endpoint serves version {model.get('version')}, expected "
            f"{expected_version}"
        )
    answer = _http("POST", f"{url}/predict", token, request)
    labels = [p["label"] for p in answer.get("predictions", [])]
    if len(labels) != _item_count(request) or not set(labels) <= set(model.get("labels", [])):
        raise ReleaseError(f"smoke test: bad predictions {answer}")
    return {"healthz": health, "auth": auth, "version": model["version"], "labels": labels}
