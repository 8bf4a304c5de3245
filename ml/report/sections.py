"""The sections of the PR comment (ml/report/pr.py renders them in order): pure functions of
the stage reports, one per heading, for every task (labels are class names already).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ml.report.comparison import (
    changes_section,
    comparison_note,
    interval_delta,
    verdict_clause,
    word,
)
from ml.report.markdown import _cell, _details, _num, _table, plain_delta
from ml.report.markdown import _delta as _delta  # ml/report/combined.py imports it from here

HEADLINE_ROWS = (
    ("accuracy", "Accuracy"),
    ("f1_weighted", "F1 (weighted)"),
    ("precision_weighted", "Precision (weighted)"),
    ("recall_weighted", "Recall (weighted)"),
    ("f1_macro", "F1 (macro)"),
    ("precision_macro", "Precision (macro)"),
    ("recall_macro", "Recall (macro)"),
    ("ece", "ECE (lower is better)"),
)


@dataclass
class PrReportInputs:
    """Everything the comment shows; each part may be absent when its stage did not run."""

    evaluation: dict[str, Any] | None  # reports/eval/evaluation.json (the challenger, local)
    gate: dict[str, Any] | None  # reports/gate.json
    data_validation: dict[str, Any] | None  # reports/data_validation.json
    train: dict[str, Any] | None  # reports/train.json
    registry: dict[str, Any] | None  # reports/registry.json
    params_diff: dict[str, Any] | None  # `dvc params diff --json` output
    params_diff_error: str | None
    base_rev: str
    commit: str


def _challenger(inputs: PrReportInputs) -> dict[str, Any] | None:
    if inputs.gate and inputs.gate.get("challenger"):
        return inputs.gate["challenger"]
    return inputs.evaluation


def _verdict(inputs: PrReportInputs) -> str:
    gate = inputs.gate
    if gate is None:
        return "⚠️ **Gate not run**: metrics below are for the trained model alone."
    challenger = gate.get("challenger") or {}
    champion = gate.get("champion")
    version = challenger.get("version", "?")
    if version == "unregistered":  # the pr tier scores its run's model and registers nothing
        run = str(challenger.get("run_id", ""))[:8]
        who = f"this PR's model (run {run}, not registered)" if run else "this PR's model"
    else:
        who = f"challenger v{version}"
    against = f"champion v{champion['version']}" if champion else "the floors (no champion yet)"
    # A failure's reasons carry the interval already.
    against += verdict_clause(gate) if champion and gate.get("passed") else ""
    if gate.get("passed"):
        # A PR's model is evidence, never a release candidate: main trains the one it ships.
        after = (
            "Once merged, main registers the model a release can ship."
            if version == "unregistered"
            else "Eligible for promotion."
        )
        return f"✅ **Gate passed**: {who} vs {against}. {after}"
    reasons = "; ".join(gate.get("reasons", []))
    return f"❌ **Gate failed**: {who} vs {against}. {reasons}"


def _headline_section(inputs: PrReportInputs) -> list[str]:
    challenger = _challenger(inputs)
    if challenger is None:
        return ["_No evaluation found: run `ml evaluate`._", ""]
    gate = inputs.gate or {}
    champion = gate.get("champion")
    intervals = (gate.get("comparison") or {}).get("metrics")
    new = challenger["overall"]
    if champion and intervals:
        old = champion["overall"]
        level = f"{gate['comparison']['level']:.0%}"
        header = ["Metric", "Challenger", "Champion", f"Δ [{level} interval]", "Verdict"]
        rows = [
            [label, _num(new.get(k)), _num(old.get(k)), *_compared(intervals.get(k), new, old, k)]
            for k, label in HEADLINE_ROWS
        ]
    elif champion:
        old = champion["overall"]
        header = ["Metric", "Challenger", "Champion", "Δ"]
        rows = [
            [label, _num(new.get(k)), _num(old.get(k)), plain_delta(new.get(k), old.get(k))]
            for k, label in HEADLINE_ROWS
        ]
    else:
        floors = (gate.get("thresholds") or {}).get("floors", {})
        header = ["Metric", "Challenger", "Floor (no champion yet)"]
        rows = [[label, _num(new.get(k)), _num(floors.get(k))] for k, label in HEADLINE_ROWS]
    rows.append(["Holdout rows", new.get("num_samples", "—"), *([""] * (len(header) - 2))])
    note = comparison_note(gate) if inputs.gate else []
    return ["### Headline metrics", "", *_table(header, rows, None), "", *note]


def _compared(interval: dict[str, Any] | None, new: dict, old: dict, key: str) -> list[str]:
    """[Δ with interval, word]; a metric without an interval (ECE) is shown, not judged."""
    if interval is None:
        return [plain_delta(new.get(key), old.get(key)), "no interval"]
    return [interval_delta(interval), word(interval)]


def _task_line(inputs: PrReportInputs) -> list[str]:
    """Which task and model the comment is about (reports written before tasks carry none)."""
    challenger = _challenger(inputs) or {}
    task = challenger.get("task") or (inputs.gate or {}).get("task")
    if not task:
        return []
    model = challenger.get("model_uri") or (challenger.get("model") or {}).get("source")
    where = f", model `{_cell(model)}`" if model else ""
    return [f"_Task `{_cell(task)}`{where}._", ""]


def _gate_section(inputs: PrReportInputs) -> list[str]:
    gate = inputs.gate
    if gate is None:
        return []
    lines = ["### Gate checks", ""]
    for check in gate.get("checks", []):
        lines.append(f"- {'✅' if check['passed'] else '❌'} {_cell(check['detail'])}")
    thresholds = gate.get("thresholds") or {}
    if thresholds:
        lines += [
            "",
            f"_Thresholds: weighted-F1 tolerance {thresholds.get('f1_tolerance')}, max class-F1 "
            f"drop {thresholds.get('max_class_f1_drop')}, behavioural pass rate "
            f"{thresholds.get('min_behavioural_pass_rate')}"
            + (
                "; each check fails only when the whole paired interval lies beyond its limit._"
                if gate.get("comparison")
                else "._"
            ),
        ]
    return [*lines, ""]


def _per_class_section(inputs: PrReportInputs, cap: int | None) -> list[str]:
    challenger = _challenger(inputs)
    if challenger is None:
        return []
    champion = (inputs.gate or {}).get("champion") or {}
    old = champion.get("per_class", {})
    intervals = ((inputs.gate or {}).get("comparison") or {}).get("per_class")
    header = ["Class", "Support", "Precision", "Recall", "F1"]
    if champion:
        header += (
            ["Champion F1", "Δ F1 [interval]", "Verdict"] if intervals else ["Champion F1", "Δ F1"]
        )
    rows = []
    for label, row in challenger["per_class"].items():
        cells = [
            label,
            row["support"],
            _num(row["precision"]),
            _num(row["recall"]),
            _num(row["f1"]),
        ]
        if champion:
            before = old.get(label, {}).get("f1")
            interval = (intervals or {}).get(label)
            if intervals:
                cells += [_num(before), *_compared(interval, row, old.get(label, {}), "f1")]
            else:
                cells.append(_num(before))
                cells.append(plain_delta(row["f1"], before))
        rows.append(cells)
    table = _table(header, rows, cap)
    chart = _chart(challenger, champion)
    if len(rows) > 10:
        return ["### Per class", "", *_details(f"{len(rows)} classes", table), *chart]
    return ["### Per class", "", *table, "", *chart]


def _chart(challenger: dict[str, Any], champion: dict[str, Any]) -> list[str]:
    """A mermaid bar chart (GitHub renders mermaid inline, no image hosting needed)."""
    labels = list(challenger["per_class"])
    if not labels:
        return []
    names = ", ".join(json.dumps(label.replace('"', "'")) for label in labels)
    bars = ", ".join(f"{challenger['per_class'][label]['f1']:.3f}" for label in labels)
    lines = [
        "```mermaid",
        "xychart-beta",
        '    title "F1 per class"',
        f"    x-axis [{names}]",
        '    y-axis "F1" 0 --> 1',
        f"    bar [{bars}]",
    ]
    legend = "_Bars: challenger."
    old = (champion or {}).get("per_class", {})
    if old and all(label in old for label in labels):
        line = ", ".join(f"{old[label]['f1']:.3f}" for label in labels)
        lines.append(f"    line [{line}]")
        legend += " Line: champion."
    return [*lines, "```", legend + "_", ""]


def _slices_section(inputs: PrReportInputs, cap: int | None) -> list[str]:
    challenger = _challenger(inputs)
    if not challenger or not challenger.get("slices"):
        return []
    old = ((inputs.gate or {}).get("champion") or {}).get("slices")
    header = ["Slice", "Rows", "Accuracy", "F1 (weighted)"]
    if old is not None:
        header += ["Champion F1", "Δ F1"]
    rows = []
    for name, row in challenger["slices"].items():
        cells = [
            f"{name} ({row.get('description', '')})",
            row["num_samples"],
            _num(row["accuracy"]),
            _num(row["f1_weighted"]),
        ]
        if old is not None:
            before = (old.get(name) or {}).get("f1_weighted")
            cells += [_num(before), plain_delta(row["f1_weighted"], before)]
        rows.append(cells)
    return ["### Slices", "", *_table(header, rows, cap), ""]


def _confusion_section(inputs: PrReportInputs) -> list[str]:
    challenger = _challenger(inputs)
    if not challenger or "confusion_matrix" not in challenger:
        return []
    cm = challenger["confusion_matrix"]
    labels, matrix = cm["labels"], cm["matrix"]
    header = ["true ↓ / predicted →", *labels]
    rows = [[label, *row] for label, row in zip(labels, matrix, strict=True)]
    # The matrix grows with k²: it is never cut, only collapsed.
    return _details("Confusion matrix (challenger, holdout)", _table(header, rows, None))


def _calibration_section(inputs: PrReportInputs) -> list[str]:
    challenger = _challenger(inputs)
    calibration = (challenger or {}).get("calibration")
    if not calibration:
        return []
    rows = [
        [
            f"{b['lower']:.2f}-{b['upper']:.2f}",
            b["count"],
            _num(b.get("accuracy")),
            _num(b.get("confidence")),
        ]
        for b in calibration.get("reliability", [])
    ]
    table = _table(["Confidence", "Rows", "Accuracy", "Mean confidence"], rows, None)
    return [
        "### Calibration",
        "",
        f"ECE {_num(calibration.get('ece'))} over {calibration.get('bins', len(rows))} "
        "equal-width confidence bins (lower is better).",
        "",
        *_details("Reliability (challenger, holdout)", table),
    ]


def _behavioural_section(inputs: PrReportInputs, cap: int | None) -> list[str]:
    challenger = _challenger(inputs)
    result = (challenger or {}).get("behavioural")
    if not result:
        return []
    icon = {"passed": "✅", "failed": "❌", "skipped": "⏭️", "not_applicable": "⚪"}
    status = str(result["status"]).replace("_", " ")
    lines = [
        "### Behavioural checks",
        "",
        f"{icon.get(result['status'], '')} **{status}**: {_cell(result['reason'])}",
        "",
    ]
    rows = [
        [
            icon.get(case["status"], ""),
            case["kind"],
            case["name"],
            " / ".join(str(p) for p in case["predicted"]),
            case.get("reason") or "",
        ]
        for case in result.get("cases", [])
    ]
    if rows:
        table = _table(["", "Kind", "Case", "Predicted", "Detail"], rows, cap)
        lines += _details(f"{len(rows)} case(s)", table)
    return lines


def _data_section(inputs: PrReportInputs, cap: int | None) -> list[str]:
    report = inputs.data_validation
    if report is None:
        return ["### Data validation", "", "_No data validation report found._", ""]
    problems = report.get("problems", [])
    status = "✅ passed" if report.get("passed") else f"❌ failed ({len(problems)} problem(s))"
    files = ", ".join(
        f"{name} {info.get('rows', '?')} rows" for name, info in report.get("files", {}).items()
    )
    lines = [
        "### Data validation",
        "",
        f"{status}: {files}; {len(report.get('labels', []))} labels",
    ]
    counts = report.get("class_counts") or {}
    if counts:
        names = list(counts)
        labels = sorted({label for per_file in counts.values() for label in per_file})
        rows = [[label, *(counts[n].get(label, 0) for n in names)] for label in labels]
        lines += ["", *_details("Class counts", _table(["Class", *names], rows, cap))]
    if problems:
        rows = [[p["check"], p["file"], p.get("rows", ""), p["message"]] for p in problems]
        lines += _details("Problems", _table(["Check", "File", "Rows", "Message"], rows, cap))
    return [*lines, ""]


def _training_section(inputs: PrReportInputs) -> list[str]:
    train = inputs.train
    if not train:
        return ["### Training", "", "_No training report found._", ""]
    resources = train.get("resources") or {}
    duration = train.get("duration_s")
    rows = [
        ["Duration", f"{duration:.1f} s" if isinstance(duration, int | float) else "—"],
        ["Throughput", f"{_num(train.get('samples_per_s'), 1)} samples/s"],
        ["Workers", resources.get("num_workers", "—")],
        ["GPU", resources.get("use_gpu", "—")],
        ["CPUs per worker", resources.get("cpus_per_worker", "—")],
    ]
    return ["### Training", "", *_table(["", "Value"], rows, None), ""]


def _params_section(inputs: PrReportInputs, cap: int | None) -> list[str]:
    title = f"### Params diff vs `{inputs.base_rev}`"
    if inputs.params_diff_error:
        return [title, "", f"_Unavailable: {_cell(inputs.params_diff_error)}_", ""]
    rows = [
        [f"`{key}`", json.dumps(change.get("old")), json.dumps(change.get("new")), file]
        for file, changes in sorted((inputs.params_diff or {}).items())
        for key, change in sorted(changes.items())
    ]
    if not rows:
        return [title, "", "No params changed.", ""]
    return [title, "", *_table(["Param", "Base", "This PR", "File"], rows, cap), ""]


def _mlflow_section(inputs: PrReportInputs) -> list[str]:
    rows = []
    if inputs.train:
        rows.append(["Run", f"`{inputs.train.get('run_id', '—')}`"])
    if inputs.registry:
        reg = inputs.registry
        rows.append(["Model version", f"`{reg['name']}` v{reg['version']} (`{reg['model_uri']}`)"])
    champion = (inputs.gate or {}).get("champion")
    if champion:
        rows.append(["Champion", f"v{champion['version']} (`{champion.get('model_uri', '')}`)"])
    if not rows:
        return []
    return ["### MLflow", "", *_table(["", ""], rows, None), ""]


def body(inputs: PrReportInputs, cap: int | None) -> list[str]:
    """Every section after the verdict, tables cut to `cap` rows (None: all)."""
    return [
        *_task_line(inputs),
        *_headline_section(inputs),
        *_gate_section(inputs),
        *_per_class_section(inputs, cap),
        *changes_section(inputs.gate, cap),
        *_slices_section(inputs, cap),
        *_confusion_section(inputs),
        *_calibration_section(inputs),
        *_behavioural_section(inputs, cap),
        *_data_section(inputs, cap),
        *_training_section(inputs),
        *_params_section(inputs, cap),
        *_mlflow_section(inputs),
    ]


def verdict(inputs: PrReportInputs) -> str:
    return _verdict(inputs)
