"""The sticky-comment poster against a stand-in GitHub API.

GitHub's REST API cannot run on this machine, so a small HTTP server on loopback plays it. It is
a stand-in modelled on GitHub's documented responses (REST API version 2022-11-28), trimmed to
the fields the poster reads: comments carry `user.login`/`user.type`, pull requests carry
`head.sha` and `head.repo`/`base.repo.full_name`, and `workflow_run` events carry `repository`,
`head_repository`, `path`, `event`, `head_sha` and `pull_requests` (empty for forks). It keeps
state in memory and answers the five calls the poster makes: list PRs of a commit, get a PR,
list, create and edit comments. What is tested is the poster's behaviour: one comment per PR,
edited in place, and every untrusted input refused or defused. The attack tests also switch
each protection off and show that the attack then lands, so they prove the protection.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from ml.report import sticky
from ml.report.sticky import BODY_BYTE_CAP, GITHUB_COMMENT_LIMIT, MARKER, main
from tests.http_standin import send_json

REPO = "owner/repo"
SHA = "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"
OTHER_SHA = "f" * 40
GOLDEN = Path(__file__).parents[1] / "evaluate" / "golden"
BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
HUMAN = {"login": "octocat", "id": 1, "type": "User"}


def pull(number: int, sha: str = SHA, head_repo: str = REPO) -> dict:
    return {
        "number": number,
        "state": "open",
        "head": {"ref": f"feature-{number}", "sha": sha, "repo": {"full_name": head_repo}},
        "base": {"ref": "main", "sha": "0" * 40, "repo": {"full_name": REPO}},
    }


class FakeGitHub(BaseHTTPRequestHandler):
    comments: ClassVar[dict[int, list[dict]]] = {}
    pulls: ClassVar[dict[int, dict]] = {}
    calls: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, payload) -> None:
        send_json(self, status, payload)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != "Bearer test-token":
            self._reply(401, {"message": "Bad credentials"})
            return False
        return True

    def _body(self) -> str:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]

    def do_GET(self):
        self.calls.append(("GET", self.path))
        if not self._authorised():
            return
        parts = urlsplit(self.path).path.strip("/").split("/")
        query = parse_qs(urlsplit(self.path).query)
        if parts[3:4] == ["commits"]:  # /repos/o/r/commits/{sha}/pulls
            self._reply(200, [p for p in self.pulls.values() if p["head"]["sha"] == parts[4]])
        elif parts[3:4] == ["pulls"]:  # /repos/o/r/pulls/{n}
            number = int(parts[4])
            if number in self.pulls:
                self._reply(200, self.pulls[number])
            else:
                self._reply(404, {"message": "Not Found"})
        else:  # /repos/o/r/issues/{n}/comments
            page = int(query.get("page", ["1"])[0])
            comments = self.comments.setdefault(int(parts[4]), [])
            self._reply(200, comments[(page - 1) * 100 : page * 100])

    def do_POST(self):
        self.calls.append(("POST", self.path))
        if self._authorised():
            number = int(self.path.strip("/").split("/")[4])
            comment = {"id": 5000 + len(self.calls), "body": self._body(), "user": BOT}
            self.comments.setdefault(number, []).append(comment)
            self._reply(201, {**comment, "html_url": f"http://c/{comment['id']}"})

    def do_PATCH(self):
        self.calls.append(("PATCH", self.path))
        if self._authorised():
            comment_id = int(self.path.rsplit("/", 1)[1])
            everyone = [c for cs in self.comments.values() for c in cs]
            comment = next(c for c in everyone if c["id"] == comment_id)
            comment["body"] = self._body()
            self._reply(200, {**comment, "html_url": f"http://c/{comment_id}"})


@pytest.fixture
def github(monkeypatch):
    FakeGitHub.comments = {7: [{"id": i, "body": f"hi {i}", "user": HUMAN} for i in range(130)]}
    FakeGitHub.pulls = {7: pull(7), 8: pull(8, sha=OTHER_SHA)}
    FakeGitHub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    monkeypatch.delenv(sticky.BOT_LOGIN_ENV, raising=False)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def workflow_run(**changes) -> dict:
    run = {
        "id": 30433642,
        "name": "pr",
        "event": "pull_request",
        "path": ".github/workflows/pr.yml",
        "head_sha": SHA,
        "head_branch": "feature-7",
        "conclusion": "success",
        "pull_requests": [{"number": 7, "head": {"sha": SHA}, "base": {"ref": "main"}}],
        "repository": {"full_name": REPO},
        "head_repository": {"full_name": REPO},
    }
    return {"action": "completed", "workflow_run": {**run, **changes}}


def post(tmp_path: Path, api: str, body: str, monkeypatch, event: dict | None = None) -> int:
    artifact = tmp_path / "pr-report"
    artifact.mkdir(exist_ok=True)
    (artifact / "pr_comment.md").write_text(body)
    (tmp_path / "event.json").write_text(json.dumps(event or workflow_run()))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(tmp_path / "event.json"))
    argv = ["--body", str(artifact / "pr_comment.md")]
    return main([*argv, "--repo", REPO, "--api", api])


def bot_comments(pr: int) -> list[str]:
    return [c["body"] for c in FakeGitHub.comments.get(pr, []) if c["user"] == BOT]


def methods() -> list[str]:
    return [m for m, _ in FakeGitHub.calls]


def test_creates_then_updates_one_comment(tmp_path, github, monkeypatch):
    assert post(tmp_path, github, f"{MARKER}\nfirst", monkeypatch) == 0
    assert post(tmp_path, github, f"{MARKER}\nsecond", monkeypatch) == 0
    assert bot_comments(7) == [f"{MARKER}\nsecond"]
    # The search paged past the first 100 comments, and the second run edited in place.
    assert ("GET", f"/repos/{REPO}/issues/7/comments?per_page=100&page=2") in FakeGitHub.calls
    assert methods().count("POST") == 1
    assert methods().count("PATCH") == 1


def test_fork_style_event_without_pull_requests_finds_the_pr_by_head_sha(
    tmp_path, github, monkeypatch
):
    assert post(tmp_path, github, f"{MARKER}\nx", monkeypatch, workflow_run(pull_requests=[])) == 0
    assert ("GET", f"/repos/{REPO}/commits/{SHA}/pulls?per_page=100") in FakeGitHub.calls
    assert bot_comments(7) == [f"{MARKER}\nx"]


def test_artifact_naming_another_pr_is_ignored(tmp_path, github, monkeypatch):
    """The old poster took the number from the artifact; a run could aim it at PR #8."""
    (tmp_path / "pr-report").mkdir()
    (tmp_path / "pr-report" / "pr_number").write_text("8\n")
    assert post(tmp_path, github, f"{MARKER}\nreport", monkeypatch) == 0
    assert bot_comments(7) == [f"{MARKER}\nreport"]
    assert bot_comments(8) == []
    assert not any("/issues/8/" in path for _, path in FakeGitHub.calls)


