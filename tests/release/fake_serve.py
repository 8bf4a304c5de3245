"""A stand-in for the Ray Serve app that `ml release` deploys, so release tests run in seconds.

It is a real HTTP server on loopback with the endpoint's contract (GET /healthz, GET /model and
POST /predict, bearer token -> 401), and the real `smoke_test` talks to it. "Deploying" a
version is a POST to /_deploy (what `serve.run` would do), deleting the app a POST to /_delete;
the release functions reach it through `deploy_to` / `teardown_at`, also from a subprocess.
`hold` makes /predict for a version wait, so a test can act while a smoke test is in progress.
The real deployment path (Ray Serve on a two-node cluster) is tested under act in tests/e2e.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.http_standin import send_json

LABELS = ["computer-vision", "mlops", "natural-language-processing", "other"]


class FakeServe:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.enforce_auth = True  # False: an endpoint that fails open (what the smoke test catches)
        self.version: str | None = None
        self.history: list[str] = []  # every deploy ("-" for a delete), in order
        self.broken: set[str] = set()  # versions whose predictions are wrong
        self.held: dict[str, threading.Event] = {}  # version -> set once its /predict waits
        self.release_holds = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeServe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_holds.set()
        self.server.shutdown()
        self.server.server_close()

    def hold(self, version: str) -> threading.Event:
        """Make /predict (with the token) for `version` wait until `release_holds` is set."""
        self.held[version] = threading.Event()
        return self.held[version]


def _handler(fake: FakeServe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            send_json(self, status, body)

        def _authorized(self) -> bool:
            if not fake.token or not fake.enforce_auth:
                return True
            return self.headers.get("Authorization", "") == f"Bearer {fake.token}"

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            if self.path == "/_state":
                return self._send(200, {"version": fake.version, "history": fake.history})
            if fake.version is None:
                return self._send(404, {"detail": "no application is deployed"})
            if self.path == "/healthz":
                return self._send(200, {"status": "ok", "model_version": fake.version})
            if self.path == "/model":
                if not self._authorized():
                    return self._send(401, {"detail": "missing or wrong bearer token"})
                return self._send(200, {"version": fake.version, "labels": LABELS})
            self._send(404, {"detail": "not found"})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/_deploy":
                fake.version = str(body["version"])
                fake.history.append(fake.version)
                return self._send(200, {"deployed": fake.version})
            if self.path == "/_delete":
                fake.version = None
                fake.history.append("-")
                return self._send(200, {"deleted": True})
            if self.path != "/predict" or fake.version is None:
                return self._send(404, {"detail": "not found"})
            if not self._authorized():
                return self._send(401, {"detail": "missing or wrong bearer token"})
            version = fake.version
            if version in fake.held:
                fake.held[version].set()
                fake.release_holds.wait(timeout=120)
            label = "not-a-label" if version in fake.broken else LABELS[2]
            texts = body.get("texts") or [body]
            self._send(200, {"predictions": [{"label": label} for _ in texts]})

    return Handler


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30):
        pass


def deploy_to(url: str) -> Callable[[Any, str], str]:
    """The `deploy` callable of ml.release.release for this stand-in."""

    def deploy(settings: Any, version: str) -> str:
        _post(f"{url}/_deploy", {"version": version})
        return url

    return deploy


def teardown_at(url: str) -> Callable[[Any], None]:
    """The `teardown` callable (serve.delete of the app) for this stand-in."""

    def teardown(settings: Any) -> None:
        _post(f"{url}/_delete", {})

    return teardown


def state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_state", timeout=10) as answer:
        return json.loads(answer.read())
