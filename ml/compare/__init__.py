"""Paired comparison of two models scored on the same holdout rows (challenger vs champion).

Plain functions on per-row predictions (numpy, no model, no files), so the gate, the PR comment
and the benchmark share one definition of "detectably better":
  bootstrap  seeded paired bootstrap intervals of the metric differences, and the verdict word
  mcnemar    McNemar's exact test on per-row correctness, and the minimum detectable difference
  flips      the rows where the two disagree (fixed / broken / both wrong) with examples
  compare    all of it for one pair of models, as the dict reports/gate.json carries
"""

from ml.compare.bootstrap import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    Interval,
    paired_bootstrap,
    verdict_word,
)
from ml.compare.compare import Comparison, compare, holdout_mdd
from ml.compare.flips import flips
from ml.compare.mcnemar import mcnemar_exact, minimum_detectable_difference

__all__ = [
    "BETTER",
    "NO_DIFFERENCE",
    "WORSE",
    "Comparison",
    "Interval",
    "compare",
    "flips",
    "holdout_mdd",
    "mcnemar_exact",
    "minimum_detectable_difference",
    "paired_bootstrap",
    "verdict_word",
]
