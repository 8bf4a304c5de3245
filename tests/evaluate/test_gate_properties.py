"""Property tests of the gate's decision rule and the paired statistics it rests on (pure: no
model, no registry; synthetic paired predictions with a known effect)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from ml.compare import BETTER, NO_DIFFERENCE, WORSE, Comparison, Interval, compare, verdict_word
from ml.compare.bootstrap import EPSILON, paired_bootstrap
from ml.config import GateSettings
from ml.gate import decide

LABELS = ("computer-vision", "mlops", "natural-language-processing", "other")
score = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
PASSED_CHECKS = {"status": "passed", "passed": 9, "failed": 0, "pass_rate": 1.0, "reason": ""}
FAST = {"resamples": 200, "seed": 0}  # enough for the sign of an interval, cheap per example


def evaluation(f1_weighted: float, class_f1: dict[str, float], behavioural=None) -> dict:
    return {
        "overall": {"f1_weighted": f1_weighted, "accuracy": f1_weighted, "f1_macro": f1_weighted},
        "per_class": {label: {"f1": f1, "support": 10} for label, f1 in class_f1.items()},
        "behavioural": behavioural or PASSED_CHECKS,
    }


def interval(metric: str, low: float, high: float) -> Interval:
    mid = (low + high) / 2
    return Interval(metric, 0.8, 0.8 + mid, mid, low, high, (high - low) / 4, 0.95, 0.02)


def comparison(f1: Interval, classes: dict[str, Interval] | None = None) -> Comparison:
    classes = classes or {label: interval(label, -0.01, 0.01) for label in LABELS}
    mdd = {"metric": "f1_weighted", "value": 0.05, "level": 0.95, "power": 0.8, "basis": "x"}
    return Comparison({"f1_weighted": f1}, classes, 0, 0, 1.0, mdd, {}, 200, 0)


def paired(y_true, old, new):
    n = len(y_true)
    return compare(
        y_true,
        {"predicted": old, "confidence": [0.9] * n},
        {"predicted": new, "confidence": [0.8] * n},
        LABELS,
        list(range(n)),
        {"text": [f"row {i}" for i in range(n)]},
        **FAST,
    )


configs = st.builds(
    GateSettings,
    f1_tolerance=st.floats(0.0, 0.2),
    max_class_f1_drop=st.floats(0.0, 0.3),
)
class_scores = st.fixed_dictionaries({label: score for label in LABELS})
rows = st.lists(st.sampled_from(LABELS), min_size=10, max_size=300)


@settings(max_examples=100, deadline=None)
@given(rows, st.data())
def test_an_identical_model_is_never_better_or_worse(y_true, data):
    """Same predictions on the same rows: every interval is [0, 0] and every word says so,
    whatever the model's own accuracy; the gate passes it."""
    predicted = data.draw(
        st.lists(st.sampled_from(LABELS), min_size=len(y_true), max_size=len(y_true))
    )
    result = paired(y_true, predicted, predicted)
    words = {i.word for i in [*result.headline.values(), *result.per_class.values()]}
    assert words == {NO_DIFFERENCE}
    assert result.fixed == result.broken == 0 and result.p_value == 1.0
    decision = decide(evaluation(0.5, {}), evaluation(0.5, {}), True, GateSettings(), result)
    assert decision.passed, decision.reasons


@settings(max_examples=100, deadline=None)
@given(rows, st.floats(0.0, 0.5), st.integers(1, 3))
def test_a_model_worse_on_every_row_fails(y_true, tolerance, shift):
    """The champion right on every row, the challenger wrong on every row: detectably worse
    beyond any tolerance below 1, and the reason carries the interval."""
    wrong = [LABELS[(LABELS.index(y) + shift) % len(LABELS)] for y in y_true]
    result = paired(y_true, list(y_true), wrong)
    assert result.headline["f1_weighted"].word == WORSE
    config = GateSettings(f1_tolerance=tolerance)
    decision = decide(evaluation(0.0, {}), evaluation(1.0, {}), True, config, result)
    assert not decision.passed
    reason = next(r for r in decision.reasons if "weighted F1" in r)
    assert "interval [-1.0000, -1.0000]" in reason and "detectably worse" in reason


