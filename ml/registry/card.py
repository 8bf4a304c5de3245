"""Model cards: one Markdown card per registered version, logged with it in its run's artifacts.

`register` writes the card from what the pipeline knows then (provenance, data checksums, params,
the holdout evaluation, the most confident mistakes); `ml gate` writes it again with the paired
comparison against the champion (intervals, McNemar, the rows it newly gets wrong). The inputs are
logged beside the card as JSON, so the gate adds to the register-time card instead of rebuilding
it from files that may since describe another model. `render` is pure: the golden test pins it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ml.config import Settings

CARD_TAG = "card.artifact"
CARD_FILE = "model_card.md"  # the latest card, also beside registry.json in reports/
FAILURE_EXAMPLES = 5
_ROW_COLUMNS = {"label", "predicted", "confidence", "correct"}
_PARAM_SECTIONS = {"task", "data", "split", "model", "image", "train"}
_DATA_KEYS = ("source", "train_file", "holdout_file", "sha256", "label_column", "labels")


def card_path(version: str) -> str:
    """The card's artifact path in the version's run (one per version: a run may hold several)."""
    return f"model_card/v{version}.md"


def confident_mistakes(predictions: Any, id_column: str, n: int = FAILURE_EXAMPLES) -> list[dict]:
    """The `n` wrong holdout predictions made with the highest confidence."""
    from ml.compare.flips import excerpt

    wrong = predictions[~predictions["correct"].astype(bool)]
    wrong = wrong.sort_values("confidence", ascending=False, kind="stable").head(n)
    shown = [c for c in wrong.columns if c not in _ROW_COLUMNS and c != id_column]
    display = {c: wrong[c].tolist() for c in shown}
    return [
        {
            "id": str(row[id_column]) if id_column in wrong else "",
            "input": excerpt(display, i) if display else "",
            "label": str(row["label"]),
            "predicted": str(row["predicted"]),
            "confidence": round(float(row["confidence"]), 4),
        }
        for i, (_, row) in enumerate(wrong.iterrows())
    ]


def register_inputs(
    settings: Settings, version: str, run_id: str, tags: dict[str, str]
) -> dict[str, Any]:
    """What the card says at registration, from the last `ml evaluate` (reports/eval/)."""
    import pandas as pd

    detail = settings.path(settings.evaluate.detail_dir)
    evaluation = _evaluation(settings, detail / "evaluation.json")
    predictions = detail / "predictions.csv"
    params = settings.model_dump(mode="json", include=_PARAM_SECTIONS)
    params["data"] = {k: params["data"][k] for k in _DATA_KEYS if k in params["data"]}
    return {
        "name": settings.mlflow.registered_model,
        "version": str(version),
        "run_id": run_id,
        "task": settings.task,
        "provenance": {
            k: tags.get(k, "") for k in ("git_sha", "git_branch", "pr_number", "registered_by")
        },
        "data": {"splits_sha256": tags.get("data_sha256", ""), **evaluation.get("holdout", {})},
        "params_sha256": tags.get("params_sha256", ""),
        "params": params,
        "evaluation": {
            k: evaluation[k]
            for k in ("overall", "per_class", "calibration", "slices", "model_labels")
            if k in evaluation
        },
        "mistakes": (
            confident_mistakes(pd.read_csv(predictions), settings.data.id_column)
            if predictions.is_file()
            else []
        ),
        "gate": None,
    }


def _evaluation(settings: Settings, path: Path) -> dict[str, Any]:
    """reports/eval/evaluation.json; without it (metrics.json written by other means) the
    headline metrics alone, so the version still gets a card."""
    if path.is_file():
        return json.loads(path.read_text())
    metrics = json.loads(settings.path(settings.evaluate.metrics).read_text())
    return {"overall": {k: v for k, v in metrics.items() if isinstance(v, int | float)}}


def gate_inputs(report: dict[str, Any]) -> dict[str, Any]:
    """The gate's part of the card: verdict, reasons and the paired comparison (gate.json)."""
    comparison = report.get("comparison") or {}
    flips = comparison.get("flips") or {}
    return {
        "verdict": report.get("verdict"),
        "reasons": report.get("reasons", []),
        "champion": (report.get("champion") or {}).get("version"),
        "level": comparison.get("level"),
        "intervals": comparison.get("metrics", {}),
        "mcnemar": comparison.get("mcnemar"),
        "mdd": report.get("mdd"),
        "broken": (flips.get("examples") or {}).get("broken", []),
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None or value == "" else str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _intended_use(card: dict[str, Any]) -> list[str]:
    labels = card["evaluation"].get("model_labels") or list(card["evaluation"].get("per_class", {}))
    data = card["params"].get("data", {})
    return [
        f"A `{card['task']}` model: it predicts one of {len(labels)} labels "
        f"({', '.join(f'`{label}`' for label in labels)}) for inputs like its training data "
        f"(`{data.get('train_file', '?')}` from {data.get('source', '?')}).",
        "",
        "Out of scope: labels outside this set, inputs unlike the training data (the drift "
        "monitor watches for them), and decisions made without reading the known failures below.",
    ]


def _metrics(card: dict[str, Any]) -> list[str]:
    overall = card["evaluation"].get("overall", {})
    gate = card.get("gate") or {}
    intervals = gate.get("intervals") or {}
    headers = ["metric", "value"]
    if intervals:
        level = round(100 * (gate.get("level") or 0))
        headers += [f"vs champion v{gate['champion']}", f"{level}% interval", "verdict"]
    rows = []
    for metric, value in overall.items():
        row: list[Any] = [metric, value]
        if intervals:
            found = intervals.get(metric)
            row += (
                [
                    f"{found['diff']:+.4f}",
                    f"[{found['low']:+.4f}, {found['high']:+.4f}]",
                    found["word"],
                ]
                if found
                else ["", "", ""]
            )
        rows.append(row)
    return _table(headers, rows)


def _gate(gate: dict[str, Any] | None) -> list[str]:
    if gate is None:
        return ["Not gated yet: `ml gate` adds its verdict and the comparison with the champion."]
    against = (
        f"against champion v{gate['champion']}" if gate["champion"] else "(no champion: floors)"
    )
    lines = [f"Verdict: **{gate['verdict']}** {against}."]
    lines += [f"- {reason}" for reason in gate.get("reasons", [])]
    if gate.get("mcnemar"):
        m = gate["mcnemar"]
        lines.append(
            f"- McNemar (exact): {m['fixed']} rows fixed, {m['broken']} broken, "
            f"p = {_fmt(m['p_value'])}"
        )
    if gate.get("mdd"):
        mdd = gate["mdd"]
        lines.append(f"- Minimum detectable difference in {mdd['metric']}: {_fmt(mdd['value'])}")
    return lines


def _failures(card: dict[str, Any]) -> list[str]:
    gate = card.get("gate") or {}
    rows = [
        [
            "newly wrong",
            e["id"],
            e["input"],
            e["label"],
            e["challenger"],
            e["challenger_confidence"],
        ]
        for e in gate.get("broken", [])
    ]
    rows += [
        ["confident mistake", e["id"], e["input"], e["label"], e["predicted"], e["confidence"]]
        for e in card.get("mistakes", [])
    ]
    if not rows:
        return ["None found on the holdout."]
    return _table(["kind", "id", "input", "true", "predicted", "confidence"], rows)


def render(card: dict[str, Any]) -> str:
    """The Markdown card of one version from its inputs (register_inputs, plus gate_inputs)."""
    evaluation = card["evaluation"]
    calibration = evaluation.get("calibration", {})
    data, provenance = card["data"], card["provenance"]
    lines = [
        f"# Model card: {card['name']} v{card['version']}",
        "",
        f"Run `{card['run_id']}`, commit `{provenance['git_sha']}` on `{provenance['git_branch']}`"
        + (f" (PR #{provenance['pr_number']})" if provenance.get("pr_number") else "")
        + f", registered by {provenance['registered_by'] or '-'}.",
        "",
        "## Intended use",
        "",
        *_intended_use(card),
        "",
        "## Data",
        "",
        f"- Splits (train, val, test) sha256: `{data.get('splits_sha256') or '-'}`",
        f"- Holdout: `{data.get('path', '-')}`, {data.get('rows', '-')} rows, "
        f"sha256 `{data.get('sha256', '-')}`",
        "",
        "## Metrics (holdout)",
        "",
        *_metrics(card),
        "",
        "## Gate",
        "",
        *_gate(card.get("gate")),
        "",
        "## Per class",
        "",
        *_table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [c, r["precision"], r["recall"], r["f1"], r["support"]]
                for c, r in evaluation.get("per_class", {}).items()
            ],
        ),
        "",
        "## Slices",
        "",
        *(
            _table(
                ["slice", "rows", "accuracy", "F1 (weighted)"],
                [
                    [n, s["num_samples"], s["accuracy"], s["f1_weighted"]]
                    for n, s in evaluation.get("slices", {}).items()
                ],
            )
            if evaluation.get("slices")
            else ["No slices configured (`evaluate.slices`)."]
        ),
        "",
        "## Calibration",
        "",
        f"Expected calibration error {_fmt(calibration.get('ece'))} over "
        f"{calibration.get('bins', '-')} confidence bins.",
        "",
        "## Known failures",
        "",
        *_failures(card),
        "",
        "## Params",
        "",
        f"params sha256 `{card.get('params_sha256') or '-'}`",
        "",
        "```json",
        json.dumps(card["params"], indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def log_card(
    settings: Settings, registry: MlflowClient, card: dict[str, Any], report_dir: Path
) -> str:
    """Log the card (and its inputs) in the version's run, tag the version, write it locally."""
    from ml.io import atomic_path

    text = render(card)
    path = card_path(card["version"])
    registry.log_text(card["run_id"], text, path)
    registry.log_dict(card["run_id"], card, path.removesuffix(".md") + ".json")
    registry.set_model_version_tag(card["name"], card["version"], CARD_TAG, path)
    with atomic_path(report_dir / CARD_FILE) as tmp:
        tmp.write_text(text)
    return text


def logged_inputs(run_id: str, version: str) -> dict[str, Any] | None:
    """The inputs logged with a version's card (None: it has none yet)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(
            f"runs:/{run_id}/{card_path(version).removesuffix('.md')}.json"
        )
    except (MlflowException, OSError):
        return None


def fetch_card(settings: Settings, version: str) -> str:
    """The Markdown card logged with `version` of the settings' registered model."""
    import mlflow

    from ml.registry import RegistryError, client, get_version

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout is the card

    registry = client(settings)
    name = settings.mlflow.registered_model
    found = get_version(registry, name, version)
    path = (found.tags or {}).get(CARD_TAG)
    if not path:
        raise RegistryError(
            f"{name} v{version} has no model card (registered before cards existed); "
            "register a new version to get one"
        )
    return mlflow.artifacts.load_text(f"runs:/{found.run_id}/{path}")
