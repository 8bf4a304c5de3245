"""Which declared models a change affects, so a pull request trains and evaluates only those.

A change is the list of paths `git diff --name-only BASE...HEAD` names (merge-base form: what
the branch changed, not what the base gained since). Each path is decided on its own, so the
models a change affects are the union of what each path affects. A path affects:

1. The models it belongs to: a model's params file, and its data. What pins the data:
   `data.source` and `data.sha256` (in the params file); a file under its data folders
   (data.raw_dir, data.splits_dir, an in-repository data.source, data/NAME/); a `*.dvc` file
   tracking one of those or a folder above them (`dvc add X` writes X.dvc); a changed dvc.lock
   entry naming one of those (changed_paths adds each as `dvc.lock:PATH`).
2. models.yaml: the models it declares anew or points at another params file (all models when
   the base's list cannot be read).
3. And what the first matching rule of RULES (the table below) says; the last rule, for paths
   nothing else claims, is skipped for a path rule 1 claimed. A task package's code
   (ml/tasks/PACKAGE/) affects every model of that task; the rest of ml/, the pipeline, the
   dependencies and the workflows and actions that train affect every model; documentation,
   reports, tests, benchmarks, deploy/ and the workflows that do not train affect none.
   tests/ affects none because a test changes nothing that is trained: ci.yml runs the suite
   on every change anyway, and a test that needs a trained model trains its own. deploy/
   affects none because the release's smoke test, not the PR's gate, checks the serving side.
   A path no rule covers affects every model: training one model too many is cheaper than
   missing one.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from ml.models import MODELS_FILE, Catalog, Model, ModelsError, parse_models_file
from ml.tasks import TASK_MODULES

LOCK_PREFIX = "dvc.lock:"  # a path a changed dvc.lock entry names (changed_paths adds these)


@dataclass(frozen=True)
class Rule:
    pattern: str  # glob over repository paths: * within a folder, ** across folders
    scope: Literal["all", "task", "none"]
    why: str


RULES: tuple[Rule, ...] = (
    Rule("ml/tasks/*/**/*", "task", "its task's code"),
    Rule("ml/tasks/**", "all", "the task interface every task builds on"),
    Rule("ml/**", "all", "shared code"),
    Rule("dvc.yaml", "all", "the pipeline"),
    Rule("pyproject.toml", "all", "the dependencies"),
    Rule("constraints.txt", "all", "the pinned dependencies"),
    Rule("Makefile", "all", "the setup every training job runs"),
    Rule(".github/actions/**", "all", "an action the training jobs use"),
    Rule(".github/workflows/pr.yml", "all", "a workflow that trains"),
    Rule(".github/workflows/main.yml", "all", "a workflow that trains"),
    Rule(".github/workflows/retrain.yml", "all", "a workflow that trains"),
    Rule(".github/workflows/release.yml", "all", "the workflow that deploys"),
    Rule(".dvc/**", "all", "DVC's remotes and settings"),
    Rule(".dvcignore", "all", "what DVC hashes"),
    Rule("dvc.lock", "none", "the pipeline's record (its changed entries are decided one by one)"),
    Rule("**/*.dvc", "none", "a DVC-tracked path no declared model reads"),
    Rule("docs/**", "none", "documentation"),
    Rule("**/*.md", "none", "documentation"),
    Rule("mkdocs.yml", "none", "documentation"),
    Rule("reports/**", "none", "generated reports"),
    Rule("tests/**", "none", "tests (ci.yml runs them; they change nothing that is trained)"),
    Rule("benchmarks/**", "none", "benchmarks"),
    Rule("deploy/**", "none", "serving and cluster manifests (the release smoke-tests them)"),
    Rule(".ci/**", "none", "the test runner's entry point"),
    Rule(".github/**", "none", "a workflow or setting that does not train"),
    Rule("configs/**", "none", "a params file no declared model uses"),
    Rule("data/**", "none", "data no declared model reads"),
    Rule(".gitignore", "none", "git settings"),
    Rule(".pre-commit-config.yaml", "none", "lint settings"),
    Rule("**", "all", "a path no rule covers (every model, so none is missed)"),
)


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def matches(pattern: str, path: str) -> bool:
    return _glob(pattern).fullmatch(path) is not None


def rule_for(path: str) -> Rule:
    """The first rule of RULES matching `path` (the last one matches every path)."""
    return next(rule for rule in RULES if matches(rule.pattern, path))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _data_hit(model: Model, path: str) -> str | None:
    """Why `path` changes `model`'s data, or None."""
    if path.startswith(LOCK_PREFIX):
        target, what = path[len(LOCK_PREFIX) :], "a dvc.lock entry for"
    elif path.endswith(".dvc"):
        target, what = path[: -len(".dvc")], "the DVC pointer to"
    else:
        target, what = path, "a file in"
    pointer = what != "a file in"
    for folder in model.data_paths:
        # A pointer to a folder holding the model's data (data.dvc over data/raw) pins it too.
        if _within(target, folder) or (pointer and _within(folder, target)):
            return f"its data: {what} {folder}"
    return None


def _task_package(path: str) -> str:
    return "ml.tasks." + path.split("/")[2]


