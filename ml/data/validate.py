"""Validate: the task checks data/raw/; every problem is listed, never just the first.

The checks themselves belong to the task (ml/tasks/<task>/): this module holds the report
types they fill in, writes reports/data_validation.json (always, pass or fail) and is what
`ml data validate` and the split stage call. The CLI exits non-zero when any problem is found.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ml.errors import UserError
from ml.io import sha256_file, write_json

if TYPE_CHECKING:
    from ml.config import Settings

MAX_EXAMPLES = 3


class NotValidatedError(UserError):
    """The raw data was not validated, failed validation, or changed since; validate again."""


@dataclass
class Problem:
    check: str
    file: str
    message: str
    rows: int
    examples: list[Any] = field(default_factory=list)


@dataclass
class ValidationReport:
    passed: bool
    labels: list[str]
    files: dict[str, dict[str, Any]]
    class_counts: dict[str, dict[str, int]]
    problems: list[Problem]
    # check name -> what it catches, for the task that ran (its CHECKS).
    checks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def kinds(self) -> set[str]:
        return {p.check for p in self.problems}


def examples(values: Any) -> list[Any]:
    """The first MAX_EXAMPLES values as text, each shortened to 80 characters, for a Problem."""
    out = []
    for value in list(values)[:MAX_EXAMPLES]:
        text = str(value)
        out.append(text if len(text) <= 80 else text[:77] + "...")
    return out


def validate(settings: Settings) -> ValidationReport:
    """Run the task's checks on data/raw/ and write the report (always, pass or fail)."""
    from ml.tasks import task_of

    report = task_of(settings).validate(settings)
    write_json(settings.path(settings.validate_.report), report.to_dict())
    return report


def require_validated(settings: Settings) -> dict[str, Any]:
    """The passed validation report; a NotValidatedError when it is absent, failed, or a file
    it checked has changed since."""
    report_path = settings.path(settings.validate_.report)
    if not report_path.is_file():
        raise NotValidatedError(f"{report_path} not found; run `ml data validate` first")
    report = json.loads(report_path.read_text())
    if not report.get("passed"):
        raise NotValidatedError(
            f"data validation failed ({len(report.get('problems', []))} problem(s), see "
            f"{report_path}); fix the data and rerun `ml data validate`"
        )
    for info in report.get("files", {}).values():
        path = settings.path(info["path"])
        if info.get("sha256") and (not path.is_file() or sha256_file(path) != info["sha256"]):
            raise NotValidatedError(f"{path} changed after validation; rerun `ml data validate`")
    return report
