"""Golden-file tests of the PR comment for fixed inputs.

Regenerate after an intended change with
`UPDATE_GOLDEN=1 pytest tests/evaluate/test_report_golden.py`; review the golden/ diff.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from ml.compare import compare
from ml.compare.compare import holdout_mdd
from ml.config import GateSettings
from ml.evaluate.metrics import classification_metrics
from ml.gate import decide
from ml.report.pr import GITHUB_COMMENT_LIMIT, MARKER, PrReportInputs, render

GOLDEN = Path(__file__).parent / "golden"
LABELS = ["computer-vision", "mlops", "natural-language-processing", "other"]


def evaluation(f1: list[float], version: str, accuracy: float, behavioural_failed: int = 0):
    per_class = {
        label: {"precision": f - 0.01, "recall": f + 0.01, "f1": f, "support": s}
        for label, f, s in zip(LABELS, f1, (71, 16, 78, 26), strict=True)
    }
    cases = [
        {
            "kind": "invariance",
            "name": "synonym of the verb",
            "status": "passed",
            "predicted": ["natural-language-processing"] * 2,
            "reason": "",
        },
        {
            "kind": "minimum_functionality",
            "name": "mlops",
            "status": "failed" if behavioural_failed else "passed",
            "predicted": ["other" if behavioural_failed else "mlops"],
            "reason": "expected mlops, got other" if behavioural_failed else "",
        },
    ]
    return {
        "version": version,
        "model_uri": f"models:/tag-classifier/{version}",
        "run_id": f"run{version}",
        "overall": {
            "accuracy": accuracy,
            "f1_weighted": accuracy - 0.002,
            "precision_weighted": accuracy + 0.001,
            "recall_weighted": accuracy,
            "f1_macro": sum(f1) / 4,
            "precision_macro": sum(f1) / 4 - 0.01,
            "recall_macro": sum(f1) / 4 + 0.01,
            "ece": 0.05,
            "num_samples": 191,
        },
        "per_class": per_class,
        "confusion_matrix": {
            "labels": LABELS,
            "matrix": [[68, 1, 1, 1], [0, 13, 2, 1], [1, 1, 75, 1], [2, 0, 2, 22]],
        },
        "slices": {
            "short_text": {
                "description": "≤ 12 words",
                "num_samples": 20,
                "accuracy": 0.9,
                "f1_weighted": 0.89,
            },
            "mentions_transformers": {
                "description": "mentions transformer, bert",
                "num_samples": 0,
                "accuracy": None,
                "f1_weighted": None,
            },
        },
        "behavioural": {
            "status": "failed" if behavioural_failed else "passed",
            "reason": "1 of 2 case(s) failed" if behavioural_failed else "2 case(s) passed",
            "passed": 2 - behavioural_failed,
            "failed": behavioural_failed,
            "skipped": 0,
            "pass_rate": (2 - behavioural_failed) / 2,
            "cases": cases,
        },
    }


THRESHOLDS = {
    "f1_tolerance": 0.01,
    "max_class_f1_drop": 0.05,
    "min_behavioural_pass_rate": 1.0,
    "floors": {"accuracy": 0.8, "f1_weighted": 0.8, "f1_macro": 0.7},
}


def base_inputs() -> PrReportInputs:
    return PrReportInputs(
        evaluation=None,
        gate=None,
        data_validation={
            "passed": True,
            "problems": [],
            "labels": LABELS,
            "files": {"train": {"rows": 764}, "holdout": {"rows": 191}},
            "class_counts": {
                "train": dict(zip(LABELS, (285, 63, 310, 106), strict=True)),
                "holdout": dict(zip(LABELS, (71, 16, 78, 26), strict=True)),
            },
        },
        train={
            "run_id": "run3",
            "duration_s": 312.4,
            "samples_per_s": 23.9,
            "resources": {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1},
        },
        registry={
            "name": "tag-classifier",
            "version": "3",
            "model_uri": "models:/tag-classifier/3",
        },
        params_diff={
            "params.yaml": {
                "train.lr": {"old": 0.0002, "new": 0.0003},
                "train.epochs": {"old": 8, "new": 10},
            }
        },
        params_diff_error=None,
        base_rev="origin/main",
        commit="0123456789abcdef0123",
    )


# The holdout behind the gate scenarios: 191 rows with the class counts above; the champion is
# wrong on every 7th row (the next label), and each scenario changes rows of it on purpose.
SUPPORT = (71, 16, 78, 26)
TRUTH = [label for label, count in zip(LABELS, SUPPORT, strict=True) for _ in range(count)]
TEXTS = [
    f"Paper {i}: {label} methods | tables, and a {'long ' * (i % 30)}abstract"
    for i, label in enumerate(TRUTH)
]
CHAMPION_WRONG = [i for i in range(len(TRUTH)) if i % 7 == 0]


def _wrong(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]


def predictions(fix: int = 0, fix_rows=None, break_rows=()) -> tuple[list[str], list[str]]:
    """(champion, challenger) predictions: the challenger fixes the first `fix` champion errors
    (or `fix_rows`) and breaks `break_rows`."""
    champion = [_wrong(t) if i in CHAMPION_WRONG else t for i, t in enumerate(TRUTH)]
    challenger = list(champion)
    for i in CHAMPION_WRONG[:fix] if fix_rows is None else fix_rows:
        challenger[i] = TRUTH[i]
    for i in break_rows:
        challenger[i] = _wrong(TRUTH[i])
    return champion, challenger


def scored(pred: list[str], version: str, behavioural_failed: int = 0) -> dict:
    """An evaluation as evaluate_predictor writes it, from real metrics on the rows."""
    confidence = [0.9 if p == t else 0.55 for p, t in zip(pred, TRUTH, strict=True)]
    metrics = classification_metrics(TRUTH, pred, confidence, LABELS)
    return {**evaluation([0.9] * 4, version, 0.9, behavioural_failed), **metrics}


def gate_inputs(champion_pred, challenger_pred, behavioural_failed=0, validation=True):
    """The gate report for a pair of predictions: compare, decide and report as ml.gate does."""
    config = GateSettings()
    challenger = scored(challenger_pred, "3", behavioural_failed)
    champion = scored(champion_pred, "2") if champion_pred else None
    if champion_pred:
        comparison = compare(
            TRUTH,
            {"predicted": champion_pred, "confidence": [0.8] * len(TRUTH)},
            {"predicted": challenger_pred, "confidence": [0.7] * len(TRUTH)},
            LABELS,
            list(range(len(TRUTH))),
            {"text": TEXTS},
            resamples=config.bootstrap_resamples,
            seed=config.bootstrap_seed,
            examples=3,
        )
        mdd = comparison.mdd
    else:
        comparison = None
        mdd = holdout_mdd(TRUTH, challenger_pred, LABELS, config.bootstrap_resamples, 0.95, 0)
    decision = decide(challenger, champion, validation, config, comparison)
    inputs = base_inputs()
    inputs.gate = {
        "verdict": "pass" if decision.passed else "fail",
        **decision.to_dict(),
        "thresholds": config.model_dump(exclude={"report"}),
        "challenger": challenger,
        "champion": champion,
        "comparison": comparison.to_dict() if comparison else None,
        "mdd": mdd,
        "holdout_rows": len(TRUTH),
    }
    return inputs


def champion_present() -> PrReportInputs:
    """Detectably better: 20 of the champion's 28 errors fixed, 2 rows broken."""
    return gate_inputs(*predictions(fix=20, break_rows=(1, 2)))


