"""The rows where challenger and champion disagree: what a reviewer asks after "is it better?".

fixed: the champion was wrong and the challenger is right; broken: the reverse; both wrong: they
predict different wrong classes. Rows where they agree (right or wrong) are not flips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KINDS = ("fixed", "broken", "both_wrong")
EXCERPT_CHARS = 120


def excerpt(display: Mapping[str, Sequence[Any]], row: int, limit: int = EXCERPT_CHARS) -> str:
    """One row of the task's prediction columns as a short line (text: the text itself)."""
    if len(display) == 1:
        text = str(next(iter(display.values()))[row])
    else:
        text = ", ".join(f"{name}={values[row]}" for name, values in display.items())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def kind(truth: str, old: str, new: str) -> str | None:
    if old == new:
        return None
    if new == truth:
        return "fixed"
    if old == truth:
        return "broken"
    return "both_wrong"


def flips(
    y_true: Sequence[Any],
    old_pred: Sequence[Any],
    new_pred: Sequence[Any],
    old_confidence: Sequence[float],
    new_confidence: Sequence[float],
    ids: Sequence[Any],
    display: Mapping[str, Sequence[Any]],
    examples: int = 5,
) -> dict[str, Any]:
    """Counts of each kind overall and per true class, and the first `examples` rows of each."""
    counts = dict.fromkeys(KINDS, 0)
    per_class: dict[str, dict[str, int]] = {}
    shown: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for row, (truth, old, new) in enumerate(zip(y_true, old_pred, new_pred, strict=True)):
        which = kind(str(truth), str(old), str(new))
        if which is None:
            continue
        counts[which] += 1
        per_class.setdefault(str(truth), dict.fromkeys(KINDS, 0))[which] += 1
        if len(shown[which]) < examples:
            shown[which].append(
                {
                    "id": _plain(ids[row]),
                    "input": excerpt(display, row),
                    "label": str(truth),
                    "champion": str(old),
                    "champion_confidence": round(float(old_confidence[row]), 4),
                    "challenger": str(new),
                    "challenger_confidence": round(float(new_confidence[row]), 4),
                }
            )
    return {
        "rows": len(y_true),
        "disagree": sum(counts.values()),
        "counts": counts,
        "per_class": dict(sorted(per_class.items())),
        "examples": shown,
    }


def _plain(value: Any) -> Any:
    """A JSON-friendly id (numpy integers from a DataFrame column)."""
    return value.item() if hasattr(value, "item") else value
