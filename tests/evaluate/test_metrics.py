"""Metrics, calibration, slices and behavioural checks on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import SliceSettings
from ml.evaluate.behavioural import BehaviouralError, load_cases, run_checks
from ml.evaluate.metrics import classification_metrics, expected_calibration_error
from ml.evaluate.slices import slice_metrics
from ml.tasks.text_classification.evaluation import SLICE_FUNCTIONS
from tests.conftest import REPO_ROOT


def test_classification_metrics_match_hand_computation():
    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "b", "b", "b"]
    result = classification_metrics(y_true, y_pred, [0.9, 0.9, 0.6, 0.6], ["a", "b"])
    overall = result["overall"]
    assert overall["accuracy"] == pytest.approx(0.75)
    # a: P 1, R 0.5, F1 2/3; b: P 2/3, R 1, F1 0.8; both supports 2.
    assert result["per_class"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert result["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert overall["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert overall["f1_weighted"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert overall["precision_weighted"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["confusion_matrix"] == {"labels": ["a", "b"], "matrix": [[1, 1], [0, 2]]}
    # Bins: conf 0.9 holds 1 right of 2 (|0.5 - 0.9| * 2/4); conf 0.6 holds 2 right (|1 - 0.6|
    # * 2/4).
    assert overall["ece"] == pytest.approx(0.4)
    assert overall["num_samples"] == 4


def test_predictions_outside_the_label_set_count_as_errors():
    result = classification_metrics(["a", "b"], ["a", "zzz"], [1.0, 1.0], ["a", "b"])
    assert result["overall"]["accuracy"] == 0.5
    assert result["per_class"]["b"]["recall"] == 0.0
    assert result["confusion_matrix"]["matrix"] == [[1, 0], [0, 0]]


def test_perfectly_calibrated_predictions_have_zero_ece():
    ece, bins = expected_calibration_error(["a"] * 4, ["a", "a", "a", "b"], [0.75] * 4, bins=4)
    assert ece == pytest.approx(0.0)
    assert sum(b["count"] for b in bins) == 4


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics(["a"], ["a", "b"], [1.0], ["a", "b"])


def test_slices_select_rows_and_score_them():
    texts = ["short one", "a much longer text about BERT models and more words here", "Keras CNN"]
    specs = [
        SliceSettings(name="short", function="short_text", words=3),
        SliceSettings(name="bert", function="keywords", keywords=["bert"]),
        SliceSettings(name="empty", function="keywords", keywords=["nothing-matches"]),
    ]
    masks = {s.name: SLICE_FUNCTIONS[s.function](texts, s) for s in specs}
    result = slice_metrics(masks, ["a", "b", "a"], ["a", "a", "b"], ["a", "b"], specs)
    assert result["short"]["num_samples"] == 2  # "short one", "Keras CNN"
    assert result["short"]["accuracy"] == 0.5
    assert result["bert"]["num_samples"] == 1  # whole word, case-insensitive
    assert result["bert"]["accuracy"] == 0.0
    assert result["empty"] == {**result["empty"], "num_samples": 0, "f1_weighted": None}


def test_slice_settings_need_their_arguments():
    with pytest.raises(ValueError, match="needs `words`"):
        SliceSettings(name="x", function="short_text")


CASES = load_cases(REPO_ROOT / "ml" / "evaluate" / "behavioural.yaml")
MWML_LABELS = ["computer-vision", "mlops", "natural-language-processing", "other"]


def keyword_predict(texts: list[str]) -> list[str]:
    """A transparent rule-based classifier (a real function, not a mock) for the checks."""
    out = []
    for text in texts:
        t = text.lower()
        if any(k in t for k in ("mlops", "deploy", "monitor")):
            out.append("mlops")
        elif any(k in t for k in ("image", "segmentation", "detection", "convolutional")):
            out.append("computer-vision")
        elif any(k in t for k in ("text", "nlp", "language", "translation", "sentiment", "bert")):
            out.append("natural-language-processing")
        else:
            out.append("other")
    return out


def test_behavioural_checks_pass_for_a_model_that_gets_them_right():
    result = run_checks(CASES, keyword_predict, MWML_LABELS)
    assert result.status == "passed", [c for c in result.cases if c.status != "passed"]
    assert result.failed == 0 and result.passed == len(result.cases) > 5


def test_behavioural_checks_fail_and_say_which_case():
    result = run_checks(CASES, lambda texts: ["other"] * len(texts), MWML_LABELS)
    assert result.status == "failed"
    failed = [c for c in result.cases if c.status == "failed"]
    assert {c.kind for c in failed} == {"directional", "minimum_functionality"}
    # A constant model is perfectly invariant: those cases pass.
    assert all(c.status == "passed" for c in result.cases if c.kind == "invariance")
    assert "expected natural-language-processing, got other" in failed[0].reason


def test_behavioural_checks_are_skipped_for_another_label_set():
    labels = ["neoplasms", "digestive", "nervous", "cardiovascular", "general"]
    calls = []
    result = run_checks(CASES, lambda texts: calls.append(texts) or [], labels)
    assert result.status == "skipped"
    assert "written for labels" in result.reason and result.failed == 0
    assert calls == []  # nothing predicted for checks that do not apply


def test_cases_with_a_label_the_model_lacks_are_skipped_alone():
    labels = ["computer-vision", "natural-language-processing", "other"]  # no mlops
    result = run_checks(CASES, keyword_predict, labels)
    skipped = [c for c in result.cases if c.status == "skipped"]
    assert skipped and all("mlops" in c.reason for c in skipped)
    assert result.status == "passed" and "skipped" in result.reason


@pytest.mark.parametrize(
    "content, message",
    [
        ("invariance: [{name: x, texts: [only one]}]", "needs 2\\+ texts"),
        ("minimum_functionality: [{name: x, text: y}]", "lacks \\['expected'\\]"),
        ("surprise: []", "unknown sections"),
        ("[1, 2]", "must hold a mapping"),
    ],
)
def test_malformed_case_files_are_rejected(tmp_path: Path, content: str, message: str):
    path = tmp_path / "cases.yaml"
    path.write_text(content)
    with pytest.raises(BehaviouralError, match=message):
        load_cases(path)
