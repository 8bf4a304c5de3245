"""Workflows only call commands that exist: every `ml ...` sub-command and option, every
`make` target and every `python -m` module named in a workflow or local action."""

from __future__ import annotations

import importlib.util
import re
import shlex

import pytest
import yaml
from typer.main import get_command

from ml.cli import app
from tests.conftest import REPO_ROOT

WORKFLOW_FILES = sorted((REPO_ROOT / ".github").glob("**/*.yml"))


def run_lines() -> list[tuple[str, str]]:
    """(file, command line) for every line of every `run:` block."""
    lines: list[tuple[str, str]] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "run" and isinstance(value, str):
                    name = current
                    lines.extend(
                        (name, line.strip()) for line in value.splitlines() if line.strip()
                    )
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in WORKFLOW_FILES:
        current = str(path.relative_to(REPO_ROOT))
        walk(yaml.safe_load(path.read_text()))
    return lines


def invocations(program: str) -> list[tuple[str, list[str]]]:
    found = []
    for name, line in run_lines():
        for part in re.split(r"&&|\|\||;|\|", line):
            tokens = shlex.split(part.split(" #")[0])
            if tokens and tokens[0] == program:
                found.append((name, tokens[1:]))
    return found


def check_ml_call(args: list[str]) -> None:
    command = get_command(app)
    path = ["ml"]
    for token in args:
        if token.startswith("-"):
            option = token.split("=", 1)[0]
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            assert option in known, f"`{' '.join(path)}` has no option {option} ({sorted(known)})"
        elif hasattr(command, "commands"):  # a group (typer vendors its own click)
            if token in command.commands:
                command = command.commands[token]
                path.append(token)
            else:
                # An option's value (e.g. `--tag "$RELEASE_TAG"`) or a missing sub-command.
                assert path != ["ml"] or token in command.commands, f"`ml` has no command {token}"


def test_workflows_were_found():
    names = {p.name for p in WORKFLOW_FILES}
    assert {"ci.yml", "pr.yml", "pr-comment.yml", "main.yml", "retrain.yml", "release.yml"} <= names
    assert invocations("ml"), "no ml calls found: the parser is broken"


@pytest.mark.parametrize(
    "where, args", invocations("ml"), ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_ml_calls_exist(where, args):
    check_ml_call(args)


def test_the_checker_catches_mistakes():
    with pytest.raises(AssertionError, match="no command"):
        check_ml_call(["no-such-command"])
    with pytest.raises(AssertionError, match="no option --no-such-flag"):
        check_ml_call(["data", "validate", "--no-such-flag"])


def test_make_targets_exist():
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    for where, args in invocations("make"):
        for target in (a for a in args if not a.startswith("-") and "=" not in a):
            assert target in targets, f"{where}: make has no target {target}"


def test_python_modules_exist():
    for where, args in invocations("python"):
        if args[:1] == ["-m"]:
            assert importlib.util.find_spec(args[1]), f"{where}: no module {args[1]}"


def test_every_job_declares_least_privilege_permissions():
    for path in (REPO_ROOT / ".github/workflows").glob("*.yml"):
        workflow = yaml.safe_load(path.read_text())
        assert workflow.get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}:{job_name} declares no permissions"
            assert "write-all" not in str(job["permissions"])


def test_actions_are_pinned_and_checkouts_drop_credentials():
    for path in WORKFLOW_FILES:
        text = path.read_text()
        for ref in re.findall(r"uses:\s*([^\s#]+)", text):
            if ref.startswith("./"):
                continue
            assert re.search(r"@[0-9a-f]{40}$", ref), f"{path.name}: {ref} is not pinned by SHA"
        for block in re.findall(r"uses: actions/checkout@.*\n(?:\s+.*\n){0,4}", text):
            assert "persist-credentials: false" in block, f"{path.name}: checkout keeps credentials"
        assert "pull_request_target" not in text


def test_self_hosted_jobs_never_run_fork_code():
    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/pr.yml").read_text())
    for name, job in workflow["jobs"].items():
        if "self-hosted" in str(job.get("runs-on")):
            assert "head.repo.full_name == github.repository" in job.get("if", ""), name
