"""Post or update the one sticky PR comment through the GitHub REST API.

Standard library only: the pr-comment workflow runs this from the default branch without
installing the project, so no PR-controlled code or dependency runs next to its write token.

What it trusts and what it does not:
- The `workflow_run` event (GITHUB_EVENT_PATH) is written by GitHub, so it says which run
  finished. The run must be a `pull_request` run of this repository's `.github/workflows/pr.yml`
  on a branch of this repository; anything else is refused (exit 2, a red job a maintainer sees).
- The PR is the one whose head commit is the run's head commit, found through the API. The
  artifact never names the PR: a run could upload any number, and the comment would land there.
- The artifact (the comment body) was written by PR code: its size is capped before it is read,
  `@` mentions cannot ping anyone and HTML other than the report's own tags is shown as text.
- Only a comment by the bot itself (login ML_COMMENT_BOT_LOGIN, default github-actions[bot], of
  type Bot) is edited; a marker comment by anyone else is left alone.

    python -m ml.report.sticky --body "$RUNNER_TEMP/pr-report/pr_comment.md"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MARKER = "<!-- ml-pr-report: sticky comment, updated in place by the PR workflow -->"
GITHUB_COMMENT_LIMIT = 65_536  # characters
# A UTF-8 character is at most 4 bytes, so no body within the limit is larger than this.
BODY_BYTE_CAP = 4 * GITHUB_COMMENT_LIMIT
EVENT_BYTE_CAP = 4 << 20  # a workflow_run payload is tens of KB
PR_WORKFLOW = ".github/workflows/pr.yml"
BOT_LOGIN_ENV = "ML_COMMENT_BOT_LOGIN"
DEFAULT_BOT_LOGIN = "github-actions[bot]"
EXIT_REFUSED = 2

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
# GitHub links a mention where `@` follows a non-word character (or starts the text) and is
# followed by a login; `user@example.com` and `models:/m@champion` are not mentions.
_MENTION = re.compile(r"(?<![A-Za-z0-9_])@(?=[A-Za-z0-9])")
# `&#64;team` renders as `@team` and GitHub links it like the literal character.
_AT_ENTITY = re.compile(r"&(?:#0*64|#[xX]0*40|commat);")
# The only raw HTML the reports write (ml/report/pr.py, combined.py): bare tags, no attributes
# but `open` on <details> (a failed model's section starts expanded).
_NOT_SAFE_TAG = re.compile(r"<(?!/?(?:details|summary|sub)>|details open>)")
ZERO_WIDTH_SPACE = "\u200b"


class StickyCommentError(RuntimeError):
    """The comment cannot be posted; the message says why."""


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """The file's bytes, refusing before reading anything larger than `cap` bytes.

    O_NOFOLLOW and the regular-file check stop a planted symlink (to /proc/self/environ, say)
    or FIFO from being read; O_NONBLOCK keeps a FIFO from hanging the open itself.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise StickyCommentError(f"cannot open {what} {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StickyCommentError(f"{what} {path} is not a regular file; refusing to read it")
        if info.st_size > cap:
            raise StickyCommentError(
                f"{what} {path} has {info.st_size} bytes, over the {cap}-byte cap; not read"
            )
        data = handle.read(cap + 1)  # the file may grow after the stat
    if len(data) > cap:
        raise StickyCommentError(f"{what} {path} grew past the {cap}-byte cap while read")
    return data


def _request(method: str, url: str, token: str, payload: dict[str, Any] | None = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/vnd.github+json")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("X-GitHub-Api-Version", "2022-11-28")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise StickyCommentError(
            f"GitHub API {method} {url}: HTTP {exc.code} {exc.reason}"
        ) from exc
    except urllib.error.URLError as exc:
        raise StickyCommentError(f"GitHub API unreachable at {url}: {exc.reason}") from exc


def _full_name(obj: Any) -> str:
    return str((obj or {}).get("full_name", "")) if isinstance(obj, dict) else ""


def _workflow_path(path: str, repo: str) -> str:
    """`.github/workflows/pr.yml`, also from the `owner/repo/...@ref` form the API can give."""
    if path.startswith(f"{repo}/"):
        path = path[len(repo) + 1 :]
    return path.split("@", 1)[0]


def check_run(event: Any, repo: str) -> dict[str, Any]:
    """The event's `workflow_run`, refused unless it is this repository's own PR run."""
    run = event.get("workflow_run") if isinstance(event, dict) else None
    if not isinstance(run, dict):
        raise StickyCommentError("the event has no workflow_run: run this from pr-comment.yml")
    if _full_name(run.get("repository")) != repo:
        raise StickyCommentError(
            f"the run belongs to {_full_name(run.get('repository'))[:80]!r}, not {repo}: refused"
        )
    path = _workflow_path(str(run.get("path", "")), repo)
    if path != PR_WORKFLOW:
        raise StickyCommentError(
            f"the run is of {path[:120]!r}, not {PR_WORKFLOW}: only the pr workflow's report "
            "is posted (another workflow can take the name 'pr')"
        )
    if run.get("event") != "pull_request":
        raise StickyCommentError(f"the run was triggered by {run.get('event')!r}, not a PR")
    head_repo = _full_name(run.get("head_repository"))
    if head_repo != repo:
        raise StickyCommentError(
            f"the run's code came from {head_repo[:80]!r}, a fork: a fork's run uploads "
            "whatever its own copy of pr.yml writes, so its comment is not posted"
        )
    if not _SHA.match(str(run.get("head_sha", ""))):
        raise StickyCommentError(f"the run's head_sha {str(run.get('head_sha'))[:80]!r} is odd")
    return run


def _candidate_numbers(api: str, repo: str, token: str, run: dict[str, Any]) -> list[int]:
    numbers = [pr.get("number") for pr in run.get("pull_requests") or [] if isinstance(pr, dict)]
    if not numbers:  # empty for PRs from forks, and when GitHub did not link the run
        url = f"{api}/repos/{repo}/commits/{run['head_sha']}/pulls?per_page=100"
        numbers = [pr.get("number") for pr in _request("GET", url, token) or []]
    return sorted({n for n in numbers if type(n) is int and n > 0})


def pull_requests_for_run(
    api: str, repo: str, token: str, run: dict[str, Any]
) -> tuple[list[int], list[str]]:
    """(PRs whose head is the run's head commit, PRs that have moved on to another commit).

    Each candidate is read back from the API: the event's list is a snapshot, and only the
    PR's own `head.sha` says the report describes the code it shows now.
    """
    sha = run["head_sha"]
    numbers = _candidate_numbers(api, repo, token, run)
    if not numbers:
        raise StickyCommentError(f"no pull request in {repo} has head commit {sha}: refused")
    matched, moved = [], []
    for number in numbers:
        pr = _request("GET", f"{api}/repos/{repo}/pulls/{number}", token) or {}
        head, base = pr.get("head") or {}, pr.get("base") or {}
        same_repo = _full_name(head.get("repo")) == repo and _full_name(base.get("repo")) == repo
        if head.get("sha") == sha and same_repo:
            matched.append(number)
        else:
            moved.append(f"#{number} (head now {str(head.get('sha'))[:12]})")
    return matched, moved


def neutralise(body: str) -> str:
    """The body with mentions that cannot ping and HTML shown as text, except the marker and
    the report's own <details>, <summary> and <sub>, so the real report renders unchanged.

    Applied everywhere, code included: GitHub's idea of where code starts (inside an HTML
    block backticks are literal) is not worth second-guessing with a write token at stake.
    """
    head, rest = (MARKER, body[len(MARKER) :]) if body.startswith(MARKER) else ("", body)
    rest = _AT_ENTITY.sub("@", rest)
    rest = _MENTION.sub("@" + ZERO_WIDTH_SPACE, rest)
    return head + _NOT_SAFE_TAG.sub("&lt;", rest)


def check_body(raw: bytes) -> str:
    """The untrusted artifact's body, decoded, checked and neutralised."""
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StickyCommentError(f"comment body is not UTF-8 ({exc.reason})") from exc
    if not body.startswith(MARKER):
        raise StickyCommentError("comment body lacks the sticky-comment marker (not from ml)")
    body = neutralise(body)
    if len(body) > GITHUB_COMMENT_LIMIT:
        raise StickyCommentError(
            f"comment body has {len(body)} characters; GitHub allows {GITHUB_COMMENT_LIMIT}"
        )
    return body


def is_own_comment(comment: dict[str, Any], bot_login: str) -> bool:
    """Our sticky comment: the marker, written by the bot account itself."""
    user = comment.get("user") or {}
    return (
        str(comment.get("body", "")).startswith(MARKER)
        and user.get("login") == bot_login
        and user.get("type") == "Bot"
    )


def find_sticky_comment(
    api: str, repo: str, pr: int, token: str, bot_login: str
) -> dict[str, Any] | None:
    """The bot's first marker comment on the PR, if any."""
    page = 1
    while True:
        url = f"{api}/repos/{repo}/issues/{pr}/comments?per_page=100&page={page}"
        comments = _request("GET", url, token)
        for comment in comments:
            if is_own_comment(comment, bot_login):
                return comment
        if len(comments) < 100:
            return None
        page += 1


def upsert_sticky_comment(
    api: str, repo: str, pr: int, body: str, token: str, bot_login: str = DEFAULT_BOT_LOGIN
) -> tuple[str, str]:
    """Create the comment, or edit it in place. Returns (action, comment URL)."""
    existing = find_sticky_comment(api, repo, pr, token, bot_login)
    if existing is None:
        created = _request(
            "POST", f"{api}/repos/{repo}/issues/{pr}/comments", token, {"body": body}
        )
        return "created", created.get("html_url", "")
    url = f"{api}/repos/{repo}/issues/comments/{existing['id']}"
    updated = _request("PATCH", url, token, {"body": body})
    return "updated", updated.get("html_url", "")


def _load_event(path: str) -> Any:
    if not path:
        raise StickyCommentError("GITHUB_EVENT_PATH is not set: run this from pr-comment.yml")
    try:
        return json.loads(read_capped(Path(path), EVENT_BYTE_CAP, "event file"))
    except ValueError as exc:
        raise StickyCommentError(f"event file {path} is not JSON: {exc}") from exc


def post(body_path: Path, repo: str, api: str, token: str, event_path: str, bot: str) -> str:
    """Everything main does, raising StickyCommentError; returns what was done."""
    if not token:
        raise StickyCommentError("GITHUB_TOKEN is not set")
    if not _REPO.match(repo):
        raise StickyCommentError(f"repository must look like owner/name, got {repo[:80]!r}")
    run = check_run(_load_event(event_path), repo)
    body = check_body(read_capped(body_path, BODY_BYTE_CAP, "comment body"))
    matched, moved = pull_requests_for_run(api, repo, token, run)
    if not matched:
        # A newer push superseded this run; that run's comment is the one to show.
        return f"skipped: {', '.join(moved)} moved on from {run['head_sha'][:12]}"
    done = []
    for pr in matched:
        action, url = upsert_sticky_comment(api, repo, pr, body, token, bot)
        done.append(f"{action} the sticky comment on #{pr}: {url}")
    return "\n".join(done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", type=Path, required=True, help="Markdown body file")
    parser.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY", ""))
    parser.add_argument("--api", default=os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    args = parser.parse_args(argv)
    try:
        print(
            post(
                args.body,
                args.repo,
                args.api.rstrip("/"),
                os.environ.get("GITHUB_TOKEN", ""),
                os.environ.get("GITHUB_EVENT_PATH", ""),
                os.environ.get(BOT_LOGIN_ENV) or DEFAULT_BOT_LOGIN,
            )
        )
    except StickyCommentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
