"""Workflows only call commands that exist: every `ml ...` sub-command and option, every
`make` target and every `python -m` module named in a workflow or local action. Every
self-hosted job runs on the runner tier of its trigger, act maps every label, and zizmor's
auditor persona finds nothing above low but the documented self-hosted-runner ignores."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from ml.cli import app
from tests.conftest import BIN_DIR, REPO_ROOT

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
    takes_value = False  # the previous token was an option that takes a value (--model NAME)
    for token in args:
        if takes_value:
            takes_value = False
        elif token.startswith("-"):
            option = token.split("=", 1)[0]
            params = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
            assert option in params, f"`{' '.join(path)}` has no option {option} ({sorted(params)})"
            param = params[option]
            takes_value = "=" not in token and not (param.is_flag or param.count)
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
    # An option's value is not a command; what follows it still is.
    check_ml_call(["--model", "$MODEL", "data", "validate"])
    with pytest.raises(AssertionError, match="no command nonsense"):
        check_ml_call(["--model", "$MODEL", "nonsense"])


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


# The runner tier each trigger may use (docs/runbooks/self-hosted-runner.md). Labels are chosen
# by the workflow file, which a pull request can edit, so these tests keep this repository's own
# files honest; runner groups and environments (repository-settings.md) enforce the tiers.
TIER_LABELS = ("ray-pr", "ray-trusted", "ray-release")
TIER_ENVIRONMENT = {"ray-pr": "pr", "ray-trusted": "trusted", "ray-release": "production"}


def triggers(workflow: dict) -> dict:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on:` as True
    if isinstance(on, str):
        return {on: None}
    return dict.fromkeys(on) if isinstance(on, list) else dict(on)


def trigger_tiers(on: dict) -> set[str | None]:
    """The tier every trigger of a workflow maps to; None for one no tier admits."""
    tiers: set[str | None] = set()
    for event, config in on.items():
        config = config or {}
        if event == "pull_request":
            tiers.add("ray-pr")
        elif event == "push":
            if config.get("tags"):
                tiers.add("ray-release" if config["tags"] == ["v*"] else None)
            if config.get("branches"):
                tiers.add("ray-trusted" if config["branches"] == ["main"] else None)
            if not config.get("tags") and not config.get("branches"):
                tiers.add(None)  # a push to any branch is anyone with write access
        elif event == "schedule":  # runs main's copy of the file
            tiers.add("ray-trusted")
        elif event != "workflow_dispatch":
            tiers.add(None)
    # A manual run takes the tier of the workflow's other triggers (release.yml: a tag), or
    # trusted when it has none. Whoever dispatches picks the ref; on a ref outside the tier the
    # runner group and the environment's deployment policy refuse it.
    if "workflow_dispatch" in on and not tiers:
        tiers.add("ray-trusted")
    return tiers


def self_hosted_jobs() -> list[tuple[str, str, dict, set[str | None]]]:
    found = []
    for path in sorted((REPO_ROOT / ".github/workflows").glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        tiers = trigger_tiers(triggers(workflow))
        for name, job in workflow["jobs"].items():
            if "self-hosted" in str(job.get("runs-on")):
                found.append((path.name, name, job, tiers))
    return found


def check_tier(where: str, job: dict, tiers: set[str | None]) -> None:
    runs_on = job["runs-on"]
    assert isinstance(runs_on, list), f"{where}: runs-on must be a list of fixed labels"
    assert not any("${{" in str(label) for label in runs_on), f"{where}: runs-on from an expression"
    assert "self-hosted" in runs_on, where
    labels = [label for label in runs_on if label in TIER_LABELS]
    assert len(labels) == 1, f"{where}: exactly one tier label of {TIER_LABELS}, not {runs_on}"
    assert len(tiers) == 1 and None not in tiers, (
        f"{where}: its triggers map to tiers {tiers}; a self-hosted job needs triggers of one tier"
    )
    (tier,) = tiers
    assert labels == [tier], f"{where}: its triggers belong on {tier}, not {labels[0]}"
    environment = job.get("environment")
    if environment is not None:
        name = environment["name"] if isinstance(environment, dict) else environment
        expected = TIER_ENVIRONMENT[tier]
        assert name == expected, f"{where}: {tier} jobs use environment {expected}, not {name}"


def test_self_hosted_jobs_run_on_the_tier_of_their_trigger():
    jobs = self_hosted_jobs()
    assert {tier for _, _, job, _ in jobs for tier in job["runs-on"]} >= set(TIER_LABELS)
    for path, name, job, tiers in jobs:
        check_tier(f"{path}:{name}", job, tiers)


def test_the_tier_check_catches_mistakes():
    pr, main = {"pull_request": None}, {"push": {"branches": ["main"]}}
    tags, anything = {"push": {"tags": ["v*"]}}, {"push": None}
    job = {"runs-on": ["self-hosted", "ray-release"]}
    check_tier("ok", job, trigger_tiers(tags))
    mixed = {**pr, **main}
    cases = [(pr, "belong on ray-pr"), (main, "belong on ray-trusted"),
             ({"workflow_dispatch": None}, "belong on ray-trusted"),
             (mixed, "triggers of one tier"), (anything, "one tier")]  # fmt: skip
    check_tier("ok", job, trigger_tiers({**tags, "workflow_dispatch": None}))
    for on, message in cases:
        with pytest.raises(AssertionError, match=message):
            check_tier("bad", job, trigger_tiers(on))
    with pytest.raises(AssertionError, match="one tier label"):
        check_tier("bad", {"runs-on": ["self-hosted", "ray-pr", "ray-trusted"]}, {"ray-pr"})
    with pytest.raises(AssertionError, match="expression"):
        check_tier("bad", {"runs-on": ["self-hosted", "${{ inputs.tier }}"]}, {"ray-pr"})
    with pytest.raises(AssertionError, match="environment production"):
        check_tier("bad", {**job, "environment": "trusted"}, {"ray-release"})


def test_no_workflow_runs_pr_code_with_the_base_repository_context():
    for path in sorted((REPO_ROOT / ".github/workflows").glob("*.yml")):
        on = triggers(yaml.safe_load(path.read_text()))
        assert "pull_request_target" not in on, f"{path.name}: pull_request_target"


def _zizmor(*args: str) -> list[dict]:
    result = subprocess.run(
        [str(BIN_DIR / "zizmor"), "--offline", "--persona=auditor", "--format=json", *args,
         ".github/"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def _above_low(findings: list[dict]) -> list[tuple[str, str, list]]:
    above = []
    for finding in findings:
        if finding["determinations"]["severity"] in ("Informational", "Low"):
            continue
        symbolic = finding["locations"][0]["symbolic"]
        route = symbolic["route"]
        route = route["route"] if isinstance(route, dict) else route
        path = symbolic["key"]["Local"].get("verbatim_path") or str(symbolic["key"])
        above.append((finding["ident"], Path(path).name, [r.get("Key") for r in route]))
    return above


def test_zizmor_auditor_persona_finds_nothing_above_low():
    """And what .github/zizmor.yml ignores is only `self-hosted-runner` on tiered jobs."""
    shown = [f for f in _zizmor() if not f.get("ignored")]
    assert not _above_low(shown), _above_low(shown)
    tiered = {(path, name) for path, name, job, _ in self_hosted_jobs()
              if set(job["runs-on"]) & set(TIER_LABELS)}  # fmt: skip
    for ident, path, route in _above_low(_zizmor("--no-config")):
        assert ident == "self-hosted-runner", (ident, path, route)
        assert route[:1] == ["jobs"] and (path, route[1]) in tiered, (path, route)


def test_actrc_maps_every_runs_on_label():
    """act skips a job whose labels it has no platform for, silently, and exits 0."""
    mapped = set(re.findall(r"^-P\s+([^=\s]+)=", (REPO_ROOT / ".actrc").read_text(), re.M))
    for path in sorted((REPO_ROOT / ".github/workflows").glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            runs_on = job.get("runs-on", [])
            for label in [runs_on] if isinstance(runs_on, str) else runs_on:
                assert label in mapped, f"{path.name}:{name}: .actrc has no -P {label}=..."
