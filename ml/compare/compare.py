"""One challenger-vs-champion comparison: intervals, McNemar, MDD and flips (for gate.json)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml.compare.bootstrap import Interval, paired_bootstrap
from ml.compare.flips import flips
from ml.compare.mcnemar import mcnemar_exact, minimum_detectable_difference

HEADLINE_METRIC = "f1_weighted"
POWER = 0.8


@dataclass(frozen=True)
class Comparison:
    headline: dict[str, Interval]
    per_class: dict[str, Interval]
    fixed: int
    broken: int
    p_value: float
    mdd: dict[str, Any]
    flips: dict[str, Any]
    resamples: int
    seed: int

    @property
    def level(self) -> float:
        return self.headline[HEADLINE_METRIC].level

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "paired bootstrap (percentile) on the same holdout rows",
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
            "metrics": {m: i.to_dict() for m, i in self.headline.items()},
            "per_class": {c: i.to_dict() for c, i in self.per_class.items()},
            "mcnemar": {"fixed": self.fixed, "broken": self.broken, "p_value": self.p_value},
            "mdd": self.mdd,
            "flips": self.flips,
        }


def mdd_of(interval: Interval, paired: bool) -> dict[str, Any]:
    """The headline metric's minimum detectable difference on this holdout. Paired: from the
    spread of the observed differences; when there are none (no champion, or identical
    predictions) from the challenger's own spread, as for a rival with independent errors."""
    use_paired = paired and interval.se > 0
    se = interval.se if use_paired else interval.new_se * math.sqrt(2)
    return {
        "metric": interval.metric,
        "value": minimum_detectable_difference(se, interval.level, POWER),
        "level": interval.level,
        "power": POWER,
        "basis": "paired differences" if use_paired else "independent errors",
    }


def holdout_mdd(
    y_true: Sequence[Any],
    pred: Sequence[Any],
    labels: Sequence[str],
    resamples: int,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """The MDD when there is no champion to pair with."""
    headline, _ = paired_bootstrap(y_true, pred, pred, labels, resamples, level, seed)
    return mdd_of(headline[HEADLINE_METRIC], paired=False)


def compare(
    y_true: Sequence[Any],
    old: Mapping[str, Sequence[Any]],
    new: Mapping[str, Sequence[Any]],
    labels: Sequence[str],
    ids: Sequence[Any],
    display: Mapping[str, Sequence[Any]],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    examples: int = 5,
) -> Comparison:
    """Champion (`old`) vs challenger (`new`), each {"predicted", "confidence"} per row in the
    holdout's order."""
    headline, per_class = paired_bootstrap(
        y_true, old["predicted"], new["predicted"], labels, resamples, level, seed
    )
    changed = flips(
        y_true,
        old["predicted"],
        new["predicted"],
        old["confidence"],
        new["confidence"],
        ids,
        display,
        examples,
    )
    truth = [str(y) for y in y_true]
    old_right = [str(p) == t for p, t in zip(old["predicted"], truth, strict=True)]
    new_right = [str(p) == t for p, t in zip(new["predicted"], truth, strict=True)]
    fixed = sum(n and not o for o, n in zip(old_right, new_right, strict=True))
    broken = sum(o and not n for o, n in zip(old_right, new_right, strict=True))
    return Comparison(
        headline=headline,
        per_class=per_class,
        fixed=fixed,
        broken=broken,
        p_value=mcnemar_exact(fixed, broken),
        mdd=mdd_of(headline[HEADLINE_METRIC], paired=True),
        flips=changed,
        resamples=resamples,
        seed=seed,
    )