def test_event_naming_a_pr_whose_head_is_another_commit_posts_nothing(
    tmp_path, github, monkeypatch, capsys
):
    """The event's list is checked against each PR's current head: #8 is at another commit."""
    event = workflow_run(pull_requests=[{"number": 8, "head": {"sha": SHA}}])
    assert post(tmp_path, github, f"{MARKER}\nreport", monkeypatch, event) == 0
    assert "skipped: #8" in capsys.readouterr().out
    assert methods() == ["GET"]  # read PR #8, then nothing written
    # Protection off: trusting the listed number would have commented on #8.
    monkeypatch.setattr(sticky, "pull_requests_for_run", lambda api, repo, token, run: ([8], []))
    assert post(tmp_path, github, f"{MARKER}\nreport", monkeypatch, event) == 0
    assert bot_comments(8) == [f"{MARKER}\nreport"]


def test_head_sha_matching_no_pr_is_refused(tmp_path, github, monkeypatch, capsys):
    event = workflow_run(head_sha="a" * 40, pull_requests=[])
    assert post(tmp_path, github, f"{MARKER}\nreport", monkeypatch, event) == 2
    assert "no pull request" in capsys.readouterr().err
    assert "POST" not in methods() and "PATCH" not in methods()


def test_marker_comment_by_another_author_is_left_alone(tmp_path, github, monkeypatch):
    squatter = {"id": 1, "body": f"{MARKER}\nplanted by a person", "user": HUMAN}
    fake_bot = {"id": 2, "body": f"{MARKER}\nby a user named like the bot", "user": {**BOT}}
    fake_bot["user"]["type"] = "User"
    FakeGitHub.comments[7] = [squatter, fake_bot]
    assert post(tmp_path, github, f"{MARKER}\nours", monkeypatch) == 0
    assert squatter["body"] == f"{MARKER}\nplanted by a person"
    assert fake_bot["body"] == f"{MARKER}\nby a user named like the bot"
    assert bot_comments(7) == [f"{MARKER}\nours"]
    assert methods().count("POST") == 1 and "PATCH" not in methods()
    # Protection off: matching by marker alone edits the person's comment.
    monkeypatch.setattr(sticky, "is_own_comment", lambda c, login: MARKER in c["body"])
    assert post(tmp_path, github, f"{MARKER}\nhijacked", monkeypatch) == 0
    assert squatter["body"] == f"{MARKER}\nhijacked"


