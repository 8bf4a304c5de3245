"""Post or update the one sticky PR comment through the GitHub REST API.

Standard library only: the pr-comment workflow runs this from the default branch without
installing the project, so no PR-controlled code or dependency runs next to its write token.
The artifact it reads (comment body, PR number) is treated as untrusted data.

    python -m ml.report.sticky --body pr-report/pr_comment.md --pr-file pr-report/pr_number
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MARKER = "<!-- ml-pr-report: sticky comment, updated in place by the PR workflow -->"
GITHUB_COMMENT_LIMIT = 65_536
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class StickyCommentError(RuntimeError):
    """The comment cannot be posted; the message says why."""


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


def find_sticky_comment(api: str, repo: str, pr: int, token: str) -> dict[str, Any] | None:
    """The first comment on the PR whose body starts with the marker, if any."""
    page = 1
    while True:
        url = f"{api}/repos/{repo}/issues/{pr}/comments?per_page=100&page={page}"
        comments = _request("GET", url, token)
        for comment in comments:
            if str(comment.get("body", "")).startswith(MARKER):
                return comment
        if len(comments) < 100:
            return None
        page += 1


def upsert_sticky_comment(api: str, repo: str, pr: int, body: str, token: str) -> tuple[str, str]:
    """Create the comment, or edit it in place. Returns (action, comment URL)."""
    existing = find_sticky_comment(api, repo, pr, token)
    if existing is None:
        created = _request(
            "POST", f"{api}/repos/{repo}/issues/{pr}/comments", token, {"body": body}
        )
        return "created", created.get("html_url", "")
    url = f"{api}/repos/{repo}/issues/comments/{existing['id']}"
    updated = _request("PATCH", url, token, {"body": body})
    return "updated", updated.get("html_url", "")


def check_inputs(body: str, pr_text: str, repo: str) -> int:
    """Validate the untrusted inputs; returns the PR number."""
    pr_text = pr_text.strip()
    if not pr_text.isdigit() or int(pr_text) <= 0:
        raise StickyCommentError(f"PR number must be a positive integer, got {pr_text[:40]!r}")
    if not _REPO.match(repo):
        raise StickyCommentError(f"repository must look like owner/name, got {repo[:80]!r}")
    if not body.startswith(MARKER):
        raise StickyCommentError("comment body lacks the sticky-comment marker (not from ml)")
    if len(body) > GITHUB_COMMENT_LIMIT:
        raise StickyCommentError(
            f"comment body has {len(body)} characters; GitHub allows {GITHUB_COMMENT_LIMIT}"
        )
    return int(pr_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", type=Path, required=True, help="Markdown body file")
    number = parser.add_mutually_exclusive_group(required=True)
    number.add_argument("--pr", help="pull request number")
    number.add_argument("--pr-file", type=Path, help="file holding the pull request number")
    parser.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY", ""))
    parser.add_argument("--api", default=os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    args = parser.parse_args(argv)
    token = os.environ.get("GITHUB_TOKEN", "")
    try:
        if not token:
            raise StickyCommentError("GITHUB_TOKEN is not set")
        body = args.body.read_text(encoding="utf-8")
        pr_text = args.pr if args.pr is not None else args.pr_file.read_text(encoding="utf-8")
        pr = check_inputs(body, pr_text, args.repo)
        action, url = upsert_sticky_comment(args.api.rstrip("/"), args.repo, pr, body, token)
    except (StickyCommentError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{action} the sticky comment on #{pr}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
