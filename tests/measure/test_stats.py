"""Streaming statistics: Welford's running mean / std / CI against direct computation, and Student t's quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sta.measure.stats import RunningStats, mcnemar_exact, t_quantile_975, wilson_interval


def test_running_stats_equal_direct_computation():
    values = np.random.default_rng(0).lognormal(size=101)
    stats = RunningStats()
    for chunk in np.split(values, [1, 8, 9, 40, 77]):  # uneven batches, one of them empty
        stats.update(chunk)
    assert stats.count == 101
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(ddof=1), rel=1e-10)
    assert stats.ci95 == pytest.approx(t_quantile_975(100) * values.std(ddof=1) / math.sqrt(101), rel=1e-10)
    single = RunningStats()
    single.update([0.3])
    assert single.mean == 0.3 and math.isnan(single.std) and math.isnan(single.ci95)
    # Student t: table, expansion beyond df = 30 (continuous with the table), normal limit
    assert t_quantile_975(1) == 12.7062 and t_quantile_975(6) == 2.4469 and t_quantile_975(30) == 2.0423
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)
    assert t_quantile_975(239) == pytest.approx(1.9700, abs=1e-4)
    assert t_quantile_975(10**7) == pytest.approx(1.96, abs=1e-3)


def test_wilson_interval_known_values():
    """Values from Newcombe (1998), Table I: 81 of 263 -> 0.2553 to 0.3662; 0 of 10 -> 0 to 0.2775."""
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mcnemar_exact_against_the_binomial():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # every discordant clip on one side: 2 * 0.5**6
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)  # symmetric