def no_detectable_difference() -> PrReportInputs:
    """A seed change: 8 rows differ (5 fixed, 3 broken), as the issue found: passes, no word."""
    return gate_inputs(*predictions(fix=5, break_rows=(1, 2, 3)))


def detectably_worse() -> PrReportInputs:
    """30 rows broken, 2 fixed: fails with the interval in the reason."""
    return gate_inputs(*predictions(fix=2, break_rows=range(100, 190, 3)))


def no_champion() -> PrReportInputs:
    inputs = gate_inputs(None, predictions(fix=20)[1])
    inputs.params_diff, inputs.params_diff_error = None, "dvc params diff origin/main failed: x"
    return inputs


def gate_fail() -> PrReportInputs:
    """A behavioural case fails, data validation fails, and mlops (rows 71-86) drops."""
    inputs = gate_inputs(
        *predictions(fix=0, break_rows=range(72, 80)), behavioural_failed=1, validation=False
    )
    inputs.data_validation = {
        **inputs.data_validation,
        "passed": False,
        "problems": [
            {
                "check": "duplicate_text",
                "file": "train",
                "rows": 2,
                "message": "the same text on several rows | twice",
            }
        ],
    }
    return inputs


@pytest.mark.parametrize(
    "scenario",
    [champion_present, no_champion, gate_fail, no_detectable_difference, detectably_worse],
)
def test_report_matches_golden_file(scenario):
    body = render(scenario())
    golden = GOLDEN / f"pr_comment_{scenario.__name__}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(body, encoding="utf-8")
    assert golden.is_file(), f"{golden} missing: run with UPDATE_GOLDEN=1 and review it"
    assert body == golden.read_text(encoding="utf-8")


