"""Streaming statistics over clips: Welford's running mean and variance, and a Student-t 95% confidence interval.

Pure arithmetic (no model, no torch): a study can summarise any number of clips in O(1) memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from sta.errors import InvalidInput

CI_METHOD = "95% confidence interval of the mean over clips, Student t with clips - 1 degrees of freedom"

# The 97.5% quantile of Student's t for 1..30 degrees of freedom (4 decimals, as printed in statistics tables).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%).

    Tabulated for ``df <= 30`` (4 decimals); above, the Cornish-Fisher expansion
    in ``1/df`` (Abramowitz & Stegun 26.7.5), within 1e-5 there.
    """
    if df < 1:
        raise InvalidInput(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


class RunningStats:
    """Welford's streaming mean and M2 (sum of squared deviations) in float64: O(1) memory for any number of values."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Iterable[float] | np.ndarray) -> None:
        """Add values (any array-like, a CPU tensor included), in order."""
        for v in np.asarray(values, dtype=np.float64).ravel():
            self.count += 1
            delta = v - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (v - self.mean)

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``); NaN below two values."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else float("nan")

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean (Student t); NaN below two values."""
        if self.count < 2:
            return float("nan")
        return t_quantile_975(self.count - 1) * self.std / math.sqrt(self.count)


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (Wilson 1927), as fractions in [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% and 100%, where
    top-1 on a small or easy set often sits.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise InvalidInput(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)  # the interval's centre is pulled towards 1/2
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (rounding would miss them)
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for paired right/wrong outcomes on the same clips.

    ``only_a``: clips method A gets right and B wrong; ``only_b``: the reverse. Under "A and B are
    equally good" each discordant clip is a fair coin: p = P(Binomial(n, 1/2) as extreme), n = only_a + only_b.
    """
    if only_a < 0 or only_b < 0:
        raise InvalidInput(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # P(X <= k), computed exactly in integers
    return min(1.0, 2 * tail)
