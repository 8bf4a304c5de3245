"""McNemar's exact test on per-row correctness, and the holdout's minimum detectable difference."""

from __future__ import annotations

from statistics import NormalDist


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact p-value that `fixed` (champion wrong, challenger right) and `broken` (the
    reverse) rows come from one coin: only discordant rows carry evidence, so it is a binomial
    test of min(fixed, broken) out of fixed + broken at 1/2. No discordant rows: p = 1."""
    if fixed < 0 or broken < 0:
        raise ValueError(f"counts must be non-negative: fixed={fixed}, broken={broken}")
    discordant = fixed + broken
    smaller = min(fixed, broken)
    # The lower tail as an exact integer: C(m, 0) + ... + C(m, smaller), term by term.
    term = total = 1
    for i in range(smaller):
        term = term * (discordant - i) // (i + 1)
        total += term
    return min(1.0, 2 * total / 2**discordant)


def minimum_detectable_difference(se: float, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `level` finds with probability `power`,
    for a difference estimated with standard error `se`: (z_{(1+level)/2} + z_power) * se."""
    normal = NormalDist()
    return (normal.inv_cdf(1 - (1 - level) / 2) + normal.inv_cdf(power)) * se
