"""One sticky PR comment for several models: a summary table, then one section per model.

Each affected model's own stages write its report folder (the layout of `reports/` today:
gate.json, eval/evaluation.json, pr_comment.md, ...). `collect` reads one folder, `render` is
pure (model reports in, Markdown out) so golden files pin it down, and `write_combined` writes
the comment the pr-comment workflow posts. The comment starts with the same marker as a
one-model comment, so the poster updates the same comment whichever kind it is.

Layout: the summary table (model, task, gate verdict, the headline metric against the
champion), a line naming the models the PR does not affect, then one <details> section per
model holding that model's own comment body; failed models come first, opened.

Size: GitHub refuses a comment over 65,536 characters, counted after the poster has defused
it (ml/report/sticky.py), so sizes here are measured on the defused text. When the sections do
not fit, the largest are shortened first, to a common cap, each at a line outside a code block
and a table's header (a table may lose its last rows; <details> left open are closed after the
cut), followed by a line saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.errors import UserError
from ml.io import atomic_path
from ml.report.comparison import headline_delta
from ml.report.sections import _cell, _delta, _num
from ml.report.sticky import GITHUB_COMMENT_LIMIT, MARKER, neutralise

# The metric the gate compares with the champion (ml/gate.py), so the summary shows the number
# the verdict turned on.
HEADLINE_METRIC, HEADLINE_LABEL = "f1_weighted", "F1 (weighted)"
TRUNCATED = (
    "_Section truncated to fit GitHub's comment limit; the full report is in the workflow "
    "artifact._"
)
# Names become folder names (reports/NAME/) and sit inside <summary>: no markup, no spaces.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# What a model's report folder holds, relative to it (today's reports/ layout).
GATE_FILE, EVALUATION_FILE, COMMENT_FILE = "gate.json", "eval/evaluation.json", "pr_comment.md"
_DETAILS_OPEN = re.compile(r"<details(?:\s[^>]*)?>")
_DETAILS_CLOSE = re.compile(r"</details>")
_SEPARATOR = re.compile(r"^\s*\|\s*:?-{3,}")  # a table's second row: |---|---|


class CombineError(UserError):
    """The model reports cannot be combined; the message names the model and the fix."""


@dataclass(frozen=True)
class ModelReport:
    """What the combined comment shows of one model; `body` is its own comment, marker and all
    (or None when `ml report pr` did not run for it)."""

    name: str
    task: str | None
    gate: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    body: str | None

    @property
    def status(self) -> str:
        """ "failed", "not run" (no gate report) or "passed"."""
        if self.gate is None:
            return "not run"
        return "passed" if self.gate.get("passed") else "failed"


_ICON = {"failed": "❌", "not run": "⚠️", "passed": "✅"}
_ORDER = {"failed": 0, "not run": 1, "passed": 2}


def check_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise CombineError(
            f"model name {name[:80]!r} is not a plain name: use letters, digits, '.', '_' and "
            "'-' (it becomes a folder name and a heading)"
        )
    return name


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CombineError(f"{path} is not JSON ({exc}); rerun the stage that writes it") from exc


def collect(
    name: str, folder: Path, task: str | None = None, missing_ok: bool = False
) -> ModelReport:
    """One model's report folder, read; `task` None means the task its reports name.
    `missing_ok`: an empty or absent folder is a model whose job wrote nothing (not run)."""
    check_name(name)
    gate = _read_json(folder / GATE_FILE)
    evaluation = _read_json(folder / EVALUATION_FILE)
    comment = folder / COMMENT_FILE
    body = comment.read_text(encoding="utf-8") if comment.is_file() else None
    if gate is None and evaluation is None and body is None and not missing_ok:
        raise CombineError(
            f"model {name}: {folder} holds no {GATE_FILE}, {EVALUATION_FILE} or {COMMENT_FILE}; "
            f"run `ml evaluate`, `ml gate` and `ml report pr` for it"
        )
    if task is None:
        challenger = (gate or {}).get("challenger") or {}
        task = (gate or {}).get("task") or challenger.get("task") or (evaluation or {}).get("task")
    return ModelReport(name, task, gate, evaluation, body)


# ---- rendering (pure) ----------------------------------------------------------------------


def _size(text: str) -> int:
    """Characters GitHub counts: the poster defuses mentions and HTML before posting."""
    return len(neutralise(text))


def _headline_cells(report: ModelReport) -> list[str]:
    gate = report.gate or {}
    challenger = gate.get("challenger") or report.evaluation or {}
    new = (challenger.get("overall") or {}).get(HEADLINE_METRIC)
    champion = gate.get("champion")
    if report.gate is None:
        return [_num(new), "— (gate not run)", "—"]
    if not champion:
        return [_num(new), "no champion yet", "—"]
    old = (champion.get("overall") or {}).get(HEADLINE_METRIC)
    # The paired interval and its word when the gate has them (a colour only when detectable).
    delta = headline_delta(gate, HEADLINE_METRIC) or _delta(new, old)
    return [_num(new), f"{_num(old)} (v{_cell(champion.get('version', '?'))})", delta]


def summary_table(reports: Sequence[ModelReport]) -> list[str]:
    lines = [
        f"| Model | Task | Gate | {HEADLINE_LABEL} | Champion | Δ |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        cells = [
            f"`{r.name}`",
            _cell(r.task or "—"),
            f"{_ICON[r.status]} {r.status}",
            *_headline_cells(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict_line(reports: Sequence[ModelReport]) -> str:
    if not reports:
        return "No model is affected by this PR: nothing was trained or gated."
    bad = [r for r in reports if r.status != "passed"]
    if not bad:
        return f"✅ **Every affected model passed the gate** ({len(reports)} of {len(reports)})."
    named = ", ".join(f"`{r.name}` ({r.status})" for r in bad)
    return (
        f"❌ **{len(bad)} of {len(reports)} affected model(s) did not pass the gate**: {named}. "
        "The required check fails until every affected model passes."
    )


def _model_body(report: ModelReport) -> list[str]:
    """The model's own comment without its marker and title (the combined comment has one)."""
    if report.body is None:
        return ["_No comment body for this model: run `ml report pr` for it._"]
    lines = report.body.strip("\n").splitlines()
    if lines and lines[0].strip() == MARKER:
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    if lines and lines[0].startswith("## "):
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return lines