def test_report_essentials():
    body = render(gate_fail())
    assert body.startswith(MARKER)
    verdict = body.splitlines()[3]
    assert verdict.startswith("❌ **Gate failed**") and "mlops 0.6829 -> 0.4118" in verdict
    assert "```mermaid" in body and "xychart-beta" in body
    assert "the same text on several rows \\| twice" in body  # pipes escaped in tables
    no = render(no_champion())
    assert "Floor (no champion yet)" in no and "Unavailable: dvc params diff" in no
    assert "Minimum detectable difference in weighted F1" in no and "What changed" not in no


def test_an_equal_challenger_reads_no_detectable_difference_and_passes():
    body = render(no_detectable_difference())
    verdict = body.splitlines()[3]
    assert verdict.startswith("✅ **Gate passed**")
    assert "no detectable difference" in verdict and "[-0.0141, +0.0330]" in verdict
    headline = body[body.index("### Headline metrics") : body.index("### Gate checks")]
    assert "🟢" not in headline and "🔴" not in headline and "| better" not in headline
    assert "McNemar's exact test p = 0.7266" in headline
    assert "8 of 191 holdout rows changed: 5 fixed, 3 broken, 0 both wrong" in body


def test_a_detectably_worse_challenger_fails_with_the_interval_in_the_reason():
    body = render(detectably_worse())
    verdict = body.splitlines()[3]
    assert verdict.startswith("❌ **Gate failed**")
    assert "95% interval [-0.1681, -0.0708]): detectably worse" in verdict
    assert "| F1 (weighted) | 0.7440 | 0.8614 | -0.1174 [-0.1681, -0.0708] | 🔴 worse |" in body
    better = render(champion_present())
    assert "| F1 (weighted) | 0.9479 | 0.8614 | +0.0865 [+0.0455, +0.1294] | 🟢 better |" in better
    assert "| ECE (lower is better) |" in better and "no interval |" in better


def test_flips_show_the_inputs_and_both_predictions():
    body = render(no_detectable_difference())
    changed = body[body.index("### What changed") :]
    assert (
        "<summary>Fixed (champion wrong, challenger right): 5 row(s), first 3</summary>" in changed
    )
    assert (
        "| 0 | Paper 0: computer-vision methods \\| tables, and a abstract | computer-vision |"
        in changed
    )
    assert "mlops (0.80) | computer-vision (0.70) |" in changed


def test_long_flip_lists_stay_under_the_comment_limit():
    inputs = no_detectable_difference()
    flips = inputs.gate["comparison"]["flips"]
    example = {
        "id": 1,
        "input": "x" * 119 + "…",
        "label": "mlops",
        "champion": "other",
        "champion_confidence": 0.9,
        "challenger": "mlops",
        "challenger_confidence": 0.8,
    }
    flips["examples"] = {kind: [example] * 5000 for kind in ("fixed", "broken", "both_wrong")}
    flips["counts"] = dict.fromkeys(("fixed", "broken", "both_wrong"), 5000)
    body = render(inputs)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "### What changed" in body and "more row(s) cut to fit the comment limit" in body
    assert body.startswith(MARKER) and body.rstrip().endswith("</sub>")


def test_report_stays_under_the_comment_limit():
    inputs = champion_present()
    challenger = inputs.gate["challenger"]
    many = {f"slice_{i}": copy.deepcopy(challenger["slices"]["short_text"]) for i in range(3000)}
    challenger["slices"] = many
    body = render(inputs)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "more row(s) cut to fit the comment limit" in body
    assert body.startswith(MARKER)


def test_a_pr_tier_model_is_named_as_evidence_not_a_candidate():
    """In the pr tier nothing is registered (the gate scores the run's model): the verdict names
    the run and says main registers what ships, instead of "challenger vunregistered"."""
    inputs = champion_present()
    inputs.gate["challenger"] = {
        **inputs.gate["challenger"],
        "version": "unregistered",
        "run_id": "abcdef0123456789",
    }
    verdict = render(inputs).splitlines()[3]
    assert "this PR's model (run abcdef01, not registered)" in verdict
    assert "vunregistered" not in verdict and "Eligible for promotion" not in verdict
    assert "Eligible for promotion" in render(champion_present()).splitlines()[3]
