"""The ranking statistics (transferbench.ranking) on values worked by hand."""

from __future__ import annotations

import pytest

from transferbench.ranking import bootstrap_units, kendall, spearman, top1_regret, weighted_tau


def test_weighted_tau_by_hand():
    # hyperbolic weights 1/(r+1) by decreasing rank, a pair weighing the sum of its two:
    # x = 1,2,3 against y = 1,3,2: concordant 5/6 + 4/3, discordant 3/2 -> (4/6) / (22/6)
    assert weighted_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(2 / 11)
    # 1,2,3,4 against 2,1,4,3: concordant 25/6, discordant 25/12 of 25/4 -> 1/3 (both rankings)
    assert weighted_tau([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(1 / 3)
    # the top weighs most: one swap at the top costs more than one at the bottom
    assert weighted_tau([1, 2, 3, 4], [1, 2, 4, 3]) < weighted_tau([1, 2, 3, 4], [2, 1, 3, 4])
    assert weighted_tau([1, 2], [1, 2]) is None and weighted_tau([1, 1, 1], [1, 2, 3]) is None


def test_top1_regret_by_hand():
    assert top1_regret([3, 1, 2], [0.5, 0.9, 0.7]) == pytest.approx(0.4)
    assert top1_regret([1, 3, 2], [0.5, 0.9, 0.7]) == 0.0
    assert top1_regret([3, 3, 1], [0.5, 0.7, 0.9]) == pytest.approx(0.3)  # tied first: their mean
    assert top1_regret([], []) is None


def test_kendall_counts_ties_as_tau_b():
    # pairs: (1,2) concordant, (1,3) tied in y only, (2,3) discordant -> 0 / sqrt(3 * 2)
    assert kendall([1, 2, 3], [1, 2, 1]) == pytest.approx(0.0)
    # (1,2) concordant, (1,3) concordant, (2,3) tied in x only -> 2 / sqrt(2 * 3)
    assert kendall([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert kendall([1, 1], [2, 2]) is None


def test_cluster_bootstrap_resamples_units_not_points():
    # three units of one value each: the mean of three draws is 0 in 1/27 (3.7%) of resamples
    # and 2 in another 1/27, so the 95% percentile interval is [0, 2]
    groups = {"a": [0.0], "b": [1.0], "c": [2.0]}
    (mean,) = bootstrap_units(groups, lambda pts: [sum(pts) / len(pts)])
    assert (mean.value, mean.ci_low, mean.ci_high, mean.units) == (1.0, 0.0, 2.0, 3)
    # one unit of many points is still one unit: no interval with fewer than 3
    (few,) = bootstrap_units({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0]}, lambda pts: [sum(pts) / len(pts)])
    assert few.value == pytest.approx(1.4) and not few.determined
    # seeded: the same interval twice; paired: a difference of two statistics on the same draws
    def stats(pts):
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        rho, depth = spearman(x, y), spearman([p[2] for p in pts], y)
        return [rho, depth, None if rho is None or depth is None else rho - depth]

    units = {s: [(n + 0.1 * s, n + 0.1 * s, -n) for n in range(4)] for s in range(5)}
    first, again = bootstrap_units(units, stats, seed=3), bootstrap_units(units, stats, seed=3)
    assert first == again and first[0].value == pytest.approx(1.0) and first[0].ci_low == pytest.approx(1.0)
    assert first[1].ci_high < 0
    assert first[2].above_zero
