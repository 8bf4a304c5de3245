"""Markdown building blocks of the PR comments (ml/report/sections.py, comparison.py,
combined.py): escaped cells, numbers, deltas, tables cut to a row cap, <details> blocks."""

from __future__ import annotations

from typing import Any


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def _num(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return _cell(value)


def _delta(new: Any, old: Any, lower_is_better: bool = False) -> str:
    """A point difference coloured by its sign alone: only for a report without intervals
    (ml/report/combined.py on a gate report that predates the paired comparison)."""
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return "—"
    diff = float(new) - float(old)
    if abs(diff) < 5e-5:
        return "±0.0000"
    better = diff < 0 if lower_is_better else diff > 0
    return f"{diff:+.4f} {'🟢' if better else '🔴'}"


def _table(header: list[str], rows: list[list[Any]], cap: int | None) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shown = rows if cap is None else rows[:cap]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in shown]
    if len(shown) < len(rows):
        lines.append(f"\n_{len(rows) - len(shown)} more row(s) cut to fit the comment limit._")
    return lines


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def plain_delta(new: Any, old: Any) -> str:
    """The point difference alone: no interval, so no word and no colour."""
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return "—"
    diff = float(new) - float(old)
    return "±0.0000" if abs(diff) < 5e-5 else f"{diff:+.4f}"