def _own_reason(model: Model, path: str) -> str | None:
    if path == model.params:
        return "its params file"
    return _data_hit(model, path)


def affected_models(
    catalog: Catalog,
    changed: Iterable[str],
    base_entries: Mapping[str, str] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Each affected model's name (in models.yaml's order) -> the reasons, one per path:
    {"path": PATH, "why": WHY}. `base_entries` is the base's models.yaml (name -> params file;
    None: unknown, so a change to models.yaml affects every model). Pure: no file or git access.
    """
    reasons: dict[str, list[dict[str, str]]] = {model.name: [] for model in catalog.models}
    for path in dict.fromkeys(changed):
        for name, why in _decide(catalog, path, base_entries):
            reasons[name].append({"path": path, "why": why})
    return {name: found for name, found in reasons.items() if found}


def _decide(
    catalog: Catalog, path: str, base_entries: Mapping[str, str] | None
) -> Iterator[tuple[str, str]]:
    """(model name, why) for each model that the change to `path` affects."""
    own = [(model.name, why) for model in catalog.models if (why := _own_reason(model, path))]
    yield from own
    if path.startswith(LOCK_PREFIX):
        return
    if path == MODELS_FILE:
        for model in catalog.models:
            if base_entries is None:
                yield model.name, "the model list changed (the base's could not be read)"
            elif base_entries.get(model.name) != model.params:
                yield model.name, "declared anew or given another params file in models.yaml"
        return
    rule = rule_for(path)
    if own and rule is RULES[-1]:
        return  # a model's own file is covered (the catch-all is for paths nothing claims)
    if rule.scope == "all":
        yield from ((model.name, rule.why) for model in catalog.models)
    elif rule.scope == "task":
        package = _task_package(path)
        for model in catalog.models:
            if TASK_MODULES.get(model.task) == package:
                yield model.name, f"{rule.why} ({model.task})"


def _git(args: list[str], cwd: Path | None) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
        )
    except FileNotFoundError as exc:
        raise ModelsError("git is not installed; `ml models affected` compares commits") from exc
    except subprocess.CalledProcessError as exc:
        raise ModelsError(
            f"git {' '.join(args)} failed: {exc.stderr.strip()}. Fetch both commits (in a "
            "workflow: actions/checkout with fetch-depth: 0)"
        ) from exc
    return result.stdout


def _show(commit: str, path: str, cwd: Path | None) -> Any:
    """`path` at `commit`, parsed as YAML; None where it is absent or not YAML."""
    result = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        return None
    try:
        return yaml.safe_load(result.stdout)
    except yaml.YAMLError:
        return None


def _lock_entries(lock: Any) -> dict[str, Any]:
    """dvc.lock's deps and outs: (stage, path) -> what it recorded (hash, size, ...)."""
    stages = lock.get("stages") if isinstance(lock, Mapping) else None
    entries: dict[str, Any] = {}
    for stage, body in (stages or {}).items():
        for kind in ("deps", "outs"):
            for item in (body or {}).get(kind) or []:
                if isinstance(item, Mapping) and "path" in item:
                    entries[f"{stage}\0{item['path']}"] = dict(item)
    return entries


def lock_changes(base_lock: Any, head_lock: Any) -> list[str]:
    """The paths whose dvc.lock entries differ between two parsed dvc.lock files."""
    base, head = _lock_entries(base_lock), _lock_entries(head_lock)
    changed = [key for key in base.keys() | head.keys() if base.get(key) != head.get(key)]
    return sorted({key.split("\0", 1)[1] for key in changed})


def merge_base(base: str, head: str = "HEAD", cwd: Path | None = None) -> str:
    return _git(["merge-base", base, head], cwd).strip()


def changed_paths(base: str, head: str = "HEAD", cwd: Path | None = None) -> list[str]:
    """`git diff --name-only --no-renames BASE...HEAD`, plus `dvc.lock:PATH` for each path whose
    dvc.lock entry changed. --no-renames names both sides of a move."""
    paths = _git(["diff", "--name-only", "--no-renames", f"{base}...{head}"], cwd).splitlines()
    if "dvc.lock" in paths:
        fork = merge_base(base, head, cwd)
        lock = lock_changes(_show(fork, "dvc.lock", cwd), _show(head, "dvc.lock", cwd))
        paths += [LOCK_PREFIX + path for path in lock]
    return paths


def base_entries(base: str, head: str = "HEAD", cwd: Path | None = None) -> dict[str, str] | None:
    """The base's models.yaml as name -> params file ({} where it has none; None if invalid)."""
    fork = merge_base(base, head, cwd)
    if _git(["ls-tree", "--name-only", fork, MODELS_FILE], cwd).strip() == "":
        return {}
    try:
        parsed = parse_models_file(_show(fork, MODELS_FILE, cwd), f"{MODELS_FILE} at {base}")
    except ModelsError:
        return None
    return {entry.name: entry.params for entry in parsed.models}


def affected_between(
    catalog: Catalog, base: str, head: str = "HEAD", cwd: Path | None = None
) -> dict[str, list[dict[str, str]]]:
    """The models that the commits BASE...HEAD affect (catalog: the model list at HEAD)."""
    changed = changed_paths(base, head, cwd)
    return affected_models(catalog, changed, base_entries(base, head, cwd))
