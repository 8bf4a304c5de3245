"""Property tests of the gate's decision rule (pure: no model, no registry)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ml.config import GateSettings
from ml.gate import decide

LABELS = ("computer-vision", "mlops", "natural-language-processing", "other")
score = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
PASSED_CHECKS = {"status": "passed", "passed": 9, "failed": 0, "pass_rate": 1.0, "reason": ""}


def evaluation(f1_weighted: float, class_f1: dict[str, float], behavioural=None) -> dict:
    return {
        "overall": {"f1_weighted": f1_weighted, "accuracy": f1_weighted, "f1_macro": f1_weighted},
        "per_class": {label: {"f1": f1, "support": 10} for label, f1 in class_f1.items()},
        "behavioural": behavioural or PASSED_CHECKS,
    }


configs = st.builds(
    GateSettings,
    f1_tolerance=st.floats(0.0, 0.2),
    max_class_f1_drop=st.floats(0.0, 0.3),
)
class_scores = st.fixed_dictionaries({label: score for label in LABELS})


@settings(max_examples=300, deadline=None)
@given(configs, score, class_scores, st.floats(1e-6, 1.0), class_scores)
def test_never_passes_a_challenger_worse_than_tolerance(
    config, champion_f1, champion_classes, excess, challenger_classes
):
    """Weighted F1 below the champion's by more than the tolerance always fails, whatever the
    other metrics say."""
    challenger_f1 = champion_f1 - config.f1_tolerance - excess
    if challenger_f1 < 0:
        return
    decision = decide(
        evaluation(challenger_f1, challenger_classes),
        evaluation(champion_f1, champion_classes),
        True,
        config,
    )
    assert not decision.passed
    assert any("weighted F1" in reason for reason in decision.reasons)


@settings(max_examples=300, deadline=None)
@given(configs, score, class_scores, st.floats(1e-6, 1.0), st.sampled_from(LABELS), class_scores)
def test_never_passes_a_class_that_drops_beyond_the_limit(
    config, champion_f1, champion_classes, excess, label, challenger_classes
):
    dropped = champion_classes[label] - config.max_class_f1_drop - excess
    if dropped < 0:
        return
    challenger_classes = {**challenger_classes, label: dropped}
    decision = decide(
        evaluation(1.0, challenger_classes),  # better overall: the class drop alone must fail it
        evaluation(champion_f1, champion_classes),
        True,
        config,
    )
    assert not decision.passed
    assert any(label in reason for reason in decision.reasons)


@settings(max_examples=300, deadline=None)
@given(
    configs,
    score,
    class_scores,
    st.floats(0.0, 1.0),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
)
def test_always_passes_a_challenger_better_on_every_metric(
    config, champion_f1, champion_classes, gain, class_gains
):
    challenger_f1 = champion_f1 + (1.0 - champion_f1) * gain
    challenger_classes = {
        label: f1 + (1.0 - f1) * g
        for (label, f1), g in zip(champion_classes.items(), class_gains, strict=True)
    }
    decision = decide(
        evaluation(challenger_f1, challenger_classes),
        evaluation(champion_f1, champion_classes),
        True,
        config,
    )
    assert decision.passed, decision.reasons


@settings(max_examples=100, deadline=None)
@given(configs, score, class_scores)
def test_failed_data_validation_or_behavioural_checks_always_fail(config, f1, classes):
    good = evaluation(f1, classes)
    assert not decide(good, good, False, config).passed
    failing = {"status": "failed", "passed": 3, "failed": 1, "pass_rate": 0.75, "reason": ""}
    assert not decide(evaluation(f1, classes, failing), good, True, config).passed


def test_skipped_behavioural_checks_do_not_fail_the_gate():
    skipped = {
        "status": "skipped",
        "passed": 0,
        "failed": 0,
        "pass_rate": None,
        "reason": "cases are written for other labels",
    }
    challenger = evaluation(0.9, dict.fromkeys(LABELS, 0.9), skipped)
    decision = decide(challenger, None, True, GateSettings())
    assert decision.passed
    assert any("skipped" in c.detail for c in decision.checks)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["accuracy", "f1_weighted", "f1_macro"]), score, min_size=1),
    score,
)
def test_without_a_champion_the_floors_decide(floors, value):
    config = GateSettings(floors=floors)
    challenger = evaluation(value, dict.fromkeys(LABELS, value))
    decision = decide(challenger, None, True, config)
    assert decision.mode == "floors"
    assert decision.passed == all(value >= floor - 1e-9 for floor in floors.values())
