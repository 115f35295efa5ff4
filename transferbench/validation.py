"""Estimators judged against retraining: rank agreement, beside what depth alone would score.

A run with ``estimators:`` holds, for every experiment, split seed, (source, target) pair
and layer n, each estimator's score (``RunResults.estimates``), and, unless it ran with
``--estimate-only``, the accuracies retraining measured at the same points. On a curve that
falls steadily with n anything that trends with depth ranks the layers well, so every
agreement here is shown beside the **depth-only baseline** (the rank of n itself) on the
same points, and two comparisons test what depth cannot know:

* ``layers``: estimator on S->T vs the accuracy of each treatment from S to T (AnB, AnB+,
  BnB, ...) across layers and split seeds. Depth baseline: ``-n``.
* ``gap``: the estimator on the target's own base minus on the source, ``e(T->T) - e(S->T)``,
  vs the specificity gap ``BnB - AnB`` (the selffer of the same protocol; for a split
  without selffers, the drop ``baseB - AnB``). Depth baseline: ``+n``.
* ``same_n``: among transfers at the *same* n (different sources and targets, experiments,
  split seeds), ``e(S->T) - e(T->T)`` vs the accuracy relative to the target's base,
  ``acc / baseT``; Kendall's tau counts only pairs of points that share n, Spearman is the
  mean over n of the within-n correlation. Depth knows nothing here: its baseline is 0.

Intervals: 95%, Fisher's z with the standard errors of Fieller, Hartley and Pearson (1957)
for the pooled correlations (``sqrt(1.06 / (N - 3))`` for Spearman, ``sqrt(0.437 / (N - 4))``
for Kendall); and a t-interval over split seeds (over n for ``same_n``) of the per-seed
Spearman. Points within a seed are not independent, so read the intervals as a guide.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .analysis import Grid, SpecificLayer, Stat, build_grids, specific_layer
from .results import EstimateRow, ResultRow, RunResults, check_metric

__all__ = [
    "Agreement",
    "CostSummary",
    "SpecificComparison",
    "agreements",
    "cost_summary",
    "fisher_interval",
    "kendall",
    "ranks",
    "spearman",
    "specific_layers",
]

# --------------------------------------------------------------------------- rank statistics


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..N, ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); None with fewer than 3 points or a constant."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    return None if len(x) < 3 else _pearson(ranks(x), ranks(y))


def kendall(x: Sequence[float], y: Sequence[float], strata: Sequence[object] | None = None) -> float | None:
    """Kendall's tau-b; with ``strata``, only pairs of points in the same stratum count.

    None with no pair that is untied in both sequences.
    """
    if len(x) != len(y):
        raise ValueError("kendall needs two sequences of the same length")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if strata is not None and strata[i] != strata[j]:
                continue
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + tied_x) * (concordant + discordant + tied_y))
    return None if denom == 0 else (concordant - discordant) / denom


def fisher_interval(r: float | None, points: int, kind: str = "spearman") -> tuple[float, float] | None:
    """95% interval of a rank correlation by Fisher's z (Fieller, Hartley and Pearson 1957).

    None when ``r`` is None or there are too few points (4 for Spearman, 5 for Kendall).
    """
    factor, lost = {"spearman": (1.06, 3), "kendall": (0.437, 4)}[kind]
    if r is None or points <= lost:
        return None
    z = math.atanh(max(-0.999999, min(0.999999, r)))
    half = 1.96 * math.sqrt(factor / (points - lost))
    return math.tanh(z - half), math.tanh(z + half)


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Agreement:
    """How well one estimator ranked what retraining measured, beside the depth-only baseline.

    Attributes:
        experiment: the experiment, or ``*`` for points pooled over every experiment.
        estimator: the estimator's name.
        reference: what it is compared with: a treatment (``AnB``), a gap (``BnB-AnB``) or,
            for ``same_n``, a protocol (``frozen``: every frozen transfer).
        comparison: ``layers``, ``gap`` or ``same_n`` (see the module's docstring).
        points: (split seed, n) points compared (for ``same_n``: transfers).
        seeds: split seeds among them.
        spearman, kendall: the rank correlations over all points (``same_n``: within n).
        spearman_ci, kendall_ci: their 95% intervals (Fisher's z), when defined.
        per_group: Spearman within each split seed (within each n for ``same_n``), summarised
            over them (mean with a t-interval); None when no group has 3 points.
        depth_spearman, depth_kendall: the same statistics for the rank of n alone.
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


@dataclass(frozen=True)
class _Point:
    seed: int
    n: int
    estimate: float
    retrained: float


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
            elif r.kind == "transfer" and r.source in ("A", "B", "X") and r.target in ("A", "B"):
                self.treatments[r.experiment].setdefault(r.treatment, (r.source, r.target, r.protocol))
                if value is not None:
                    self.acc[(r.experiment, r.split_seed, r.treatment, r.n)] = value
        self.experiments = list(dict.fromkeys([*results.experiments, *(e.experiment for e in estimates)]))

    def estimate(self, estimator: str, exp: str, seed: int, source: str, target: str, n: int) -> float | None:
        return self.est[estimator].get((exp, seed, source, target, n))

    def keys(self, estimator: str, exp: str, source: str, target: str) -> list[tuple[int, int]]:
        """(seed, n) of every score of ``estimator`` on ``source -> target`` in ``exp``."""
        return sorted((k[1], k[4]) for k in self.est[estimator] if k[0] == exp and k[2:4] == (source, target))


def _pooled(exp: str, est: str, ref: str, comparison: str, points: list[_Point], depth_sign: float) -> Agreement:
    x, y = [p.estimate for p in points], [p.retrained for p in points]
    depth = [depth_sign * p.n for p in points]
    rho, tau = spearman(x, y), kendall(x, y)
    by_seed: dict[int, list[_Point]] = defaultdict(list)
    for p in points:
        by_seed[p.seed].append(p)
    per_seed = [r for g in by_seed.values()
                if (r := spearman([p.estimate for p in g], [p.retrained for p in g])) is not None]
    return Agreement(exp, est, ref, comparison, len(points), len(by_seed), rho, fisher_interval(rho, len(points)),
                     tau, fisher_interval(tau, len(points), "kendall"), Stat.of(per_seed) if per_seed else None,
                     spearman(depth, y), kendall(depth, y))


def _stratified(exp: str, est: str, ref: str, points: list[_Point]) -> Agreement | None:
    by_n: dict[int, list[_Point]] = defaultdict(list)
    for p in points:
        by_n[p.n].append(p)
    if not any(len(g) > 1 for g in by_n.values()):
        return None
    x, y = [p.estimate for p in points], [p.retrained for p in points]
    tau = kendall(x, y, strata=[p.n for p in points])
    per_n = [r for g in by_n.values() if (r := spearman([p.estimate for p in g], [p.retrained for p in g])) is not None]
    stat = Stat.of(per_n) if per_n else None
    ci = None
    if stat is not None and stat.ci_low is not None and stat.ci_high is not None:
        ci = (max(-1.0, stat.ci_low), min(1.0, stat.ci_high))  # a correlation's interval stays in [-1, 1]
    return Agreement(exp, est, ref, "same_n", len(points), len({p.seed for p in points}),
                     stat.mean if stat else None, ci, tau, None, stat, 0.0, 0.0)


def _layer_points(data: _Data, est: str, exp: str, treatment: str) -> list[_Point]:
    src, tgt, _ = data.treatments[exp][treatment]
    points = []
    for seed, n in data.keys(est, exp, src, tgt):
        acc = data.acc.get((exp, seed, treatment, n))
        if acc is not None:
            points.append(_Point(seed, n, data.est[est][(exp, seed, src, tgt, n)], acc))
    return points


def _gap_points(data: _Data, est: str, exp: str, treatment: str) -> tuple[str, list[_Point]]:
    """``e(T->T) - e(S->T)`` against ``selffer - treatment`` (or ``baseT - treatment``)."""
    src, tgt, proto = data.treatments[exp][treatment]
    if src == tgt:  # a selffer has no gap of its own
        return "", []
    selffer = next((t for t, (s, g, p) in data.treatments[exp].items() if s == g == tgt and p == proto), None)
    points = []
    for seed, n in data.keys(est, exp, src, tgt):
        own, acc = data.estimate(est, exp, seed, tgt, tgt, n), data.acc.get((exp, seed, treatment, n))
        ref = data.acc.get((exp, seed, selffer, n)) if selffer else data.base.get((exp, seed, tgt))
        if own is not None and acc is not None and ref is not None:
            points.append(_Point(seed, n, own - data.est[est][(exp, seed, src, tgt, n)], ref - acc))
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
                    points.append(_Point(seed, n, data.est[est][(exp, seed, src, tgt, n)] - own, acc / base))
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
                points = _layer_points(data, est, exp, t)
                if points:
                    out.append(_pooled(exp, est, t, "layers", points, -1.0))
                ref, points = _gap_points(data, est, exp, t)
                if points:
                    out.append(_pooled(exp, est, ref, "gap", points, 1.0))
            out += _same_n_rows(data, est, [exp], exp)
        if len(data.experiments) > 1:
            out += _same_n_rows(data, est, data.experiments, "*")
    return out


def _same_n_rows(data: _Data, est: str, experiments: Sequence[str], label: str) -> list[Agreement]:
    protocols = dict.fromkeys(p for exp in experiments for (s, g, p) in data.treatments.get(exp, {}).values() if s != g)
    rows = []
    for proto in protocols:
        agreement = _stratified(label, est, str(proto), _same_n_points(data, est, experiments, proto))
        if agreement is not None:
            rows.append(agreement)
    return rows


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
