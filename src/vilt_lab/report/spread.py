"""Whether a difference between two rows is larger than their seeds' spread.

The rule, stated once here and in every rendered comparison: a row differs from the baseline
when the difference of their means exceeds SPREAD_FACTOR standard errors of that difference,
|m1 - m2| > 2 * sqrt(s1^2 / n1 + s2^2 / n2), with s the sample standard deviation (n - 1) over a
row's seeds. It is a screen, not a significance test: with 3 seeds a row, Welch's t at the 5%
level would ask for about 2.8 standard errors, so a difference the rule flags is one to rerun
with more seeds before it is believed, and one it does not flag is not shown to be real.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

SPREAD_FACTOR = 2.0
RULE = (
    f"a difference counts as beyond the seed spread when |Δ| > {SPREAD_FACTOR:g} × SE, "
    "SE = sqrt(s1²/n1 + s2²/n2), s the sample standard deviation (n − 1) over each row's seeds; "
    "a screen, not a significance test (with 3 seeds, Welch's t at 5% asks for about 2.8 SE)"
)


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of one row's seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        return cls(
            statistics.fmean(samples),
            statistics.stdev(samples) if len(samples) > 1 else math.nan,
            len(samples),
        )


@dataclass(frozen=True)
class Difference:
    """A row's mean minus the baseline's, and the standard error of that difference."""

    delta: float
    standard_error: float

    @property
    def beyond_spread(self) -> bool:
        return abs(self.delta) > SPREAD_FACTOR * self.standard_error


def compare(row: Spread, baseline: Spread) -> Difference | None:
    """None when either side has fewer than two seeds: no spread to weigh the difference against."""
    if row.n < 2 or baseline.n < 2:
        return None
    return Difference(row.mean - baseline.mean, math.sqrt(row.std**2 / row.n + baseline.std**2 / baseline.n))