@dataclass(frozen=True)
class _Section:
    opening: tuple[str, ...]
    body: tuple[str, ...]

    def lines(self, body: Iterable[str] | None = None) -> list[str]:
        shown = self.body if body is None else body
        return [*self.opening, "", *shown, "", "</details>", ""]

    def text(self) -> str:
        return "\n".join(self.lines())


def _section(report: ModelReport) -> _Section:
    tag = "<details>" if report.status == "passed" else "<details open>"
    word = {"failed": "gate failed", "not run": "gate not run", "passed": "gate passed"}
    summary = f"{_ICON[report.status]} {report.name} ({report.task or 'task unknown'}): "
    return _Section(
        (tag, f"<summary>{_cell(summary + word[report.status])}</summary>"),
        tuple(_model_body(report)),
    )


def _cut_points(lines: Sequence[str]) -> list[tuple[int, int]]:
    """(i, depth): keeping lines[:i] leaves no code block open, no table header without its
    separator row, no <details> without its <summary>, and `depth` <details> open. A table
    may lose its last rows (what is kept is still a table, and the truncation line follows
    it), as ml/report/pr.py cuts rows."""
    points, depth, fence = [(0, 0)], 0, False
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fence = not fence
        elif not fence:
            depth += len(_DETAILS_OPEN.findall(line)) - len(_DETAILS_CLOSE.findall(line))
        following = lines[i + 1] if i + 1 < len(lines) else ""
        inside_head = _SEPARATOR.match(following) or following.startswith("<summary>")
        if not fence and not inside_head and depth >= 0:
            points.append((i + 1, depth))
    return points


def truncate(section: _Section, cap: int) -> str:
    """The section shortened to at most `cap` characters (defused) where it can be; at worst
    its opening and the truncation line."""
    body = list(section.body)
    sizes = [0]
    for line in body:
        sizes.append(sizes[-1] + _size(line) + 1)
    fixed = _size("\n".join(section.lines(["", TRUNCATED])))
    best = section.lines(["", TRUNCATED])
    for i, depth in _cut_points(body):
        closing = ["", "</details>"] * depth
        extra = sum(_size(x) + 1 for x in closing)
        if fixed + sizes[i] + extra > cap:
            continue  # a later point with fewer <details> open needs fewer closing tags
        kept = body[:i]
        while kept and not kept[-1].strip():
            kept = kept[:-1]
        best = section.lines([*kept, "", TRUNCATED, *closing])
    return "\n".join(best)


