"""Estimators judged against retraining: rank agreement with intervals over units, beside the
free baselines and the ceiling that retraining's own seed-to-seed agreement sets.

A run with ``estimators:`` holds, for every experiment, split seed, (source, target) pair
and layer n, each estimator's score (``RunResults.estimates``), and, unless it ran with
``--estimate-only``, the accuracies retraining measured at the same points. Every treatment
is a **ground truth** of its own, named by its protocol (``frozen`` for AnB, ``finetune``
for AnB+, any other protocol, such as ``lp_ft``, the same way), and three comparisons are
made against each:

* ``layers``: estimator on S->T vs the accuracy of each treatment from S to T (AnB, AnB+,
  BnB, ...) across layers and split seeds.
* ``gap``: the estimator on the target's own base minus on the source, ``e(T->T) - e(S->T)``,
  vs the specificity gap ``BnB - AnB`` (the selffer of the same protocol; for a split
  without selffers, the drop ``baseB - AnB``).
* ``same_n``: among transfers at the *same* n (different sources and targets, experiments,
  split seeds), ``e(S->T) - e(T->T)`` vs the accuracy relative to the target's base,
  ``acc / baseT``; Kendall's tau counts only pairs of points that share n, Spearman and the
  weighted tau are the mean over n of the within-n statistic.

**Statistics** (:mod:`transferbench.ranking`): Spearman, Kendall's tau-b and the weighted tau
(the field's headline), each with a 95% cluster-bootstrap interval over the independent
units (a split seed and a direction: the unit of the verdicts), never over points that share
a base network; and, for ``layers``, the top-1 regret (per unit, the accuracy of the best
layer, the one best on average over units, minus that of the layer the estimator ranks first
in the unit; mean and t-interval over units).

**Baselines**, on the same points and resamples: ``depth`` (the rank of n: ``-n`` for
``layers``, ``+n`` for the gap; nothing within n), ``source accuracy`` (``same_n``: the
source's own base accuracy), ``static`` (the static hierarchy: the mean ground truth at the
same n on the run's *other* experiments, where they have that n) and ``random`` (a score
drawn at random: the 95% range of its Spearman). The estimator **beats the strongest
baseline** (the one with the highest Spearman) when the interval of the paired difference
lies above 0, does not when it lies below, and is *not determined* otherwise.

**The ceiling** (``layers`` and ``gap``): how well one unit's retraining ranks the layers of
another (mean Spearman over pairs of distinct units, over the items they share), beside the
estimator's own within-unit Spearman and its fraction of the ceiling, all on the same resamples.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .analysis import Grid, SpecificLayer, Stat, build_grids, specific_layer
from .ranking import Interval, bootstrap_units, kendall, ranks, spearman, weighted_tau
from .results import EstimateRow, ResultRow, RunResults, check_metric
from .stats import Difference, over_units

__all__ = [
    "Agreement",
    "Baseline",
    "Ceiling",
    "CostSummary",
    "GroundTruthAgreement",
    "SpecificComparison",
    "agreements",
    "cost_summary",
    "ground_truth_agreements",
    "kendall",
    "ranks",
    "spearman",
    "specific_layers",
]

#: The unit of replication: (experiment, split seed, direction: the target half).
Unit = tuple[str, int, str]

# --------------------------------------------------------------------------- what an agreement holds


@dataclass(frozen=True)
class Baseline:
    """A free baseline on an estimator's points.

    Attributes:
        name: ``depth``, ``source accuracy``, ``static`` or ``random``.
        spearman: its Spearman with the ground truth (interval over units); for ``random``,
            the median of a random score's Spearman with ``ci_low``/``ci_high`` its 95% range.
        difference: the estimator's Spearman minus the baseline's, paired on the same resampled
            units (for ``random``: the estimator's own Spearman, a random score's being 0).
    """

    name: str
    spearman: Interval | None
    difference: Interval | None


@dataclass(frozen=True)
class Ceiling:
    """Retraining's agreement with itself across units, and the estimator's share of it.

    Attributes:
        seed_to_seed: mean Spearman between the ground truth of two distinct units (interval
            over resampled units).
        within_unit: the estimator's mean Spearman with the ground truth inside each unit.
        fraction: ``within_unit / seed_to_seed`` on the same resamples (None when the ceiling
            is not above 0).
    """

    seed_to_seed: Interval | None
    within_unit: Interval | None
    fraction: Interval | None


@dataclass(frozen=True)
class Agreement:
    """How well one estimator ranked what retraining measured, beside the free baselines.

    Attributes:
        experiment: the experiment, or ``*`` for points pooled over every experiment.
        estimator: the estimator's name.
        reference: what it is compared with: a treatment (``AnB``), a gap (``BnB-AnB``) or,
            for ``same_n``, a protocol (``frozen``: every frozen transfer).
        comparison: ``layers``, ``gap`` or ``same_n`` (see the module's docstring).
        points: (split seed, n) points compared (for ``same_n``: transfers).
        seeds: split seeds among them.
        spearman, kendall: the rank correlations over all points (``same_n``: within n).
        spearman_ci, kendall_ci: their 95% cluster-bootstrap intervals over units, when defined.
        per_group: Spearman within each split seed (within each n for ``same_n``), summarised
            over them (mean with a t-interval); None when no group has 3 points.
        depth_spearman, depth_kendall: the same statistics for the rank of n alone.
        ground_truth: the protocol of the reference treatment(s) (``frozen``, ``finetune``,
            ``lp_ft``, ...): which retraining the estimator is compared with.
        units: independent units behind the intervals.
        weighted_tau: the weighted Kendall tau with its interval.
        regret: ``layers`` only: the top-1 regret per unit (the layer best on average minus
            the estimator's first choice), mean and t-interval over units (the metric's scale).
        baselines: every free baseline that applies.
        beats: ``yes``, ``no`` or ``not determined``: against the strongest baseline, by
            the interval of the paired difference of Spearman.
        strongest: the strongest baseline's name.
        ceiling: retraining's seed-to-seed agreement (``layers``, ``gap``).
    """

    experiment: str
    estimator: str
    reference: str
    comparison: str
    points: int
    seeds: int
    spearman: float | None
    spearman_ci: tuple[float, float] | None
    kendall: float | None
    kendall_ci: tuple[float, float] | None
    per_group: Stat | None
    depth_spearman: float | None
    depth_kendall: float | None
    ground_truth: str = ""
    units: int = 0
    weighted_tau: Interval | None = None
    regret: Difference | None = None
    baselines: tuple[Baseline, ...] = ()
    beats: str = "not determined"
    strongest: str | None = None
    ceiling: Ceiling | None = None

    @property
    def spearman_interval(self) -> Interval | None:
        """Spearman as an :class:`~transferbench.ranking.Interval`."""
        if self.spearman is None:
            return None
        low, high = self.spearman_ci or (None, None)
        return Interval(self.spearman, low, high, self.units)

    def predicts(self) -> bool:
        """The interval of its Spearman lies above 0 (only then may a report say it predicts
        this ground truth)."""
        return self.spearman_ci is not None and self.spearman_ci[0] > 0


@dataclass(frozen=True)
class _Point:
    unit: Unit
    n: int
    estimate: float
    retrained: float
    scores: Mapping[str, float] = field(default_factory=dict)  # baseline name -> its score here

    @property
    def seed(self) -> int:
        return self.unit[1]


class _Data:
    """A run's estimates and accuracies, indexed for the comparisons."""

    def __init__(self, results: RunResults, estimates: Sequence[EstimateRow], metric: str) -> None:
        self.est: dict[str, dict[tuple[str, int, str, str, int], float]] = defaultdict(dict)
        for e in estimates:
            if e.value is not None:
                self.est[e.estimator][(e.experiment, e.split_seed, e.source, e.target, e.n)] = e.value
        self.acc: dict[tuple[str, int, str, int], float] = {}
        self.base: dict[tuple[str, int, str], float] = {}
        self.treatments: dict[str, dict[str, tuple[str, str, str | None]]] = defaultdict(dict)
        for r in results.rows:
            value = r.value(metric)
            if r.kind == "base" and value is not None and r.target:
                self.base[(r.experiment, r.split_seed, r.target)] = value
            elif r.kind == "transfer" and r.source is not None and r.target in ("A", "B"):
                self.treatments[r.experiment].setdefault(r.treatment, (r.source, r.target, r.protocol))
                if value is not None:
                    self.acc[(r.experiment, r.split_seed, r.treatment, r.n)] = value
        self.experiments = list(dict.fromkeys([*results.experiments, *(e.experiment for e in estimates)]))

    def estimate(self, estimator: str, exp: str, seed: int, source: str, target: str, n: int) -> float | None:
        return self.est[estimator].get((exp, seed, source, target, n))

    def keys(self, estimator: str, exp: str, source: str, target: str) -> list[tuple[int, int]]:
        """(seed, n) of every score of ``estimator`` on ``source -> target`` in ``exp``."""
        return sorted((k[1], k[4]) for k in self.est[estimator] if k[0] == exp and k[2:4] == (source, target))

    def protocol(self, exp: str, treatment: str) -> str:
        return str(self.treatments[exp][treatment][2] or "")

    def static(self, exp: str, treatment: str, n: int) -> float | None:
        """The static hierarchy at n: the mean accuracy of the same kind of transfer (same
        protocol, source != target or not alike) on the run's other experiments."""
        src, tgt, proto = self.treatments[exp][treatment]
        values = [v for (e, _, t, m), v in self.acc.items()
                  if e != exp and m == n and self.treatments[e][t][2] == proto
                  and (self.treatments[e][t][0] == self.treatments[e][t][1]) == (src == tgt)]
        return math.fsum(values) / len(values) if values else None

    def static_gap(self, exp: str, treatment: str, n: int) -> float | None:
        """The static hierarchy of the gap at n: its mean on the run's other experiments."""
        proto = self.treatments[exp][treatment][2]
        values = []
        for e in self.experiments:
            if e == exp:
                continue
            for t, (s, g, p) in self.treatments.get(e, {}).items():
                if s == g or p != proto:
                    continue
                for (ee, seed, tt, m), acc in self.acc.items():
                    if (ee, tt, m) == (e, t, n):
                        ref = self._gap_reference(e, seed, t, n)
                        if ref is not None:
                            values.append(ref - acc)
        return math.fsum(values) / len(values) if values else None

    def selffer(self, exp: str, treatment: str) -> str | None:
        src, tgt, proto = self.treatments[exp][treatment]
        return next((t for t, (s, g, p) in self.treatments[exp].items() if s == g == tgt and p == proto), None)

    def _gap_reference(self, exp: str, seed: int, treatment: str, n: int) -> float | None:
        selffer = self.selffer(exp, treatment)
        if selffer:
            return self.acc.get((exp, seed, selffer, n))
        return self.base.get((exp, seed, self.treatments[exp][treatment][1]))


# --------------------------------------------------------------------------- the statistics of one comparison


def _within(points: Sequence[_Point], key: Callable[[_Point], Hashable],
            stat: Callable[[list[float], list[float]], float | None], score: Callable[[_Point], float]
            ) -> float | None:
    """The mean over groups (by ``key``) of ``stat(score, retrained)`` inside each group."""
    groups: dict[Hashable, list[_Point]] = defaultdict(list)
    for p in points:
        groups[key(p)].append(p)
    values = [v for g in groups.values() if (v := stat([score(q) for q in g], [q.retrained for q in g])) is not None]
    return math.fsum(values) / len(values) if values else None


def _statistics(points: Sequence[_Point], names: Sequence[str], stratified: bool) -> list[float | None]:
    """[rho, tau, weighted tau, then per baseline: rho, estimator rho - baseline rho]."""
    if stratified:  # within n only: depth and anything constant within n knows nothing here
        def rho_of(score: Callable[[_Point], float]) -> float | None:
            return _within(points, lambda p: p.n, spearman, score)

        tau = kendall([p.estimate for p in points], [p.retrained for p in points], strata=[p.n for p in points])
        wtau = _within(points, lambda p: p.n, weighted_tau, lambda p: p.estimate)
    else:
        def rho_of(score: Callable[[_Point], float]) -> float | None:
            return spearman([score(p) for p in points], [p.retrained for p in points])

        x, y = [p.estimate for p in points], [p.retrained for p in points]
        tau, wtau = kendall(x, y), weighted_tau(x, y)
    rho = rho_of(lambda p: p.estimate)
    out: list[float | None] = [rho, tau, wtau]
    for name in names:
        b = rho_of(lambda p, name=name: p.scores[name])  # type: ignore[misc]
        out += [b, None if rho is None or b is None else rho - b]
    return out


def _random_range(points: Sequence[_Point], stratified: bool, draws: int = 1000, seed: int = 0
                  ) -> Interval | None:
    """A random score's Spearman on these points (within n, averaged, for ``same_n``): median
    and 95% range over ``draws`` scores drawn at random. A random score is independent of
    everything, so this null needs no clustering."""
    rng = np.random.default_rng(seed)
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for p in points:
        groups[p.n if stratified else 0].append(p.retrained)
    total, count = np.zeros(draws), 0
    for truth in groups.values():
        ry = np.asarray(ranks(truth)) - (len(truth) + 1) / 2
        if len(truth) < 3 or not np.any(ry):
            continue
        rx = np.argsort(rng.random((draws, len(truth))), axis=1).argsort(axis=1) - (len(truth) - 1) / 2
        total += (rx @ ry) / np.sqrt((rx * rx).sum(axis=1) * float(ry @ ry))
        count += 1
    if not count:
        return None
    low, mid, high = np.percentile(total / count, [2.5, 50, 97.5])
    return Interval(float(mid), float(low), float(high))


def _regret(points: Sequence[_Point]) -> Difference | None:
    """Top-1 regret per unit: the accuracy of the best layer minus that of the layer the
    estimator ranks first in that unit; mean and t-interval over units. The best layer is the
    one with the highest mean over units (as :mod:`transferbench.regret` chooses regimes), not
    each unit's own maximum, which noise alone biases upward; a unit's regret can be negative."""
    by_unit: dict[Unit, list[_Point]] = defaultdict(list)
    by_n: dict[int, list[float]] = defaultdict(list)
    for p in points:
        by_unit[p.unit].append(p)
        by_n[p.n].append(p.retrained)
    everywhere = [n for n, v in by_n.items() if len(v) == len(by_unit)]  # a layer every unit has
    if not everywhere:
        return None
    best = max(everywhere, key=lambda n: math.fsum(by_n[n]))
    values = []
    for g in by_unit.values():
        truth = {p.n: p.retrained for p in g}
        top = max(p.estimate for p in g)
        picked = [p.retrained for p in g if p.estimate == top]  # tied first: their mean
        if len(g) > 1:
            values.append(truth[best] - math.fsum(picked) / len(picked))
    return over_units(values, len(points)) if values else None


def _ceiling_statistics(points: Sequence[_Point], size: Mapping[Unit, int]) -> list[float | None]:
    """[seed-to-seed Spearman of the ground truth, the estimator's within-unit Spearman, their
    ratio] on a (re)sample of units; a unit drawn k times counts k times (its pairs with itself
    are not pairs of distinct units)."""
    by_unit: dict[Unit, list[_Point]] = defaultdict(list)
    for p in points:
        by_unit[p.unit].append(p)
    truth = {u: {p.n: p.retrained for p in g[: size[u]]} for u, g in by_unit.items()}
    times = {u: len(g) // size[u] for u, g in by_unit.items()}
    num = den = 0.0
    for u, v in combinations(truth, 2):
        shared = sorted(set(truth[u]) & set(truth[v]))
        rho = spearman([truth[u][n] for n in shared], [truth[v][n] for n in shared]) if len(shared) >= 3 else None
        if rho is not None:
            num, den = num + times[u] * times[v] * rho, den + times[u] * times[v]
    ceiling = num / den if den else None
    wnum = wden = 0.0
    for u, g in by_unit.items():
        own = g[: size[u]]
        rho = spearman([p.estimate for p in own], [p.retrained for p in own])
        if rho is not None:
            wnum, wden = wnum + times[u] * rho, wden + times[u]
    within = wnum / wden if wden else None
    ratio = within / ceiling if within is not None and ceiling is not None and ceiling > 0 else None
    return [ceiling, within, ratio]


def _ceiling(points: Sequence[_Point], seed: int) -> Ceiling | None:
    groups: dict[Unit, list[_Point]] = defaultdict(list)
    for p in points:
        groups[p.unit].append(p)
    size = {u: len(g) for u, g in groups.items()}
    found = bootstrap_units(groups, lambda pts: _ceiling_statistics(pts, size), seed=seed)
    if not found or found[0] is None:
        return None
    return Ceiling(found[0], found[1], found[2])


def _verdict(difference: Interval | None) -> str:
    if difference is None or not difference.determined:
        return "not determined"
    return "yes" if difference.above_zero else ("no" if difference.below_zero else "not determined")


def _agreement(exp: str, est: str, ref: str, comparison: str, ground_truth: str, points: list[_Point],
               depth_sign: float | None, seed: int = 0) -> Agreement:
    """Every statistic of one comparison: the estimator, its baselines, its ceiling."""
    stratified = comparison == "same_n"
    names = sorted({k for p in points for k in p.scores if all(k in q.scores for q in points)})
    groups: dict[Unit, list[_Point]] = defaultdict(list)
    for p in points:
        groups[p.unit].append(p)
    found = bootstrap_units(groups, lambda pts: _statistics(pts, names, stratified), seed=seed)
    rho, tau, wtau = found[0], found[1], found[2]
    baselines = [Baseline(name, found[3 + 2 * i], found[4 + 2 * i]) for i, name in enumerate(names)]
    random = _random_range(points, stratified, seed=seed)
    if random is not None:
        baselines.append(Baseline("random", random, rho))
    strongest = max((b for b in baselines if b.spearman is not None),
                    key=lambda b: b.spearman.value if b.spearman else -2.0, default=None)
    y = [p.retrained for p in points]
    by_group: dict[Hashable, list[_Point]] = defaultdict(list)
    for p in points:
        by_group[p.n if stratified else p.seed].append(p)
    per_group = [r for g in by_group.values()
                 if (r := spearman([p.estimate for p in g], [p.retrained for p in g])) is not None]
    depth_rho: float | None = 0.0
    depth_tau: float | None = 0.0
    if depth_sign is not None:
        depth = [depth_sign * p.n for p in points]
        depth_rho, depth_tau = spearman(depth, y), kendall(depth, y)
    return Agreement(
        exp, est, ref, comparison, len(points), len({p.seed for p in points}),
        rho.value if rho else None, rho.pair() if rho else None,
        tau.value if tau else None, tau.pair() if tau else None,
        Stat.of(per_group) if per_group else None, depth_rho, depth_tau,
        ground_truth=ground_truth, units=len(groups), weighted_tau=wtau,
        regret=_regret(points) if comparison == "layers" else None, baselines=tuple(baselines),
        beats=_verdict(strongest.difference) if strongest else "not determined",
        strongest=strongest.name if strongest else None,
        ceiling=None if stratified else _ceiling(points, seed),
    )


# --------------------------------------------------------------------------- comparisons


def _layer_points(data: _Data, est: str, exp: str, treatment: str) -> list[_Point]:
    src, tgt, _ = data.treatments[exp][treatment]
    points = []
    for seed, n in data.keys(est, exp, src, tgt):
        acc = data.acc.get((exp, seed, treatment, n))
        if acc is not None:
            scores = {"depth": -float(n)}
            static = data.static(exp, treatment, n)
            if static is not None:
                scores["static"] = static
            points.append(_Point((exp, seed, tgt), n, data.est[est][(exp, seed, src, tgt, n)], acc, scores))
    return points


def _gap_points(data: _Data, est: str, exp: str, treatment: str) -> tuple[str, list[_Point]]:
    """``e(T->T) - e(S->T)`` against ``selffer - treatment`` (or ``baseT - treatment``)."""
    src, tgt, proto = data.treatments[exp][treatment]
    if src == tgt:  # a selffer has no gap of its own
        return "", []
    selffer = data.selffer(exp, treatment)
    points = []
    for seed, n in data.keys(est, exp, src, tgt):
        own, acc = data.estimate(est, exp, seed, tgt, tgt, n), data.acc.get((exp, seed, treatment, n))
        ref = data.acc.get((exp, seed, selffer, n)) if selffer else data.base.get((exp, seed, tgt))
        if own is not None and acc is not None and ref is not None:
            scores = {"depth": float(n)}
            static = data.static_gap(exp, treatment, n)
            if static is not None:
                scores["static"] = static
            points.append(_Point((exp, seed, tgt), n, own - data.est[est][(exp, seed, src, tgt, n)], ref - acc,
                                 scores))
    return (f"{selffer}-{treatment}" if selffer else f"base{tgt}-{treatment}"), points


def _same_n_points(data: _Data, est: str, experiments: Sequence[str], protocol: str | None) -> list[_Point]:
    """Every transfer (source != target) of ``protocol``: ``e(S->T) - e(T->T)`` against ``acc / baseT``."""
    points = []
    for exp in experiments:
        for t, (src, tgt, proto) in data.treatments[exp].items():
            if src == tgt or proto != protocol:
                continue
            for seed, n in data.keys(est, exp, src, tgt):
                own, acc = data.estimate(est, exp, seed, tgt, tgt, n), data.acc.get((exp, seed, t, n))
                base = data.base.get((exp, seed, tgt))
                if own is not None and acc is not None and base:
                    source_acc = data.base.get((exp, seed, src))
                    scores = {"source accuracy": source_acc} if source_acc is not None else {}
                    points.append(_Point((exp, seed, tgt), n, data.est[est][(exp, seed, src, tgt, n)] - own,
                                         acc / base, scores))
    return points


def agreements(results: RunResults, estimates: Sequence[EstimateRow], metric: str = "top1") -> list[Agreement]:
    """Every comparison of every estimator with retraining that the run can make.

    Returns:
        ``layers`` and ``gap`` rows per experiment and treatment, ``same_n`` rows per
        experiment (and over all experiments, as ``*``) and protocol; empty without
        retrained networks (an ``--estimate-only`` run).
    """
    check_metric(metric)
    data = _Data(results, estimates, metric)
    out: list[Agreement] = []
    for est in sorted(data.est, key=lambda e: [x.estimator for x in estimates].index(e)):
        for exp in data.experiments:
            for t in data.treatments.get(exp, {}):
                truth = data.protocol(exp, t)
                points = _layer_points(data, est, exp, t)
                if points:
                    out.append(_agreement(exp, est, t, "layers", truth, points, -1.0))
                ref, points = _gap_points(data, est, exp, t)
                if points:
                    out.append(_agreement(exp, est, ref, "gap", truth, points, 1.0))
            out += _same_n_rows(data, est, [exp], exp)
        if len(data.experiments) > 1:
            out += _same_n_rows(data, est, data.experiments, "*")
    return out


def _same_n_rows(data: _Data, est: str, experiments: Sequence[str], label: str) -> list[Agreement]:
    protocols = dict.fromkeys(p for exp in experiments for (s, g, p) in data.treatments.get(exp, {}).values() if s != g)
    rows = []
    for proto in protocols:
        points = _same_n_points(data, est, experiments, proto)
        by_n: dict[int, int] = defaultdict(int)
        for p in points:
            by_n[p.n] += 1
        if any(c > 1 for c in by_n.values()):
            rows.append(_agreement(label, est, str(proto), "same_n", str(proto), points, None))
    return rows


# --------------------------------------------------------------------------- ground truths against each other


@dataclass(frozen=True)
class GroundTruthAgreement:
    """How two ground truths of one (source, target) pair rank the same (split seed, n) points.

    Attributes:
        experiment: the experiment.
        first, second: the two treatments (``AnB``, ``AnB+``), of different protocols.
        spearman, weighted_tau: their agreement, with intervals over units.
        points: (split seed, n) points both have.
    """

    experiment: str
    first: str
    second: str
    spearman: Interval | None
    weighted_tau: Interval | None
    points: int


def ground_truth_agreements(results: RunResults, metric: str = "top1") -> list[GroundTruthAgreement]:
    """For every experiment, every two treatments that transfer along the same (source,
    target) pair under different protocols: how well one ranks the points of the other."""
    check_metric(metric)
    data = _Data(results, (), metric)
    out = []
    for exp in data.experiments:
        treatments = data.treatments.get(exp, {})
        for a, b in combinations(treatments, 2):
            (sa, ta, pa), (sb, tb, pb) = treatments[a], treatments[b]
            if (sa, ta) != (sb, tb) or pa == pb:
                continue
            groups: dict[Unit, list[tuple[float, float]]] = defaultdict(list)
            for (e, seed, t, n), value in data.acc.items():
                other = data.acc.get((exp, seed, b, n))
                if e == exp and t == a and other is not None:
                    groups[(exp, seed, ta)].append((value, other))
            if not groups:
                continue
            found = bootstrap_units(groups, lambda pts: [spearman([p[0] for p in pts], [p[1] for p in pts]),
                                                         weighted_tau([p[0] for p in pts], [p[1] for p in pts])])
            if found:
                out.append(GroundTruthAgreement(exp, a, b, found[0], found[1], sum(len(g) for g in groups.values())))
    return out


# --------------------------------------------------------------------------- where features turn specific


@dataclass(frozen=True)
class SpecificComparison:
    """Where features turn specific by retraining (``BnB - AnB``, see
    :func:`~transferbench.analysis.specific_layer`) and by one estimator (``e(B->B) - e(A->B)``,
    the same rule: the first n whose interval over units lies above 0)."""

    experiment: str
    estimator: str
    retraining: SpecificLayer | None
    estimate: SpecificLayer | None


def _estimator_grid(grid: Grid, rows: Sequence[EstimateRow]) -> Grid | None:
    """The estimator's scores arranged as a grid: own base (T->T) as BnB, transfers as AnB."""
    values: dict[tuple[str, int], dict[str, tuple[float, tuple[str, int, str]]]] = defaultdict(dict)
    for r in rows:
        if r.value is None or not (grid.pooled or r.target == "B"):
            continue
        unit = (r.experiment, r.split_seed, r.target)  # the network's own unit: its split seed and direction
        values[("BnB" if r.source == r.target else "AnB", r.n)][r.job_id] = (r.value, unit)
    if not values:
        return None
    est = Grid(grid.experiment, grid.split, grid.metric, grid.pooled, num_layers=grid.num_layers)
    est.cells = {key: Stat.of([v for v, _ in vs.values()], [u for _, u in vs.values()]) for key, vs in values.items()}
    est.treatments = ["BnB", "AnB"]
    return est


def specific_layers(results: RunResults, estimates: Sequence[EstimateRow], metric: str = "top1"
                    ) -> list[SpecificComparison]:
    """For every experiment with estimates: the specific layer by retraining and by each estimator."""
    out = []
    for grid in build_grids(results, metric):
        mine = [e for e in estimates if e.experiment == grid.experiment]
        for name in dict.fromkeys(e.estimator for e in mine):
            est_grid = _estimator_grid(grid, [e for e in mine if e.estimator == name])
            found = specific_layer(est_grid) if est_grid is not None else None
            out.append(SpecificComparison(grid.experiment, name, specific_layer(grid), found))
    return out


# --------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class CostSummary:
    """Seconds the estimators took against the seconds of the retraining they stand in for.

    Attributes:
        estimator_s: estimator -> summed wall time of its jobs.
        estimator_jobs: estimator -> jobs that finished.
        retraining_s: summed training time of the transferred networks (frozen and
            fine-tuned; a network several cells share counts once).
        finetune_s: the part of ``retraining_s`` spent on fine-tuned networks, which no
            frozen-feature cache makes cheap.
        transfer_networks: how many transferred networks that is.
        base_s: training time of the base networks (needed by both).
    """

    estimator_s: dict[str, float]
    estimator_jobs: dict[str, int]
    retraining_s: float
    finetune_s: float
    transfer_networks: int
    base_s: float

    @property
    def total_estimator_s(self) -> float:
        """Seconds of every estimator job together."""
        return math.fsum(self.estimator_s.values())

    def ratio(self, estimator: str | None = None) -> float | None:
        """Retraining seconds per estimator second (all estimators together by default)."""
        seconds = self.total_estimator_s if estimator is None else self.estimator_s.get(estimator, 0.0)
        return self.retraining_s / seconds if seconds > 0 and self.retraining_s > 0 else None


def _distinct(rows: Sequence[ResultRow], keep: Callable[[ResultRow], bool]) -> dict[str, float]:
    return {r.job_id: r.train_time_s or 0.0 for r in rows if r.status == "ok" and keep(r)}


def cost_summary(results: RunResults, estimates: Sequence[EstimateRow]) -> CostSummary:
    """What the estimators cost beside the retraining of the same run."""
    seconds: dict[str, dict[str, float]] = defaultdict(dict)
    for e in estimates:
        if e.status == "ok":
            seconds[e.estimator][e.job_id] = e.seconds or 0.0
    transfer = _distinct(results.rows, lambda r: r.kind == "transfer" and r.source is not None)
    finetune = _distinct(results.rows, lambda r: r.kind == "transfer" and r.source is not None
                         and (r.protocol == "finetune" or r.treatment.endswith("+")))
    return CostSummary(
        estimator_s={k: math.fsum(v.values()) for k, v in seconds.items()},
        estimator_jobs={k: len(v) for k, v in seconds.items()},
        retraining_s=math.fsum(transfer.values()), finetune_s=math.fsum(finetune.values()),
        transfer_networks=len(transfer), base_s=math.fsum(_distinct(results.rows, lambda r: r.kind == "base").values()),
    )
