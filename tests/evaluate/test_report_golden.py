"""Golden-file tests of the PR comment for fixed inputs.

Regenerate after an intended change with
`UPDATE_GOLDEN=1 pytest tests/evaluate/test_report_golden.py`; review the golden/ diff.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

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


def champion_present() -> PrReportInputs:
    inputs = base_inputs()
    inputs.gate = {
        "verdict": "pass",
        "passed": True,
        "mode": "compare",
        "reasons": [
            "data validation passed",
            "behavioural checks 2/2 passed (need 100%)",
            "weighted F1 0.9480 vs champion 0.9330 (Δ +0.0150, tolerance 0.01)",
            "no class F1 dropped more than 0.05",
        ],
        "checks": [
            {"name": "data_validation", "passed": True, "detail": "data validation passed"},
            {
                "name": "f1_weighted",
                "passed": True,
                "detail": "weighted F1 0.9480 vs champion 0.9330 (Δ +0.0150, tolerance 0.01)",
            },
        ],
        "thresholds": THRESHOLDS,
        "challenger": evaluation([0.96, 0.85, 0.95, 0.88], "3", 0.95),
        "champion": evaluation([0.95, 0.80, 0.94, 0.86], "2", 0.935),
    }
    return inputs


def no_champion() -> PrReportInputs:
    inputs = champion_present()
    inputs.gate = {
        **inputs.gate,
        "mode": "floors",
        "champion": None,
        "checks": [
            {"name": "floor.accuracy", "passed": True, "detail": "accuracy 0.9500 >= floor 0.8"}
        ],
    }
    inputs.params_diff, inputs.params_diff_error = None, "dvc params diff origin/main failed: x"
    return inputs


def gate_fail() -> PrReportInputs:
    inputs = champion_present()
    gate = inputs.gate
    gate["challenger"] = evaluation([0.96, 0.70, 0.95, 0.88], "3", 0.93, behavioural_failed=1)
    gate.update(
        passed=False,
        verdict="fail",
        reasons=[
            "behavioural checks 1/2 passed (need 100%)",
            "class F1 dropped more than 0.05: mlops 0.8000 -> 0.7000",
        ],
    )
    gate["checks"] = [
        {
            "name": "behavioural",
            "passed": False,
            "detail": "behavioural checks 1/2 passed (need 100%)",
        },
        {
            "name": "class_f1",
            "passed": False,
            "detail": "class F1 dropped more than 0.05: mlops 0.8000 -> 0.7000",
        },
    ]
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


@pytest.mark.parametrize("scenario", [champion_present, no_champion, gate_fail])
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
    assert verdict.startswith("❌ **Gate failed**") and "mlops 0.8000 -> 0.7000" in verdict
    assert "```mermaid" in body and "xychart-beta" in body
    assert "the same text on several rows \\| twice" in body  # pipes escaped in tables
    no = render(no_champion())
    assert "Floor (no champion yet)" in no and "Unavailable: dvc params diff" in no


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