def _water_level(sizes: Sequence[int], budget: int) -> int:
    """The largest cap C with sum(min(size, C)) <= budget: only sections above C are cut."""
    remaining, left = budget, len(sizes)
    for size in sorted(sizes):
        if size * left > remaining:
            return max(remaining // left, 0)
        remaining -= size
        left -= 1
    return max(sizes, default=0)


def _head(reports: Sequence[ModelReport], not_affected: Sequence[str]) -> list[str]:
    count = f"{len(reports)} model(s)" if reports else "no model"
    lines = [MARKER, f"## Model report: {count}", "", _verdict_line(reports), ""]
    if reports:
        lines += [*summary_table(reports), ""]
    if not_affected:
        names = ", ".join(f"`{check_name(n)}`" for n in not_affected)
        lines += [f"_Not affected by this PR (not trained): {names}._", ""]
    return lines


FOOTER = "<sub>Generated by `ml report combine`: one section per affected model.</sub>\n"


def _fit(sections: Sequence[_Section], budget: int) -> list[str]:
    """Each section's text, the largest cut down to a common cap until they fit `budget`."""
    texts = [s.text() for s in sections]
    sizes = [_size(t) for t in texts]
    if sum(sizes) <= budget:
        return texts
    cap = _water_level(sizes, budget)
    return [
        t if n <= cap else truncate(s, cap) for s, t, n in zip(sections, texts, sizes, strict=True)
    ]


def render(
    reports: Sequence[ModelReport],
    not_affected: Sequence[str] = (),
    limit: int = GITHUB_COMMENT_LIMIT,
) -> str:
    """The combined comment, failed models first; at most `limit` characters once defused."""
    ordered = sorted(reports, key=lambda r: _ORDER[r.status])  # stable: input order otherwise
    names = [r.name for r in ordered]
    if len(set(names)) != len(names):
        raise CombineError(f"a model is listed twice: {', '.join(names)}")
    head = "\n".join(_head(ordered, not_affected)) + "\n"
    sections = [_section(r) for r in ordered]
    # One newline follows each section.
    texts = _fit(sections, limit - _size(head) - _size(FOOTER) - len(sections))
    body = head + "".join(t + "\n" for t in texts) + FOOTER
    if _size(body) > limit:
        raise CombineError(
            f"{len(sections)} model(s) do not fit in one comment of {limit} characters even "
            "with every section cut to its heading; list fewer models"
        )
    return body


# ---- the stage ----------------------------------------------------------------------------


def parse_model(option: str) -> tuple[str, Path]:
    """NAME=DIR from the command line."""
    name, sep, folder = option.partition("=")
    if not sep or not folder:
        raise CombineError(f"--reports {option!r}: expected NAME=DIR, e.g. tag-classifier=reports")
    return check_name(name), Path(folder)


def from_affected(
    affected_json: str, reports_root: Path, declared: Sequence[str]
) -> tuple[list[tuple[str, Path]], list[str]]:
    """(NAME, REPORTS_ROOT/NAME) for each model of `ml models affected --json`'s list, and the
    declared models it leaves out (not affected): a workflow passes its matrix as it is."""
    try:
        rows = json.loads(affected_json)
        names = [check_name(row["name"]) for row in rows]
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise CombineError(
            f"--affected {affected_json[:80]!r}: expected the JSON list `ml models affected "
            f'--json` prints ([{{"name": ...}}, ...]): {exc}'
        ) from exc
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise CombineError(
            f"--affected names {', '.join(unknown)}, not in models.yaml ({', '.join(declared)})"
        )
    models = [(name, reports_root / name) for name in names]
    return models, [name for name in declared if name not in names]


def write_combined(
    models: Sequence[tuple[str, Path]],
    output: Path,
    not_affected: Sequence[str] = (),
    missing_ok: bool = False,
) -> tuple[Path, list[ModelReport]]:
    """`missing_ok`: a model with no reports is shown as not run instead of refused (a workflow
    whose job for it failed before writing any)."""
    reports = [collect(name, folder, missing_ok=missing_ok) for name, folder in models]
    body = render(reports, not_affected)
    with atomic_path(output) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return output, reports


def gate_failures(models: Sequence[tuple[str, Path]]) -> list[str]:
    """Why the required check fails: one line per model whose gate failed or did not run,
    read by the same code as `ml gate --check` (ml.gate.read_report)."""
    from ml.gate import GateError, read_report

    failures = []
    for name, folder in models:
        try:
            report = read_report(folder / GATE_FILE)
        except GateError as exc:
            failures.append(f"{name}: {exc}")
            continue
        if not report.get("passed"):
            failures.append(f"{name}: " + "; ".join(report.get("reasons") or ["gate failed"]))
    return failures
