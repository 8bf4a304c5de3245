"""The sticky-comment poster against a stand-in GitHub API.

The GitHub API cannot exist on this machine, so a small HTTP server on loopback plays it: it
keeps comments in memory and answers the three calls the poster makes (list, create, edit).
What is tested is the poster's behaviour: one comment per PR, edited in place, bad input refused.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from ml.report.sticky import GITHUB_COMMENT_LIMIT, MARKER, main


class FakeGitHub(BaseHTTPRequestHandler):
    comments: ClassVar[list[dict]] = []
    calls: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != "Bearer test-token":
            self._reply(401, {"message": "Bad credentials"})
            return False
        return True

    def do_GET(self):
        self.calls.append(("GET", self.path))
        if self._authorised():
            query = parse_qs(urlsplit(self.path).query)
            page = int(query.get("page", ["1"])[0])
            self._reply(200, self.comments[(page - 1) * 100 : page * 100])

    def do_POST(self):
        self.calls.append(("POST", self.path))
        if self._authorised():
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]
            comment = {"id": 1000 + len(self.comments), "body": body, "html_url": "http://c/new"}
            self.comments.append(comment)
            self._reply(201, comment)

    def do_PATCH(self):
        self.calls.append(("PATCH", self.path))
        if self._authorised():
            comment_id = int(self.path.rsplit("/", 1)[1])
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]
            comment = next(c for c in self.comments if c["id"] == comment_id)
            comment["body"] = body
            self._reply(200, {**comment, "html_url": f"http://c/{comment_id}"})


@pytest.fixture
def github(monkeypatch):
    FakeGitHub.comments = [{"id": i, "body": f"human comment {i}"} for i in range(130)]
    FakeGitHub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def post(tmp_path: Path, api: str, body: str, pr: str = "7") -> int:
    (tmp_path / "body.md").write_text(body)
    (tmp_path / "pr").write_text(pr + "\n")
    argv = ["--body", str(tmp_path / "body.md"), "--pr-file", str(tmp_path / "pr")]
    return main([*argv, "--repo", "owner/repo", "--api", api])


def test_creates_then_updates_one_comment(tmp_path, github):
    assert post(tmp_path, github, f"{MARKER}\nfirst") == 0
    assert post(tmp_path, github, f"{MARKER}\nsecond") == 0
    ours = [c for c in FakeGitHub.comments if c["body"].startswith(MARKER)]
    assert [c["body"] for c in ours] == [f"{MARKER}\nsecond"]
    # The search paged past the first 100 comments, and the second run edited in place.
    assert ("GET", "/repos/owner/repo/issues/7/comments?per_page=100&page=2") in FakeGitHub.calls
    assert [m for m, _ in FakeGitHub.calls].count("POST") == 1
    assert [m for m, _ in FakeGitHub.calls].count("PATCH") == 1


@pytest.mark.parametrize(
    "body, pr, message",
    [
        (f"{MARKER}\nok", "7; rm -rf /", "positive integer"),
        (f"{MARKER}\nok", "0", "positive integer"),
        ("no marker here", "7", "marker"),
        (MARKER + "x" * GITHUB_COMMENT_LIMIT, "7", "characters"),
    ],
)
def test_untrusted_artifact_is_refused(tmp_path, github, capsys, body, pr, message):
    assert post(tmp_path, github, body, pr) == 2
    assert message in capsys.readouterr().err
    assert FakeGitHub.calls == []


def test_api_errors_are_reported_not_raised(tmp_path, github, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    assert post(tmp_path, github, f"{MARKER}\nbody") == 2
    assert "HTTP 401" in capsys.readouterr().err