def test_bot_login_is_configurable_for_app_bots(tmp_path, github, monkeypatch):
    app = {"login": "ml-reporter[bot]", "id": 9, "type": "Bot"}
    FakeGitHub.comments[7] = [{"id": 3, "body": f"{MARKER}\nold", "user": app}]
    monkeypatch.setenv(sticky.BOT_LOGIN_ENV, "ml-reporter[bot]")
    assert post(tmp_path, github, f"{MARKER}\nnew", monkeypatch) == 0
    assert FakeGitHub.comments[7][0]["body"] == f"{MARKER}\nnew"
    assert "POST" not in methods()


def test_mentions_and_html_are_neutralised(tmp_path, github, monkeypatch):
    body = (
        f"{MARKER}\nping @team, @org/ops and &#64;admins; mail user@example.com about "
        "`models:/m@champion` <img src=https://evil.example/pixel.png> <script>x</script> "
        '<a href="https://evil.example">docs</a> <details><summary>kept</summary></details> '
        "<!-- hidden -->"
    )
    assert post(tmp_path, github, body, monkeypatch) == 0
    [posted] = bot_comments(7)
    zw = sticky.ZERO_WIDTH_SPACE
    for mention in ("team", "org/ops", "admins"):
        assert f"@{zw}{mention}" in posted
    assert "@team" not in posted and "&#64;" not in posted
    assert "user@example.com" in posted and "models:/m@champion" in posted
    for tag in ("<img", "<script", "<a ", "<!-- hidden"):
        assert tag not in posted
        assert "&lt;" + tag[1:] in posted
    assert posted.startswith(MARKER)
    assert "<details><summary>kept</summary></details>" in posted
    # Protection off: the raw mention and tag reach GitHub.
    monkeypatch.setattr(sticky, "neutralise", lambda text: text)
    assert post(tmp_path, github, body, monkeypatch) == 0
    assert "@team" in bot_comments(7)[0] and "<img src=" in bot_comments(7)[0]


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("pr_comment_*.md")), ids=lambda p: p.stem)
def test_golden_reports_are_unchanged_by_neutralising(golden):
    text = golden.read_text(encoding="utf-8")
    assert sticky.neutralise(text) == text
    assert "<details>" in text and "<summary>" in text and "<sub>" in text


def test_neutralising_is_idempotent():
    once = sticky.neutralise(f"{MARKER}\n@a <b> &commat;c")
    assert sticky.neutralise(once) == once


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"repository": {"full_name": "evil/repo"}}, "belongs to 'evil/repo'"),
        ({"path": ".github/workflows/evil.yml"}, "not .github/workflows/pr.yml"),
        ({"event": "push"}, "not a PR"),
        ({"head_repository": {"full_name": "fork/repo"}}, "a fork"),
        ({"head_sha": "../../issues/8"}, "head_sha"),
    ],
)
def test_run_not_from_this_repositorys_pr_workflow_is_refused(
    tmp_path, github, monkeypatch, capsys, changes, message
):
    assert post(tmp_path, github, f"{MARKER}\nok", monkeypatch, workflow_run(**changes)) == 2
    assert message in capsys.readouterr().err
    assert FakeGitHub.calls == []


