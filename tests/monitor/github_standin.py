"""A recorded stand-in for the two GitHub REST endpoints `ml retrain` calls (list and create
pull requests), served on 127.0.0.1. GitHub's API cannot run here; everything else the retrain
tests touch (git remotes, DVC, MLflow, training) is real. It keeps the PRs it was asked to
create, answers `GET /repos/{o}/{r}/pulls?head=owner:branch&state=...` from them as GitHub
does, and records every request so tests assert on what was sent."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.http_standin import send_json


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class GitHubStandIn:
    repository: str
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    fail_posts: int = 0  # answer this many POSTs with a 502, as GitHub does on a bad day

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def close_all(self) -> None:
        for pull in self.pulls:
            pull["state"] = "closed"


def _handler(state: GitHubStandIn) -> type[BaseHTTPRequestHandler]:
    prefix = f"/repos/{state.repository}/pulls"
    owner = state.repository.split("/")[0]

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> Recorded:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            entry = Recorded(
                self.command,
                parts.path,
                dict(urllib.parse.parse_qsl(parts.query)),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            state.requests.append(entry)
            return entry

        def _reply(self, status: int, payload: Any) -> None:
            send_json(self, status, payload)

        def do_GET(self) -> None:
            entry = self._record()
            if entry.path != prefix:
                return self._reply(404, {"message": "Not Found"})
            head, wanted = entry.query.get("head", ""), entry.query.get("state", "open")
            found = [
                p
                for p in state.pulls
                if f"{owner}:{p['head']['ref']}" == head and wanted in ("all", p["state"])
            ]
            return self._reply(200, found)

        def do_POST(self) -> None:
            entry = self._record()
            if entry.path != prefix or not entry.body:
                return self._reply(404, {"message": "Not Found"})
            if state.fail_posts:
                state.fail_posts -= 1
                return self._reply(502, {"message": "Server Error"})
            number = len(state.pulls) + 1
            pull = {
                "number": number,
                "state": "open",
                "html_url": f"https://github.com/{state.repository}/pull/{number}",
                "title": entry.body["title"],
                "head": {"ref": entry.body["head"]},
                "base": {"ref": entry.body["base"]},
                "body": entry.body["body"],
            }
            state.pulls.append(pull)
            return self._reply(201, pull)

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@contextlib.contextmanager
def github_standin(repository: str = "owner/ml") -> Iterator[GitHubStandIn]:
    state = GitHubStandIn(repository)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
