"""Stand-ins for actions/upload-artifact and actions/download-artifact (v4) under act, which
cannot fetch them offline. Each artifact is a folder under $ML_ACT_ARTIFACTS (one per act run,
tests/e2e/harness.py), with the layout the real actions give:

- upload: the files the `path` lines match (a folder means every file under it; `!` lines
  exclude), stored relative to the least common ancestor of the include lines' search roots;
  a second upload under one name fails, as v4 does.
- download: `name` set: that artifact's files into `path`. Unset: every artifact (those
  `pattern` matches) into `path/NAME/`, or straight into `path` with `merge-multiple`.

Inputs arrive as INPUT_* environment variables (action.yml passes them).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
from pathlib import Path

GLOB = set("*?[")


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _search_root(pattern: str) -> Path:
    """The part of a path line before its first glob segment."""
    parts = []
    for part in Path(pattern).parts:
        if GLOB & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _matches(pattern: str) -> list[Path]:
    base = Path(pattern)
    if not GLOB & set(pattern):
        found = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        return found if base.exists() else []
    return sorted(p for p in Path(".").glob(pattern) if p.is_file())


def upload(store: Path) -> int:
    name = os.environ.get("INPUT_NAME") or "artifact"
    lines = _lines(os.environ["INPUT_PATH"])
    include = [line for line in lines if not line.startswith("!")]
    exclude = {p.resolve() for line in lines if line.startswith("!") for p in _matches(line[1:])}
    files = [p for line in include for p in _matches(line) if p.resolve() not in exclude]
    if not files:
        if os.environ.get("INPUT_IF_NO_FILES_FOUND", "warn") == "error":
            print(f"no files found for artifact {name}", file=sys.stderr)
            return 1
        print(f"no files found for artifact {name}: nothing uploaded")
        return 0
    target = store / name
    if target.exists():
        print(f"an artifact named {name} was already uploaded in this run", file=sys.stderr)
        return 1
    root = Path(os.path.commonpath([_search_root(line).resolve() for line in include]))
    if root.is_file():
        root = root.parent
    for file in files:
        destination = target / file.resolve().relative_to(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, destination)
    print(f"uploaded artifact {name}: {len(files)} file(s)")
    return 0


def download(store: Path) -> int:
    path = Path(os.environ.get("INPUT_PATH") or ".")
    name = os.environ.get("INPUT_NAME")
    if name:
        if not (store / name).is_dir():
            print(f"artifact {name} not found", file=sys.stderr)
            return 1
        shutil.copytree(store / name, path, dirs_exist_ok=True)
        print(f"downloaded artifact {name} into {path}")
        return 0
    pattern = os.environ.get("INPUT_PATTERN") or "*"
    merge = os.environ.get("INPUT_MERGE_MULTIPLE", "false") == "true"
    names = sorted(p.name for p in store.iterdir() if fnmatch.fnmatchcase(p.name, pattern))
    for found in names:
        shutil.copytree(store / found, path if merge else path / found, dirs_exist_ok=True)
    print(f"downloaded {len(names)} artifact(s) into {path}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    artifacts = Path(os.environ["ML_ACT_ARTIFACTS"])
    artifacts.mkdir(parents=True, exist_ok=True)
    sys.exit({"upload": upload, "download": download}[sys.argv[1]](artifacts))