@settings(max_examples=300, deadline=None)
@given(st.floats(-1, 1), st.floats(0, 1))
def test_the_word_says_better_or_worse_only_when_the_interval_excludes_zero(low, width):
    high = min(1.0, low + width)
    word = verdict_word(low, high)
    if low <= EPSILON and high >= -EPSILON:  # zero inside (float noise counts as zero)
        assert word == NO_DIFFERENCE
    else:
        assert word == (BETTER if low > 0 else WORSE)


@settings(max_examples=300, deadline=None)
@given(configs, st.floats(-1, 0.5), st.floats(0, 1))
def test_weighted_f1_fails_exactly_when_detectably_worse_beyond_the_tolerance(config, low, width):
    f1 = interval("f1_weighted", low, min(1.0, low + width))
    decision = decide(evaluation(0.8, {}), evaluation(0.8, {}), True, config, comparison(f1))
    beyond = f1.high < -config.f1_tolerance - 1e-9
    assert decision.passed == (not beyond)
    if beyond:
        assert any("weighted F1" in r and "interval" in r for r in decision.reasons)


@settings(max_examples=300, deadline=None)
@given(configs, st.sampled_from(LABELS), st.floats(-1, 0), st.floats(0, 1))
def test_a_class_fails_exactly_when_its_interval_drops_beyond_the_limit(config, label, low, width):
    classes = {name: interval(name, -0.01, 0.01) for name in LABELS}
    classes[label] = interval(label, low, min(1.0, low + width))
    f1 = interval("f1_weighted", 0.01, 0.05)  # better overall: the class alone decides
    champion = evaluation(0.8, dict.fromkeys(LABELS, 0.8))
    decision = decide(evaluation(0.9, {}), champion, True, config, comparison(f1, classes))
    beyond = classes[label].high < -config.max_class_f1_drop - 1e-9
    assert decision.passed == (not beyond)
    if beyond:
        assert any(label in r for r in decision.reasons)


def test_the_interval_covers_the_true_difference_at_about_the_nominal_rate():
    """A known population where the challenger is 3 points better; holdouts of 300 rows drawn
    from it: the 95% intervals of accuracy and weighted F1 contain the population's difference
    in about 95% of 150 seeds (the bounds are three binomial standard deviations wide)."""
    rng = np.random.default_rng(2024)
    population = 50_000
    y = rng.integers(0, 4, population)
    hard = rng.random(population)
    # The challenger shares the champion's difficulty on 70% of the rows (correlated errors,
    # flips both ways), and is right on 88% of rows to the champion's 85%.
    own = np.where(rng.random(population) < 0.7, hard, rng.random(population))
    old = np.where(hard < 0.85, y, (y + rng.integers(1, 4, population)) % 4)
    new = np.where(own < 0.88, y, (y + rng.integers(1, 4, population)) % 4)
    names = np.array(LABELS)
    truth = {
        "accuracy": (new == y).mean() - (old == y).mean(),
        "f1_weighted": f1_score(y, new, average="weighted") - f1_score(y, old, average="weighted"),
    }
    covered = dict.fromkeys(truth, 0)
    seeds = 150
    for seed in range(seeds):
        rows_ = np.random.default_rng(seed).choice(population, 300, replace=False)
        found, _ = paired_bootstrap(
            names[y[rows_]], names[old[rows_]], names[new[rows_]], LABELS, 300, 0.95, seed
        )
        for metric in covered:
            covered[metric] += found[metric].low <= truth[metric] <= found[metric].high
    for metric, count in covered.items():
        assert 0.89 <= count / seeds <= 0.99, (metric, count / seeds)


@settings(max_examples=100, deadline=None)
@given(configs, score, class_scores)
def test_failed_data_validation_or_behavioural_checks_always_fail(config, f1, classes):
    good = evaluation(f1, classes)
    even = comparison(interval("f1_weighted", -0.01, 0.01))
    assert not decide(good, good, False, config, even).passed
    failing = {"status": "failed", "passed": 3, "failed": 1, "pass_rate": 0.75, "reason": ""}
    assert not decide(evaluation(f1, classes, failing), good, True, config, even).passed


def test_a_champion_without_a_comparison_is_a_programming_error():
    good = evaluation(0.9, dict.fromkeys(LABELS, 0.9))
    try:
        decide(good, good, True, GateSettings())
    except ValueError as exc:
        assert "paired comparison" in str(exc)
    else:
        raise AssertionError("decide compared point estimates without the paired comparison")


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
