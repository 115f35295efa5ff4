"""Statistics over independent units: every interval, verdict, equivalence test, sample-size
plan and stability figure of a report comes from here (scipy underneath).

**Units of replication.** Networks that share a base network, a half of the classes or a
data order are not independent observations. The unit is what is drawn independently: for
random halves a split seed and a direction (the half a network is trained on), for a split
that gives the same halves every time a replicate (its split seed) and a direction. A
quantity pooled over layers n or over cells is averaged within each unit first; its interval
is then Student's t over the units, with ``units - 1`` degrees of freedom (a paired
difference where both sides belong to the same unit, Welch's test between two sets of
units otherwise). With fewer than :data:`MIN_UNITS` units there is no interval: the
quantity is *not determined*.

**Verdicts against a reference effect** (:func:`verdict`): *reproduced* when the interval
excludes 0 in the reference's direction; *contradicted* when it excludes the reference's
effect (clearly smaller, or of the other sign); *inconclusive* when it holds both 0 and the
effect; *not determined* without an interval. **Controls** are equivalence tests
(:func:`equivalence`): they hold only when the whole interval lies within a stated margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from scipy import integrate
from scipy import stats as sps

__all__ = [
    "LEVEL",
    "MIN_UNITS",
    "STABLE",
    "Difference",
    "Equivalence",
    "Stability",
    "Verdict",
    "equivalence",
    "over_units",
    "paired",
    "stability",
    "t_quantile",
    "units_for_effect",
    "units_for_equivalence",
    "verdict",
    "welch",
]

#: Units a quantity needs for an interval: two give t = 12.7 (an interval too wide to mean
#: anything), three give t = 4.3.
MIN_UNITS = 3

#: The confidence level of every interval.
LEVEL = 0.95

#: A claim that holds in at least this fraction of bootstrap resamples is "stable".
STABLE = 0.8

Verdict = Literal["reproduced", "contradicted", "inconclusive", "not determined"]
Equivalence = Literal["holds", "not shown", "fails", "not determined"]

T = TypeVar("T")


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` (> 0) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(sps.t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class Difference:
    """A quantity (a mean, or a difference of means) over independent units, with its interval.

    Attributes:
        value: the estimate (a mean over units).
        ci_low, ci_high: its 95% interval; None when not determined (too few units).
        units: independent units behind it (for Welch's test: both groups together).
        networks: trained networks behind it (a description: they are not independent).
        sd: standard deviation of the per-unit values (Welch: pooled over both groups).
        df: degrees of freedom of the interval.
    """

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    units: int = 0
    networks: int = 0
    sd: float | None = None
    df: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the width of the interval, or None when it is not determined."""
        return None if self.ci_high is None else (self.ci_high - self.value)

    @property
    def determined(self) -> bool:
        """Whether there is an interval."""
        return self.ci_low is not None and self.ci_high is not None

    def scaled(self, factor: float) -> Difference:
        """The same quantity in other units (``factor`` > 0 times every number)."""
        if not factor > 0:
            raise ValueError(f"a scale factor must be > 0, got {factor}")

        def s(x: float | None) -> float | None:
            return None if x is None else x * factor

        return Difference(self.value * factor, s(self.ci_low), s(self.ci_high), self.units, self.networks,
                          s(self.sd), self.df)


def over_units(values: Iterable[float], networks: int | None = None, *, level: float = LEVEL,
               min_units: int = MIN_UNITS) -> Difference:
    """The mean of one value per independent unit, with a t-interval over the units.

    Args:
        values: one value per unit (duplicates allowed: a bootstrap resample).
        networks: the networks behind the values (default: one per unit).

    Raises:
        ValueError: no value.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("over_units needs at least one unit")
    k = len(vals)
    mean = math.fsum(vals) / k
    nets = k if networks is None else networks
    if k < 2:
        return Difference(mean, units=k, networks=nets)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (k - 1))
    if k < min_units:
        return Difference(mean, units=k, networks=nets, sd=sd, df=k - 1)
    half = t_quantile(k - 1, level) * sd / math.sqrt(k)
    return Difference(mean, mean - half, mean + half, k, nets, sd, k - 1)


def paired(a: Mapping[Hashable, float], b: Mapping[Hashable, float], networks: int | None = None, *,
           level: float = LEVEL) -> Difference | None:
    """``a - b`` over the units both have, each unit's own difference first (a paired t-test).

    Returns:
        None when no unit has both.
    """
    common = [u for u in a if u in b]
    if not common:
        return None
    return over_units((a[u] - b[u] for u in common), networks, level=level)


def welch(a: Sequence[float], b: Sequence[float], networks: int | None = None, *,
          level: float = LEVEL) -> Difference:
    """``mean(a) - mean(b)`` for two independent sets of units (one value per unit), with
    Welch's t-interval; not determined unless each side has :data:`MIN_UNITS` units.

    Raises:
        ValueError: a side without any unit.
    """
    x, y = over_units(a), over_units(b)
    value = x.value - y.value
    units = len(a) + len(b)
    nets = units if networks is None else networks
    if x.sd is None or y.sd is None or min(len(a), len(b)) < MIN_UNITS:
        return Difference(value, units=units, networks=nets)
    va, vb = x.sd ** 2 / len(a), y.sd ** 2 / len(b)
    se = math.sqrt(va + vb)
    pooled = math.sqrt(((len(a) - 1) * x.sd ** 2 + (len(b) - 1) * y.sd ** 2) / (units - 2))
    if se == 0.0:
        return Difference(value, value, value, units, nets, 0.0, units - 2)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(df, level) * se
    return Difference(value, value - half, value + half, units, nets, pooled, df)


# --------------------------------------------------------------------------- verdicts


def verdict(d: Difference, effect: float) -> Verdict:
    """The four-valued verdict of ``d`` against a reference effect (see the module docstring).

    The reference's sign is its direction; an effect of exactly 0 has no direction to
    reproduce, so it is judged as a two-sided difference from 0."""
    if not d.determined:
        return "not determined"
    lo, hi = d.ci_low, d.ci_high
    assert lo is not None and hi is not None
    if effect >= 0:
        if lo > 0:
            return "reproduced"
        return "contradicted" if hi < effect else "inconclusive"
    if hi < 0:
        return "reproduced"
    return "contradicted" if lo > effect else "inconclusive"


def equivalence(d: Difference, margin: float) -> Equivalence:
    """Whether ``d`` is 0 within ``margin``: ``holds`` when the whole interval lies within
    [-margin, +margin], ``fails`` when it lies wholly outside, ``not shown`` when it is too
    wide to tell, ``not determined`` without an interval."""
    if not d.determined:
        return "not determined"
    lo, hi = d.ci_low, d.ci_high
    assert lo is not None and hi is not None
    if -margin <= lo and hi <= margin:
        return "holds"
    if lo > margin or hi < -margin:
        return "fails"
    return "not shown"


# --------------------------------------------------------------------------- planning


def _power_one_sample(k: int, sd: float, effect: float, level: float) -> float:
    df = k - 1
    t = t_quantile(df, level)
    nc = abs(effect) / sd * math.sqrt(k)
    return float(sps.nct.sf(t, df, nc) + sps.nct.cdf(-t, df, nc))


def _power_welch(k: int, sd: float, effect: float, level: float) -> float:
    df = 2 * k - 2
    t = t_quantile(df, level)
    nc = abs(effect) / (sd * math.sqrt(2 / k))
    return float(sps.nct.sf(t, df, nc) + sps.nct.cdf(-t, df, nc))


def units_for_effect(sd: float | None, effect: float, *, power: float = 0.8, level: float = LEVEL,
                     two_groups: bool = False, max_units: int = 10_000) -> int | None:
    """Units for a ``level`` interval to exclude 0 with probability ``power`` when the true
    effect is ``effect`` and units scatter by ``sd`` (a noncentral t; for ``two_groups``,
    units per group of Welch's comparison).

    Returns:
        At least :data:`MIN_UNITS`; None when ``sd`` is unknown, the effect is 0, or more
        than ``max_units`` would be needed.
    """
    if sd is None or not math.isfinite(sd) or effect == 0:
        return None
    if sd == 0:
        return MIN_UNITS
    fn = _power_welch if two_groups else _power_one_sample
    return _smallest(lambda k: fn(k, sd, effect, level), power, max_units)


def _smallest(power_at: Callable[[int], float], power: float, max_units: int) -> int | None:
    """The smallest number of units (at least :data:`MIN_UNITS`) whose power reaches ``power``
    (power grows with units: doubling, then bisection); None beyond ``max_units``."""
    lo = MIN_UNITS
    if power_at(lo) >= power:
        return lo
    hi = lo
    while power_at(hi) < power:
        if hi >= max_units:
            return None
        lo, hi = hi, min(hi * 2, max_units)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid, hi)
    return hi


def _power_equivalence(k: int, sd: float, margin: float, level: float) -> float:
    """P(the interval lies within +-margin) when the true difference is 0: the mean is
    N(0, sd^2/k) and the unit sd is sd * sqrt(chi2_{k-1} / (k-1)), independent."""
    df = k - 1
    t = t_quantile(df, level)
    scale = sd / math.sqrt(k)

    def given(chi2: float) -> float:
        room = margin - t * scale * math.sqrt(chi2 / df)
        return max(0.0, 2 * float(sps.norm.cdf(room / scale)) - 1) * float(sps.chi2.pdf(chi2, df))

    upper = float(sps.chi2.ppf(1 - 1e-12, df))
    return float(integrate.quad(given, 0.0, upper, limit=200)[0])


def units_for_equivalence(sd: float | None, margin: float, *, power: float = 0.8, level: float = LEVEL,
                          max_units: int = 10_000) -> int | None:
    """Units for the interval of a difference that is truly 0 to lie within ``+-margin``
    with probability ``power``; None when ``sd`` is unknown or more than ``max_units``."""
    if sd is None or not math.isfinite(sd) or margin <= 0:
        return None
    if sd == 0:
        return MIN_UNITS
    return _smallest(lambda k: _power_equivalence(k, sd, margin, level), power, max_units)


# --------------------------------------------------------------------------- stability


@dataclass(frozen=True)
class Stability:
    """How often a claim holds when its units are resampled with replacement.

    Attributes:
        fraction: the share of resamples that make the same claim.
        resamples: how many resamples were drawn.
        seed: the seed of the resampling.
    """

    fraction: float
    resamples: int
    seed: int = 0

    @property
    def stable(self) -> bool:
        """At least :data:`STABLE` of the resamples agree."""
        return self.fraction >= STABLE

    @property
    def label(self) -> str:
        """``stable (94%)`` or ``unstable (61%)``."""
        return f"{'stable' if self.stable else 'unstable'} ({100 * self.fraction:.0f}%)"


def stability(groups: Sequence[Sequence[T]], claim: Callable[[Sequence[Sequence[T]]], Hashable], *,
              resamples: int = 200, seed: int = 0) -> Stability | None:
    """The bootstrap stability of a claim: each group of units (one group, or the two sides
    of a comparison between experiments) is resampled with replacement, ``resamples`` times,
    seeded, and the claim recomputed on each; the share of resamples that make the observed
    claim. None when a group is empty."""
    if not groups or any(len(g) == 0 for g in groups):
        return None
    observed = claim(groups)
    rng = np.random.default_rng(seed)
    same = 0
    for _ in range(resamples):
        drawn = [[g[i] for i in rng.integers(0, len(g), len(g))] for g in groups]
        same += claim(drawn) == observed
    return Stability(same / resamples, resamples, seed)
