"""ml.compare on small hand-checkable paired predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from ml.compare import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    compare,
    flips,
    mcnemar_exact,
    minimum_detectable_difference,
    paired_bootstrap,
)
from ml.compare.compare import holdout_mdd

LABELS = ["cat", "dog", "owl"]


def synthetic(rows: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.choice(LABELS, rows)
    old = np.where(rng.random(rows) < 0.8, y, rng.choice(LABELS, rows))
    new = np.where(rng.random(rows) < 0.8, y, rng.choice(LABELS, rows))
    return y.tolist(), old.tolist(), new.tolist()


def test_point_differences_are_sklearns_metrics():
    y, old, new = synthetic()
    headline, per_class = paired_bootstrap(y, old, new, LABELS, resamples=200)
    expected = {
        "accuracy": accuracy_score(y, new) - accuracy_score(y, old),
        "f1_weighted": f1_score(y, new, average="weighted") - f1_score(y, old, average="weighted"),
        "f1_macro": f1_score(y, new, average="macro") - f1_score(y, old, average="macro"),
    }
    for name, score in (("precision", precision_score), ("recall", recall_score)):
        for average in ("weighted", "macro"):
            expected[f"{name}_{average}"] = score(y, new, average=average) - score(
                y, old, average=average
            )
    for metric, diff in expected.items():
        assert headline[metric].diff == pytest.approx(diff, abs=1e-12)
        assert headline[metric].low <= headline[metric].diff <= headline[metric].high
    classes = f1_score(y, new, average=None, labels=LABELS)
    assert [per_class[c].new for c in LABELS] == pytest.approx(classes.tolist())


def test_a_label_outside_the_label_set_counts_as_an_error():
    y = ["cat", "dog", "owl", "cat"]
    headline, _ = paired_bootstrap(y, y, ["cat", "dog", "owl", "ferret"], LABELS, resamples=100)
    assert headline["accuracy"].diff == pytest.approx(-0.25)
    expected = f1_score(y, ["cat", "dog", "owl", "ferret"], average="weighted", labels=LABELS)
    assert headline["f1_weighted"].new == pytest.approx(expected)


def test_the_seed_fixes_the_interval_and_the_level_widens_it():
    y, old, new = synthetic()
    a, _ = paired_bootstrap(y, old, new, LABELS, resamples=500, seed=7)
    b, _ = paired_bootstrap(y, old, new, LABELS, resamples=500, seed=7)
    wide, _ = paired_bootstrap(y, old, new, LABELS, resamples=500, level=0.99, seed=7)
    assert a == b
    f1, f1_wide = a["f1_weighted"], wide["f1_weighted"]
    assert f1_wide.low <= f1.low and f1.high <= f1_wide.high
    assert f1.se > 0


def test_words_follow_the_interval():
    y = ["cat"] * 60 + ["dog"] * 60
    clearly_better, _ = paired_bootstrap(y, ["dog"] * 120, y, LABELS, resamples=300)
    assert clearly_better["accuracy"].word == BETTER
    clearly_worse, _ = paired_bootstrap(y, y, ["dog"] * 120, LABELS, resamples=300)
    assert clearly_worse["accuracy"].word == WORSE
    one_row = [*y[:-1], "cat"]  # a single flipped row on 120 cannot be told from noise
    noise, _ = paired_bootstrap(y, y, one_row, LABELS, resamples=300)
    assert noise["accuracy"].word == NO_DIFFERENCE


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="same non-empty rows"):
        paired_bootstrap(["cat"], ["cat", "dog"], ["cat"], LABELS)


@pytest.mark.parametrize(
    ("fixed", "broken", "p"),
    # Two-sided exact binomial at 1/2 (scipy.stats.binomtest gives the same values).
    [(5, 3, 0.7265625), (0, 10, 0.001953125), (10, 0, 0.001953125), (0, 0, 1.0), (4, 4, 1.0)],
)
def test_mcnemar_exact(fixed, broken, p):
    assert mcnemar_exact(fixed, broken) == pytest.approx(p)


def test_mcnemar_handles_a_large_holdout():
    assert 0 < mcnemar_exact(2400, 2600) < 0.01


def test_minimum_detectable_difference_is_z_sum_times_se():
    assert minimum_detectable_difference(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01)
    assert minimum_detectable_difference(0.0) == 0.0


def test_flips_sort_disagreements_and_keep_the_first_examples():
    y = ["cat", "cat", "dog", "dog", "owl", "owl"]
    old = ["cat", "dog", "dog", "cat", "dog", "owl"]
    new = ["dog", "cat", "cat", "cat", "cat", "owl"]
    result = flips(
        y,
        old,
        new,
        [0.9] * 6,
        [0.6] * 6,
        ids=list(range(6)),
        display={"text": ["t"] * 6},
        examples=1,
    )
    assert result["counts"] == {"fixed": 1, "broken": 2, "both_wrong": 1}
    assert result["disagree"] == 4  # row 3: both say cat, wrongly: the same answer, not a flip
    assert result["per_class"]["cat"] == {"fixed": 1, "broken": 1, "both_wrong": 0}
    assert result["per_class"]["owl"] == {"fixed": 0, "broken": 0, "both_wrong": 1}
    assert [e["id"] for e in result["examples"]["broken"]] == [0]
    first = result["examples"]["fixed"][0]
    assert first == {
        "id": 1,
        "input": "t",
        "label": "cat",
        "champion": "dog",
        "champion_confidence": 0.9,
        "challenger": "cat",
        "challenger_confidence": 0.6,
    }


def test_excerpts_are_short_and_name_each_column_of_a_many_column_display():
    y, old, new = ["cat", "dog"], ["dog", "dog"], ["cat", "cat"]
    long = flips(y, old, new, [1, 1], [1, 1], [0, 1], {"text": ["word " * 100, "x"]})
    text = long["examples"]["fixed"][0]["input"]
    assert len(text) == 120 and text.endswith("…")
    image = flips(
        y, old, new, [1, 1], [1, 1], [0, 1], {"mean_intensity": [0.3, 0.4], "contrast": [1, 2]}
    )
    assert image["examples"]["broken"][0]["input"] == "mean_intensity=0.4, contrast=2"


def test_compare_reports_everything_the_gate_writes():
    y, old, new = synthetic(rows=300, seed=3)
    n = len(y)
    result = compare(
        y,
        {"predicted": old, "confidence": [0.9] * n},
        {"predicted": new, "confidence": [0.7] * n},
        LABELS,
        list(range(n)),
        {"text": [str(i) for i in range(n)]},
        resamples=300,
    )
    data = result.to_dict()
    assert {"f1_weighted", "accuracy", "f1_macro", "recall_macro"} <= set(data["metrics"])
    assert set(data["per_class"]) == set(LABELS)
    counts = data["flips"]["counts"]
    assert (counts["fixed"], counts["broken"]) == (result.fixed, result.broken)
    assert data["mcnemar"]["p_value"] == mcnemar_exact(result.fixed, result.broken)
    assert data["mdd"]["basis"] == "paired differences" and data["mdd"]["value"] > 0
    assert data["metrics"]["f1_weighted"]["word"] in (BETTER, WORSE, NO_DIFFERENCE)


def test_without_a_pair_the_mdd_assumes_independent_errors():
    y, old, _ = synthetic()
    mdd = holdout_mdd(y, old, LABELS, resamples=300, level=0.95, seed=0)
    assert mdd["basis"] == "independent errors"
    assert 0.02 < mdd["value"] < 0.3
