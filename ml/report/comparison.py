"""The PR comment's paired-comparison parts (gate.json's "comparison", written by ml.compare):
each delta with its interval and word, the note on how to read them, and "What changed".

A colour mark appears only beside a word the interval allows ("better" / "worse"); a delta
without an interval (ECE, slices, a gate report without the comparison) gets neither.
"""

from __future__ import annotations

from typing import Any

from ml.report.markdown import _details, _table

MARKS = {"better": "🟢", "worse": "🔴"}
KIND_TITLES = {
    "fixed": "Fixed (champion wrong, challenger right)",
    "broken": "Broken (champion right, challenger wrong)",
    "both_wrong": "Both wrong (different wrong answers)",
}


def interval_delta(interval: dict[str, Any]) -> str:
    """ "+0.0150 [-0.0120, +0.0410]"."""
    return f"{interval['diff']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]"


def word(interval: dict[str, Any]) -> str:
    """ "🟢 better", "🔴 worse" or "no detectable difference"."""
    mark = MARKS.get(interval["word"])
    return f"{mark} {interval['word']}" if mark else interval["word"]


def headline_delta(gate: dict[str, Any] | None, metric: str) -> str | None:
    """One metric's delta, interval and word from a gate report; None when it has none."""
    interval = ((gate or {}).get("comparison") or {}).get("metrics", {}).get(metric)
    return f"{interval_delta(interval)} {word(interval)}" if interval else None


def verdict_clause(gate: dict[str, Any]) -> str:
    """ ": weighted F1 +0.0150 [-0.0120, +0.0410] (95%), no detectable difference"."""
    comparison = gate.get("comparison") or {}
    f1 = comparison.get("metrics", {}).get("f1_weighted")
    if not f1:
        return ""
    return f": weighted F1 {interval_delta(f1)} ({comparison['level']:.0%}), {f1['word']}"


def _mdd_sentence(mdd: dict[str, Any] | None, paired: bool) -> str:
    if not mdd:
        return ""
    name = "weighted F1" if mdd["metric"] == "f1_weighted" else mdd["metric"]
    how = f"{mdd['level']:.0%}, {mdd['power']:.0%} power"
    if mdd["basis"] == "independent errors":
        how += ", for a rival with independent errors"
    sentence = (
        f"Minimum detectable difference in {name} on this holdout: {mdd['value']:.4f} ({how})"
    )
    if not paired:
        sentence += (
            "; a challenger closer than that to this model reads as no detectable difference"
        )
    return sentence + "."


def _p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 0.001 else f"{p:.1e}"


def comparison_note(gate: dict[str, Any] | None) -> list[str]:
    """How to read the intervals, McNemar's test and the MDD (below the headline table)."""
    gate = gate or {}
    comparison = gate.get("comparison")
    if not comparison:
        mdd = _mdd_sentence(gate.get("mdd"), paired=False)
        return [f"_{mdd}_", ""] if mdd else []
    test = comparison["mcnemar"]
    flips = comparison.get("flips") or {}
    counts = flips.get("counts") or {}
    rows = flips.get("rows") or gate.get("holdout_rows") or "?"
    note = (
        f"Δ is challenger - champion with its {comparison['level']:.0%} paired-bootstrap interval "
        f"({comparison['resamples']} resamples of the same {rows} holdout rows, seed "
        f"{comparison['seed']}); it says better or worse, with a colour, only when the interval "
        f"excludes zero. The models disagree on {flips.get('disagree', '?')} rows "
        f"({counts.get('fixed', 0)} fixed, {counts.get('broken', 0)} broken, "
        f"{counts.get('both_wrong', 0)} both wrong); McNemar's exact test p = "
        f"{_p_value(test['p_value'])}. {_mdd_sentence(comparison.get('mdd'), paired=True)}"
    )
    return [f"_{note}_", ""]


def changes_section(gate: dict[str, Any] | None, cap: int | None) -> list[str]:
    """ "What changed": the rows where challenger and champion disagree, per class and examples."""
    flips = ((gate or {}).get("comparison") or {}).get("flips")
    if not flips:
        return []
    counts = flips["counts"]
    lines = [
        "### What changed",
        "",
        f"{flips['disagree']} of {flips['rows']} holdout rows changed: {counts['fixed']} fixed, "
        f"{counts['broken']} broken, {counts['both_wrong']} both wrong.",
        "",
    ]
    if not flips["disagree"]:
        return lines
    per_class = [
        [label, c["fixed"], c["broken"], c["both_wrong"]] for label, c in flips["per_class"].items()
    ]
    lines += [*_table(["True class", "Fixed", "Broken", "Both wrong"], per_class, cap), ""]
    for kind, title in KIND_TITLES.items():
        examples = flips["examples"].get(kind) or []
        if not examples:
            continue
        rows = [
            [
                e["id"],
                e["input"],
                e["label"],
                f"{e['champion']} ({e['champion_confidence']:.2f})",
                f"{e['challenger']} ({e['challenger_confidence']:.2f})",
            ]
            for e in examples
        ]
        header = ["Id", "Input", "True", "Champion (conf.)", "Challenger (conf.)"]
        summary = f"{title}: {counts[kind]} row(s), first {len(rows)}"
        lines += _details(summary, _table(header, rows, cap))
    return lines