def test_api_style_workflow_path_is_accepted(tmp_path, github, monkeypatch):
    event = workflow_run(path=f"{REPO}/.github/workflows/pr.yml@refs/pull/7/merge")
    assert post(tmp_path, github, f"{MARKER}\nok", monkeypatch, event) == 0


def test_run_from_another_repository_lands_without_the_check(tmp_path, github, monkeypatch):
    monkeypatch.setattr(sticky, "check_run", lambda event, repo: event["workflow_run"])
    event = workflow_run(repository={"full_name": "evil/repo"})
    assert post(tmp_path, github, f"{MARKER}\nok", monkeypatch, event) == 0
    assert bot_comments(7) == [f"{MARKER}\nok"]


def test_oversized_body_is_refused_before_it_is_read(tmp_path, github, monkeypatch, capsys):
    body = tmp_path / "pr-report" / "pr_comment.md"
    body.parent.mkdir()
    body.write_bytes(MARKER.encode())
    with body.open("r+b") as handle:  # sparse: 8 GiB that reading whole would exhaust memory
        handle.truncate(8 << 30)
    (tmp_path / "event.json").write_text(json.dumps(workflow_run()))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(tmp_path / "event.json"))
    reads: list[int] = []
    real_read = sticky.os.fdopen

    def counting_fdopen(fd, mode):
        handle = real_read(fd, mode)
        original = handle.read
        handle.read = lambda n=-1: reads.append(n) or original(n)
        return handle

    monkeypatch.setattr(sticky.os, "fdopen", counting_fdopen)
    assert main(["--body", str(body), "--repo", REPO, "--api", github]) == 2
    assert "over the 262144-byte cap; not read" in capsys.readouterr().err
    assert len(reads) == 1  # the event file only; the body was refused by its size
    assert FakeGitHub.calls == []


def test_body_one_byte_over_the_cap_is_refused(tmp_path, github, monkeypatch, capsys):
    body = MARKER + "x" * (BODY_BYTE_CAP + 1 - len(MARKER))
    assert post(tmp_path, github, body, monkeypatch) == 2
    assert "cap" in capsys.readouterr().err
    assert FakeGitHub.calls == []


def test_symlinked_body_is_not_followed(tmp_path, github, monkeypatch, capsys):
    secret = tmp_path / "environ"
    secret.write_text(f"{MARKER}\nGITHUB_TOKEN=test-token")
    artifact = tmp_path / "pr-report"
    artifact.mkdir()
    (artifact / "pr_comment.md").symlink_to(secret)
    (tmp_path / "event.json").write_text(json.dumps(workflow_run()))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(tmp_path / "event.json"))
    assert main(["--body", str(artifact / "pr_comment.md"), "--repo", REPO, "--api", github]) == 2
    assert "cannot open comment body" in capsys.readouterr().err
    assert FakeGitHub.calls == []


@pytest.mark.parametrize(
    "body, message",
    [
        ("no marker here", "marker"),
        (MARKER + "x" * GITHUB_COMMENT_LIMIT, "characters"),
        (MARKER + "<" * (GITHUB_COMMENT_LIMIT // 4), "characters"),  # grows when escaped
    ],
)
def test_untrusted_body_is_refused(tmp_path, github, monkeypatch, capsys, body, message):
    assert post(tmp_path, github, body, monkeypatch) == 2
    assert message in capsys.readouterr().err
    assert FakeGitHub.calls == []


def test_missing_event_is_refused(tmp_path, github, monkeypatch, capsys):
    (tmp_path / "body.md").write_text(f"{MARKER}\nok")
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    assert main(["--body", str(tmp_path / "body.md"), "--repo", REPO, "--api", github]) == 2
    assert "GITHUB_EVENT_PATH is not set" in capsys.readouterr().err


def test_api_errors_are_reported_not_raised(tmp_path, github, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    assert post(tmp_path, github, f"{MARKER}\nbody", monkeypatch) == 2
    assert "HTTP 401" in capsys.readouterr().err
