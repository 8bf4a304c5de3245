"""Behavioural checks: invariance, directional and minimum-functionality cases from a YAML file.

The checks run on any `predict` function (texts -> labels), so they test a local model dir and a
registry model the same way. Cases written for another label set are skipped and say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ml.errors import UserError

KINDS = ("invariance", "directional", "minimum_functionality")


class BehaviouralError(UserError, ValueError):
    """The behavioural-checks file is missing or malformed."""


@dataclass
class CaseResult:
    kind: str
    name: str
    status: str  # passed | failed | skipped
    texts: list[str]
    expected: list[str | None]
    predicted: list[str | None]
    reason: str = ""


@dataclass
class BehaviouralResult:
    status: str  # passed | failed | skipped
    reason: str
    passed: int
    failed: int
    skipped: int
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def pass_rate(self) -> float | None:
        applicable = self.passed + self.failed
        return self.passed / applicable if applicable else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": self.pass_rate}


def load_cases(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BehaviouralError(f"behavioural checks file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BehaviouralError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise BehaviouralError(f"{path} must hold a mapping")
    unknown = set(spec) - {"labels", *KINDS}
    if unknown:
        raise BehaviouralError(f"{path}: unknown sections {sorted(unknown)}; expected {KINDS}")
    try:
        for case in spec.get("invariance", []):
            if len(case["texts"]) < 2:
                raise BehaviouralError(f"{path}: invariance case {case['name']!r} needs 2+ texts")
        rows = [
            ("directional", row, ("text", "expected"))
            for case in spec.get("directional", [])
            for row in case["cases"]
        ]
        rows += [
            ("minimum_functionality", row, ("name", "text", "expected"))
            for row in spec.get("minimum_functionality", [])
        ]
        for kind, row, keys in rows:
            absent = [key for key in keys if key not in row]
            if absent:
                raise BehaviouralError(f"{path}: {kind} case {row!r} lacks {absent}")
    except (KeyError, TypeError) as exc:
        raise BehaviouralError(f"{path}: malformed case ({exc!r})") from exc
    return spec


def run_checks(
    spec: dict[str, Any], predict: Callable[[list[str]], list[str]], model_labels: Sequence[str]
) -> BehaviouralResult:
    """Run every case with one batched predict call."""
    model_labels = set(model_labels)
    written_for = set(spec.get("labels") or [])
    if written_for and not written_for & model_labels:
        cases = _all_cases(spec, predicted=None, model_labels=model_labels)
        for case in cases:
            case.status, case.reason = "skipped", "label set differs"
        return BehaviouralResult(
            "skipped",
            f"cases are written for labels {sorted(written_for)}; the model predicts "
            f"{sorted(model_labels)}: checks skipped (add cases for this label set to run them)",
            0,
            0,
            len(cases),
            cases,
        )
    texts = sorted({text for case in _all_cases(spec, None, model_labels) for text in case.texts})
    predicted = dict(zip(texts, predict(texts), strict=True)) if texts else {}
    cases = _all_cases(spec, predicted, model_labels)
    counts = {s: sum(c.status == s for c in cases) for s in ("passed", "failed", "skipped")}
    if counts["failed"]:
        status, reason = "failed", f"{counts['failed']} of {len(cases)} case(s) failed"
    elif counts["passed"]:
        status, reason = "passed", f"{counts['passed']} case(s) passed"
    else:
        status, reason = "skipped", "no case applies to this model's labels"
    if counts["skipped"] and status != "skipped":
        reason += f", {counts['skipped']} skipped (labels the model does not know)"
    return BehaviouralResult(
        status, reason, counts["passed"], counts["failed"], counts["skipped"], cases
    )


def _all_cases(
    spec: dict[str, Any], predicted: dict[str, str] | None, model_labels: set[str]
) -> list[CaseResult]:
    def judge(kind: str, name: str, texts: list[str], expected: list[str | None]) -> CaseResult:
        got = [predicted.get(t) if predicted is not None else None for t in texts]
        unknown = sorted({e for e in expected if e is not None and e not in model_labels})
        if unknown:
            return CaseResult(kind, name, "skipped", texts, expected, got, f"unknown {unknown}")
        if predicted is None:
            return CaseResult(kind, name, "skipped", texts, expected, got)
        if kind == "invariance":
            ok = len(set(got)) == 1
            reason = "" if ok else "prediction changed: " + " / ".join(map(str, got))
        else:
            wrong = [(e, g) for e, g in zip(expected, got, strict=True) if e != g]
            ok = not wrong
            reason = "; ".join(f"expected {e}, got {g}" for e, g in wrong)
        return CaseResult(kind, name, "passed" if ok else "failed", texts, expected, got, reason)

    cases = []
    for case in spec.get("invariance", []):
        texts = list(case["texts"])
        cases.append(judge("invariance", case["name"], texts, [None] * len(texts)))
    for case in spec.get("directional", []):
        texts = [c["text"] for c in case["cases"]]
        expected = [c["expected"] for c in case["cases"]]
        cases.append(judge("directional", case["name"], texts, expected))
    for case in spec.get("minimum_functionality", []):
        cases.append(
            judge("minimum_functionality", case["name"], [case["text"]], [case["expected"]])
        )
    return cases
