"""Ranking statistics: how well a score orders items by a ground truth, with intervals over units.

The statistics of the transferability-estimation literature, in one place:

* :func:`spearman` (rho), :func:`kendall` (tau-b, optionally only within strata) and
  :func:`weighted_tau` (Vigna's weighted tau with hyperbolic weights, ``scipy.stats.weightedtau``:
  the field's headline statistic since LogME, which weighs the top of the ranking most);
* :func:`top1_regret`: how much worse the item a score ranks first is than the best item
  (in the ground truth's own units).

**Intervals over independent units.** Points that share a base network or a split seed are
not independent, so no interval here treats them as if they were. :func:`bootstrap_units`
is a cluster bootstrap: the independent units (a split seed and a direction, as the verdicts
use them) are resampled with replacement, each drawn unit bringing all its points, and the
statistic is recomputed on the pooled points of every resample (seeded); the 95% interval is
the percentile interval of those. Several statistics computed on the same resamples give
their differences paired, which is how an estimator is compared with a baseline. With fewer
than :data:`~transferbench.stats.MIN_UNITS` units there is no interval: not determined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats as sps

from .stats import LEVEL, MIN_UNITS

__all__ = [
    "RESAMPLES",
    "Interval",
    "bootstrap_units",
    "kendall",
    "ranks",
    "spearman",
    "top1_regret",
    "weighted_tau",
]

#: Bootstrap resamples of every interval (seeded: the same run gives the same intervals).
RESAMPLES = 1000

P = TypeVar("P")
K = TypeVar("K", bound=Hashable)


def _rank(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..N as an array, ties sharing the mean of their ranks."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="stable")
    ordered = a[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]] if len(a) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(a)]
    out = np.empty(len(a))
    out[order] = ((starts + ends - 1) / 2 + 1)[np.cumsum(new) - 1]
    return out


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..N, ties sharing the mean of their ranks."""
    return [float(r) for r in _rank(values)]


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x, y = x - x.mean(), y - y.mean()
    sxx, syy = float(x @ x), float(y @ y)
    if sxx <= 1e-12 * len(x) or syy <= 1e-12 * len(y):  # a constant (ranks are whole or half numbers)
        return None
    return max(-1.0, min(1.0, float(x @ y) / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); None with fewer than 3 points or a constant."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    if len(x) < 3:
        return None
    return _pearson(_rank(x), _rank(y))


def kendall(x: Sequence[float], y: Sequence[float], strata: Sequence[object] | None = None) -> float | None:
    """Kendall's tau-b; with ``strata``, only pairs of points in the same stratum count.

    ``(concordant - discordant) / sqrt(pairs untied in x * pairs untied in y)``, pairs tied in
    both left out. None with no pair that is untied in both sequences.
    """
    if len(x) != len(y):
        raise ValueError("kendall needs two sequences of the same length")
    if len(x) < 2:
        return None
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    upper = np.triu(np.ones((len(a), len(a)), dtype=bool), 1)
    if strata is not None:
        codes = np.unique(np.array([hash(s) for s in strata]), return_inverse=True)[1]
        upper &= codes[:, None] == codes[None, :]
    dx, dy = np.sign(a[:, None] - a[None, :])[upper], np.sign(b[:, None] - b[None, :])[upper]
    denom = math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    if denom == 0 or not np.any(dx * dy):
        return None if denom == 0 else 0.0
    return float((dx * dy).sum()) / denom


def weighted_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Weighted Kendall's tau (Vigna 2015) with hyperbolic weights 1/(r+1), as
    ``scipy.stats.weightedtau(x, y)`` computes it by default (the weights follow the
    decreasing ranks of each sequence in turn, averaged): agreement at the top of the
    ranking counts most. None with fewer than 3 points or a constant sequence."""
    if len(x) != len(y):
        raise ValueError("weighted_tau needs two sequences of the same length")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    value = float(sps.weightedtau(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic)
    return value if math.isfinite(value) else None


def top1_regret(scores: Sequence[float], truth: Sequence[float]) -> float | None:
    """``max(truth)`` minus the truth of the item ``scores`` ranks first (the mean truth of
    the items tied first): 0 when the score picks the best item. None with no items."""
    if len(scores) != len(truth):
        raise ValueError("top1_regret needs two sequences of the same length")
    if not scores:
        return None
    top = max(scores)
    picked = [t for s, t in zip(scores, truth) if s == top]
    return max(truth) - math.fsum(picked) / len(picked)


@dataclass(frozen=True)
class Interval:
    """A statistic of pooled points with its cluster-bootstrap interval over units.

    Attributes:
        value: the statistic on every point.
        ci_low, ci_high: the 95% percentile interval over resampled units; None when not
            determined (fewer than :data:`~transferbench.stats.MIN_UNITS` units, or the
            statistic undefined on most resamples).
        units: independent units behind it.
        resamples: bootstrap resamples on which the statistic was defined.
    """

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    units: int = 0
    resamples: int = 0

    @property
    def determined(self) -> bool:
        """Whether there is an interval."""
        return self.ci_low is not None and self.ci_high is not None

    @property
    def above_zero(self) -> bool:
        """The interval lies above 0."""
        return self.ci_low is not None and self.ci_low > 0

    @property
    def below_zero(self) -> bool:
        """The interval lies below 0."""
        return self.ci_high is not None and self.ci_high < 0

    def pair(self) -> tuple[float, float] | None:
        """``(ci_low, ci_high)``, or None when not determined."""
        return (self.ci_low, self.ci_high) if self.ci_low is not None and self.ci_high is not None else None


def bootstrap_units(groups: Mapping[K, Sequence[P]],
                    statistic: Callable[[Sequence[P]], Sequence[float | None]], *,
                    resamples: int = RESAMPLES, seed: int = 0, min_units: int = MIN_UNITS,
                    level: float = LEVEL) -> list[Interval | None]:
    """Statistics of pooled points, each with a cluster-bootstrap interval over units.

    Args:
        groups: unit -> its points (a unit is what is drawn independently).
        statistic: pooled points -> one value per statistic (None where undefined), the same
            whatever the order of the points (a resample is computed once per multiset of
            units). Every statistic sees the same resamples, so a difference of two of them,
            returned as one more value, is a paired comparison.
        resamples: how many resamples of the units to draw (seeded by ``seed``).
        min_units: below this many units no interval is computed.

    Returns:
        One :class:`Interval` per value of ``statistic`` (None where it is undefined on all
        the points).
    """
    keys = [k for k in groups if groups[k]]
    points = [p for k in keys for p in groups[k]]
    observed = list(statistic(points)) if points else []
    if not observed:
        return []
    if len(keys) < min_units:
        return [None if v is None else Interval(v, units=len(keys)) for v in observed]
    rng = np.random.default_rng(seed)
    drawn: list[list[float]] = [[] for _ in observed]
    seen: dict[tuple[int, ...], Sequence[float | None]] = {}  # the statistics are of pooled points: order-free
    for _ in range(resamples):
        picks = tuple(sorted(int(i) for i in rng.integers(0, len(keys), len(keys))))
        if picks not in seen:
            seen[picks] = statistic([p for i in picks for p in groups[keys[i]]])
        for j, v in enumerate(seen[picks]):
            if v is not None and math.isfinite(v):
                drawn[j].append(v)
    tail = (1 - level) / 2 * 100
    out: list[Interval | None] = []
    for v, d in zip(observed, drawn):
        if v is None:
            out.append(None)
        elif len(d) < resamples / 2:  # undefined on most resamples: no interval worth the name
            out.append(Interval(v, units=len(keys), resamples=len(d)))
        else:
            low, high = np.percentile(d, [tail, 100 - tail])
            out.append(Interval(v, float(low), float(high), len(keys), len(d)))
    return out
