"""The paper's metrics, computed from tidy result rows.

The unit of analysis is a :class:`Grid`: one experiment, one accuracy metric, and for each
(treatment, n) the accuracies of every network that fills that cell (one per split seed, and
one per direction when the halves are pooled). Everything else derives from it:

* co-adaptation drop ``baseB - BnB`` and specificity drop ``BnB - AnB`` (Figure 2),
* fine-tuning boosts ``AnB+ - baseB`` and ``AnB+ - BnB+`` and the paper's Table 1,
* drop from base ``base - T`` and relative drop ``(base - T) / base`` for any treatment
  (Figure 3: dissimilar split, random weights), generality ``AnB / baseB``,
* the first layer whose features are specific (:func:`specific_layer`).

Features transferred from a weights file (``XnB``, ``XnB+``: docs/your-data.md) stand where
the paper's ``AnB`` and ``AnB+`` do (:func:`transfer_source`): specificity ``BnB - XnB``,
boost ``XnB+ - baseB``.

Pooling (the paper's symmetry argument): with exchangeable halves, ``AnA`` measures the same
thing as ``BnB``, ``BnA`` the same as ``AnB`` and ``baseA`` the same as ``baseB``, so the
paper pooled them (its BnB column is the mean of 4 AnA networks, its AnB column 8 networks).
``pool=None`` (the default) pools an experiment when its split says its halves are
exchangeable (``TaskSplit.exchangeable``: random halves) and they have the same number of
classes, and keeps the directions apart otherwise (man-made 551 / natural 449, or two
superclasses of equal size).
Pass ``pool=True`` or ``pool=False`` to decide yourself.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .convergence import Curve, steps_to_fraction
from .results import OOD_METRIC, ResultRow, RunResults, check_metric
from .stats import Difference, Stability, over_units, paired, stability, welch

__all__ = [
    "CANONICAL",
    "Unit",
    "POOL",
    "Difference",
    "Grid",
    "LayerMetrics",
    "SpecificLayer",
    "Stat",
    "Table1Row",
    "build_grids",
    "diff",
    "drops",
    "layer_metrics",
    "specific_layer",
    "table1",
    "table1_ranges",
    "transfer_source",
]

#: The main grid's columns, in the paper's order (other treatments follow in plan order).
CANONICAL: tuple[str, ...] = ("baseB", "BnB", "BnB+", "AnB", "AnB+")

#: Mirror-image treatments merged into the canonical ones when pooling.
POOL: dict[str, str] = {"baseA": "baseB", "AnA": "BnB", "AnA+": "BnB+", "BnA": "AnB", "BnA+": "AnB+",
                        "XnA": "XnB", "XnA+": "XnB+"}

_PAPER_NAME = re.compile(r"^(?P<source>[ABX])n(?P<target>[AB])\+?$")

# --------------------------------------------------------------------------- statistics

#: A unit of replication: (experiment, split seed, direction). The direction is the half the
#: network is trained on (``A``, ``B``, ``all``): with random halves, each split seed gives
#: two independent units (A->B and B->A), as the paper's pooling of AnB with BnA assumes.
Unit = tuple[str, int, str]


@dataclass(frozen=True)
class Stat:
    """The accuracies of the networks in one cell, and their means per unit.

    Attributes:
        values: one accuracy per network.
        mean: the mean over units (each unit's networks averaged first; with one network
            per unit, as a grid has, the mean over networks).
        std: sample standard deviation over networks (ddof=1), a description; None with a
            single network.
        ci_low, ci_high: 95% t-interval of the mean over units; None with fewer than
            :data:`~transferbench.stats.MIN_UNITS` units.
        by_unit: unit -> the mean of that unit's networks.
    """

    values: tuple[float, ...]
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    by_unit: Mapping[Hashable, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def count(self) -> int:
        """Number of networks."""
        return len(self.values)

    @property
    def units(self) -> int:
        """Number of independent units."""
        return len(self.by_unit)

    @classmethod
    def of(cls, values: Iterable[float], units: Iterable[Hashable] | None = None) -> Stat:
        """Summarise a non-empty collection of accuracies; ``units`` names the unit of each
        (default: every value its own unit, never shared with another Stat)."""
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("Stat.of needs at least one value")
        keys = list(units) if units is not None else [object() for _ in vals]
        if len(keys) != len(vals):
            raise ValueError("Stat.of needs one unit per value")
        groups: dict[Hashable, list[float]] = {}
        for key, v in zip(keys, vals):
            groups.setdefault(key, []).append(v)
        by_unit = {key: math.fsum(vs) / len(vs) for key, vs in groups.items()}
        est = over_units(by_unit.values(), len(vals))
        return cls(vals, est.value, _std(vals), est.ci_low, est.ci_high, by_unit)


def _std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof 1) of networks' values, a description; None for one."""
    if len(values) < 2:
        return None
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def diff(a: Stat, b: Stat) -> Difference:
    """``mean(a) - mean(b)`` with a 95% interval over independent units: paired (each unit's
    own difference, then t over the units) when the cells share units, Welch's test between
    the two sets of units otherwise. Not determined with fewer than 3 units (on each side)."""
    pair = paired(a.by_unit, b.by_unit, a.count + b.count)
    if pair is not None:
        return pair
    return welch(list(a.by_unit.values()), list(b.by_unit.values()), a.count + b.count)


# --------------------------------------------------------------------------- grid


def _target_of(treatment: str, row: ResultRow) -> str | None:
    if row.target:
        return row.target
    if treatment.startswith("base") and len(treatment) > 4:
        return treatment[4:]
    m = _PAPER_NAME.match(treatment)
    return m["target"] if m else None


def _source_of(treatment: str, row: ResultRow) -> str | None:
    m = _PAPER_NAME.match(treatment)
    return m["source"] if m else row.source


def _is_base(row: ResultRow) -> bool:
    return row.kind == "base" if row.kind else row.treatment.startswith("base")


@dataclass
class Grid:
    """One experiment's accuracies by (treatment, n) for one metric.

    Attributes:
        experiment: experiment name.
        split: split name.
        metric: ``top1`` or ``top1_best_k``.
        pooled: whether mirror-image treatments were merged (see :data:`POOL`).
        cells: (treatment, n) -> the networks' accuracies.
        treatments: treatment names in display order (canonical first, then plan order).
        targets: treatment -> the half it is trained on.
        sources: treatment -> the half its copied layers come from (None: no source, as
            for base networks and random weights).
        bases: treatment names of base networks.
        merged: the mirror-image treatments pooled into canonical ones (e.g. ``AnA``).
        equal_halves: whether the halves have equal numbers of classes (what ``pool=None``
            decides by), whatever was asked.
        exchangeable: whether the split draws its halves alike (``TaskSplit.exchangeable``:
            random halves), unlike a split by meaning (one superclass against another).
        seeds: split seeds seen.
        pending: networks without a record yet.
        failed: networks whose job failed.
        num_layers: L of the architecture (0 when unknown).
        classes: treatment -> the number of classes of its task (chance is 1 / classes).
        protocols: treatment -> its transfer protocol's name (None: base networks; what a
            finding locates its treatments by, whatever the config named them).
        curves: (treatment, n) -> unit -> the evaluation curve of each of that unit's
            networks (from the records' histories; empty for the paper's networks): what
            convergence speed is read from (:meth:`unit_speed`).
        ood: the same experiment under the out-of-distribution metric (``ood_top1``), when
            its networks were evaluated on such a split and this grid's metric is another:
            what a finding comparing in- and out-of-distribution accuracy reads.
        measures: (``<label>.<quantity>``, n) -> an evaluator's number over the units
            (``experiments[].evaluators``; one evaluation per unit and n).
    """

    experiment: str
    split: str
    metric: str
    pooled: bool
    cells: dict[tuple[str, int], Stat] = field(default_factory=dict)
    treatments: list[str] = field(default_factory=list)
    targets: dict[str, str | None] = field(default_factory=dict)
    sources: dict[str, str | None] = field(default_factory=dict)
    bases: set[str] = field(default_factory=set)
    merged: set[str] = field(default_factory=set)
    equal_halves: bool = True
    exchangeable: bool = True
    seeds: list[int] = field(default_factory=list)
    pending: int = 0
    failed: int = 0
    num_layers: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    protocols: dict[str, str | None] = field(default_factory=dict)
    curves: dict[tuple[str, int], dict[Hashable, tuple[Curve, ...]]] = field(default_factory=dict, repr=False)
    ood: Grid | None = None
    measures: dict[tuple[str, int], Stat] = field(default_factory=dict)

    def get(self, treatment: str, n: int) -> Stat | None:
        """The cell, or None when no network of it has a result."""
        return self.cells.get((treatment, n))

    @property
    def layers(self) -> list[int]:
        """Every n with a result, ascending (0 = base networks)."""
        return sorted({n for _, n in self.cells})

    @property
    def transfer_layers(self) -> list[int]:
        """Every n >= 1 with a result of a non-base treatment."""
        return sorted({n for t, n in self.cells if n > 0 and t not in self.bases})

    def base_for(self, treatment: str) -> Stat | None:
        """The base networks of the half ``treatment`` is trained on."""
        target = self.targets.get(treatment)
        for name in self.bases:
            if self.targets.get(name) == target and (name, 0) in self.cells:
                return self.cells[(name, 0)]
        return None

    def values(self, treatment: str, layers: Iterable[int]) -> list[float]:
        """Accuracies of every network of ``treatment`` at the given layers (a description:
        networks of one unit are not independent; see :meth:`unit_means`)."""
        out: list[float] = []
        for n in layers:
            stat = self.get(treatment, n)
            if stat is not None:
                out.extend(stat.values)
        return out

    def unit_means(self, treatment: str, layers: Iterable[int]) -> dict[Hashable, float]:
        """Per unit, the mean of ``treatment`` over the given layers that unit has: what a
        quantity pooled over n averages within each unit before it is compared across units."""
        acc: dict[Hashable, list[float]] = {}
        for n in layers:
            stat = self.get(treatment, n)
            if stat is not None:
                for unit, v in stat.by_unit.items():
                    acc.setdefault(unit, []).append(v)
        return {u: math.fsum(vs) / len(vs) for u, vs in acc.items()}

    def over_layers(self, treatment: str, layers: Iterable[int]) -> Stat | None:
        """``treatment`` over the given layers as one cell: every network's accuracy, each
        unit's mean over the layers (what a comparison pooled over n pairs by unit)."""
        layers = list(layers)
        means = self.unit_means(treatment, layers)
        if not means:
            return None
        values = tuple(v for n in layers if (s := self.get(treatment, n)) is not None for v in s.values)
        est = over_units(means.values(), len(values))
        return Stat(values, est.value, _std(values), est.ci_low, est.ci_high, means)

    @property
    def units(self) -> list[Hashable]:
        """Every unit with a network in some cell, in a stable order."""
        return sorted({u for s in self.cells.values() for u in s.by_unit}, key=str)

    def measure(self, name: str, n: int) -> Stat | None:
        """An evaluator's number ``<label>.<quantity>`` at n over the units, or None."""
        return self.measures.get((name, n))

    def resampled(self, draw: Sequence[Hashable]) -> Grid:
        """The grid of the units ``draw`` names, each as often as it is named (a bootstrap
        resample): the i-th draw of unit u becomes unit (u, i) in every cell, measure and curve,
        so they stay paired by unit."""
        def resample(stats: dict[tuple[str, int], Stat]) -> dict[tuple[str, int], Stat]:
            out = {}
            for key, stat in stats.items():
                picked = [(stat.by_unit[u], (u, i)) for i, u in enumerate(draw) if u in stat.by_unit]
                if picked:
                    out[key] = Stat.of([v for v, _ in picked], [k for _, k in picked])
            return out

        curves: dict[tuple[str, int], dict[Hashable, tuple[Curve, ...]]] = {
            key: {(u, i): by_unit[u] for i, u in enumerate(draw) if u in by_unit}
                  for key, by_unit in self.curves.items()}
        return replace(self, cells=resample(self.cells), measures=resample(self.measures), curves=curves,
                       ood=self.ood.resampled(draw) if self.ood else None)

    def unit_speed(self, treatment: str, n: int, fraction: float = 0.9) -> dict[Hashable, float]:
        """Per unit, the steps ``treatment``'s network at ``n`` took to reach ``fraction`` of its
        final accuracy, as a fraction of the steps it trained (0 fast, 1 only at the end; the mean
        of the unit's networks): convergence speed, one value per independent unit."""
        return {u: math.fsum(steps_to_fraction(c, fraction) / c.total for c in cs) / len(cs)
                for u, cs in self.curves.get((treatment, n), {}).items() if cs}

    def networks(self, treatment: str, layers: Iterable[int]) -> int:
        """How many networks of ``treatment`` fill the given layers."""
        return sum(s.count for n in layers if (s := self.get(treatment, n)) is not None)

    def chance(self, treatment: str) -> float | None:
        """Chance accuracy of ``treatment``'s task (1 / classes), when known."""
        k = self.classes.get(treatment) or next(iter(self.classes.values()), None)
        return 1.0 / k if k else None


def _equal_halves(rows: Sequence[ResultRow]) -> bool:
    # Whether A and B have the same number of classes (random halves always do; man-made 551 /
    # natural 449 does not). Unknown sizes: fall back to the paper's habit of pooling.
    sizes = {t: {r.num_classes for r in rows if r.target == t and r.num_classes} for t in ("A", "B")}
    if not sizes["A"] or not sizes["B"]:
        return True
    return sizes["A"] == sizes["B"]


def _curve(results: RunResults, job_id: str) -> Curve | None:
    """The evaluation curve of a finished network's record, if it has one."""
    rec = results.records.get(job_id)
    if rec is None or not rec.ok or not rec.history:
        return None
    return Curve.of(((h.step, h.top1) for h in rec.history), rec.steps)


def build_grids(results: RunResults, metric: str = "top1", pool: bool | None = None) -> list[Grid]:
    """Group a run's rows into one :class:`Grid` per experiment.

    Args:
        results: rows from :func:`transferbench.results.read_results` or the paper data.
        metric: ``top1`` (final) or ``top1_best_k`` (the paper's mean of the best k).
        pool: merge mirror-image treatments (AnA into BnB, ...); None decides per
            experiment (pool when the halves have equal numbers of classes).

    Returns:
        Grids in experiment order. Pending and failed networks are counted, not averaged.
    """
    check_metric(metric)
    by_exp: dict[str, list[ResultRow]] = defaultdict(list)
    for row in results.rows:
        by_exp[row.experiment].append(row)
    grids = []
    for experiment, rows in by_exp.items():
        grid = _grid(experiment, rows, results, metric, pool)
        if metric != OOD_METRIC and any(r.ood_top1 is not None for r in rows):
            grid.ood = _grid(experiment, rows, results, OOD_METRIC, pool)
        grid.measures = _measures(results, experiment)
        grids.append(grid)
    return grids


def _grid(experiment: str, rows: Sequence[ResultRow], results: RunResults, metric: str,
          pool: bool | None) -> Grid:
    """One experiment's rows as a :class:`Grid` of ``metric``."""
    equal = _equal_halves(rows)
    exchangeable = results.exchangeable.get(experiment, True)
    # a split by meaning (one superclass against another) keeps its directions apart
    pooled = (equal and exchangeable) if pool is None else pool
    grid = Grid(experiment, rows[0].split, metric, pooled, num_layers=results.num_layers,
                equal_halves=equal, exchangeable=exchangeable)
    grid.pending = len({r.job_id for r in rows if r.status == "pending"})
    grid.failed = len({r.job_id for r in rows if r.status == "failed"})
    grid.seeds = sorted({r.split_seed for r in rows})
    # A job may fill several cells of one experiment; each network counts once per cell.
    values: dict[tuple[str, int], dict[str, tuple[float, Unit]]] = defaultdict(dict)
    curves: dict[tuple[str, int], dict[Hashable, dict[str, Curve]]] = defaultdict(dict)
    order: list[str] = []
    for row in rows:
        name = POOL.get(row.treatment, row.treatment) if pooled else row.treatment
        if name != row.treatment:
            grid.merged.add(row.treatment)
        if name not in order:
            order.append(name)
        if _is_base(row):
            grid.bases.add(name)
        target = _target_of(row.treatment, row)
        if pooled and row.treatment in POOL:
            target = "B"
        grid.targets.setdefault(name, target)
        grid.sources.setdefault(name, None if _is_base(row) else _source_of(name, row))
        if row.num_classes:
            grid.classes.setdefault(name, row.num_classes)
        grid.protocols.setdefault(name, row.protocol)
        value = row.value(metric)
        if value is not None:
            unit = (experiment, row.split_seed, _target_of(row.treatment, row) or "")
            values[(name, row.n)][row.job_id] = (value, unit)
            curve = _curve(results, row.job_id)
            if curve is not None:
                curves[(name, row.n)].setdefault(unit, {})[row.job_id] = curve
    grid.cells = {key: Stat.of([v for v, _ in vs.values()], [u for _, u in vs.values()])
                  for key, vs in values.items()}
    grid.curves = {key: {u: tuple(cs.values()) for u, cs in by_unit.items()} for key, by_unit in curves.items()}
    grid.treatments = [t for t in CANONICAL if t in order] + [t for t in order if t not in CANONICAL]
    return grid


def _measures(results: RunResults, experiment: str) -> dict[tuple[str, int], Stat]:
    """The experiment's evaluations as (``<label>.<quantity>``, n) -> one value per unit."""
    values: dict[tuple[str, int], dict[Unit, float]] = defaultdict(dict)
    for row in results.evaluations:
        if row.experiment == experiment:
            unit = (experiment, row.split_seed, row.target)
            for quantity, v in row.values.items():
                values[(f"{row.label}.{quantity}", row.n)][unit] = v
    return {key: Stat.of(list(vs.values()), list(vs)) for key, vs in values.items()}


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class LayerMetrics:
    """The paper's derived quantities at one n (None where a treatment is missing).

    Attributes:
        n: layers transferred.
        coadaptation: ``baseB - BnB``: lost by splitting co-adapted layers.
        specificity: ``BnB - AnB``: lost because layer n's features are specific to A.
        boost_base: ``AnB+ - baseB``: the fine-tuning generalisation boost.
        boost_selffer: ``AnB+ - BnB+``: the boost that is due to transfer, not fine-tuning.
        drop: ``baseB - AnB`` (Figure 3's normalisation, in accuracy points).
        relative_drop: ``(baseB - AnB) / baseB``.
        generality: ``AnB / baseB`` (1 = fully general).
    """

    n: int
    coadaptation: Difference | None
    specificity: Difference | None
    boost_base: Difference | None
    boost_selffer: Difference | None
    drop: Difference | None
    relative_drop: float | None
    generality: float | None


def _diff(a: Stat | None, b: Stat | None) -> Difference | None:
    return None if a is None or b is None else diff(a, b)


def transfer_source(grid: Grid) -> str:
    """Where the grid's transferred features come from: ``A`` (the paper's AnB, AnB+), or
    ``X`` (a weights file: XnB, XnB+) when the grid has X treatments and no A ones. The
    derived metrics read ``XnB`` where the paper reads ``AnB``."""
    names = {t for t, _ in grid.cells}
    return "X" if {"XnB", "XnB+"} & names and not {"AnB", "AnB+"} & names else "A"


def layer_metrics(grid: Grid) -> list[LayerMetrics]:
    """The derived metrics at every transfer layer of ``grid`` (B-target treatments), with
    ``XnB`` in place of ``AnB`` for a weights file (:func:`transfer_source`)."""
    base = grid.get("baseB", 0)
    src = transfer_source(grid)
    out = []
    for n in grid.transfer_layers:
        bnb, anb = grid.get("BnB", n), grid.get(f"{src}nB", n)
        bnb_p, anb_p = grid.get("BnB+", n), grid.get(f"{src}nB+", n)
        ratio = anb.mean / base.mean if base is not None and anb is not None and base.mean > 0 else None
        out.append(
            LayerMetrics(
                n=n,
                coadaptation=_diff(base, bnb),
                specificity=_diff(bnb, anb),
                boost_base=_diff(anb_p, base),
                boost_selffer=_diff(anb_p, bnb_p),
                drop=_diff(base, anb),
                relative_drop=None if ratio is None else 1.0 - ratio,
                generality=ratio,
            )
        )
    return out


def drops(grid: Grid) -> dict[str, dict[int, tuple[Difference, float | None]]]:
    """For every non-base treatment with a base of its target half: n -> (drop, relative).

    ``drop = base - T(n)`` and ``relative = drop / base``. This is Figure 3's view, used for
    the dissimilar split (each direction against its own base) and for random weights.
    """
    out: dict[str, dict[int, tuple[Difference, float | None]]] = {}
    for name in grid.treatments:
        base = grid.base_for(name)
        if name in grid.bases or base is None:
            continue
        series = {}
        for n in grid.transfer_layers:
            stat = grid.get(name, n)
            if stat is not None:
                d = diff(base, stat)
                series[n] = (d, d.value / base.mean if base.mean > 0 else None)
        if series:
            out[name] = series
    return out


@dataclass(frozen=True)
class Table1Row:
    """One row of the paper's Table 1: the fine-tuning boost averaged over layers lo..hi.

    Each unit's AnB+ networks in the range are averaged first and compared with that unit's
    own base (and BnB+), then the mean and interval are taken over units. ``as_published`` is
    the paper's own arithmetic: the mean over every AnB+ network in the range minus the mean
    of every base network (a description; it compares networks with the bases of other units).
    """

    lo: int
    hi: int
    networks: int
    boost_base: Difference | None
    boost_selffer: Difference | None
    as_published: float | None = None


def table1_ranges(layers: Sequence[int]) -> list[tuple[int, int]]:
    """The paper's ranges 1-7, 3-7, 5-7 generalised to any tested layers.

    With m tested layers the ranges start at the 1st, the (2m/7)-th and the (4m/7)-th of
    them (rounded) and all end at the last, so 7 layers give exactly the paper's ranges.
    """
    ls = sorted(set(layers))
    if not ls:
        return []
    starts = dict.fromkeys(ls[min(round(f * len(ls)), len(ls) - 1)] for f in (0.0, 2 / 7, 4 / 7))
    return [(lo, ls[-1]) for lo in starts]


def table1(grid: Grid, ranges: Sequence[tuple[int, int]] | None = None) -> list[Table1Row]:
    """The paper's Table 1 for one grid: AnB+ - baseB and AnB+ - BnB+ over ranges of n.

    Args:
        grid: a grid with baseB and AnB+ (BnB+ optional).
        ranges: (lo, hi) pairs, inclusive; default :func:`table1_ranges` of the AnB+ layers.

    Returns:
        One row per range with at least one AnB+ network; empty without baseB or AnB+.
    """
    base = grid.get("baseB", 0)
    name = f"{transfer_source(grid)}nB+"
    plus_layers = [n for n in grid.transfer_layers if grid.get(name, n) is not None]
    if base is None or not plus_layers:
        return []
    rows = []
    for lo, hi in ranges if ranges is not None else table1_ranges(plus_layers):
        layers = [n for n in plus_layers if lo <= n <= hi]
        plus = grid.unit_means(name, layers)
        if not plus:
            continue
        networks = grid.networks(name, layers)
        selffer = grid.unit_means("BnB+", [n for n in grid.transfer_layers if lo <= n <= hi])
        published = math.fsum(grid.values(name, layers)) / networks - math.fsum(base.values) / base.count
        rows.append(Table1Row(lo=lo, hi=hi, networks=networks,
                              boost_base=paired(plus, base.by_unit, networks + base.count),
                              boost_selffer=paired(plus, selffer, networks) if selffer else None,
                              as_published=published))
    return rows


@dataclass(frozen=True)
class SpecificLayer:
    """Where transferred features stop being general.

    Attributes:
        n: the first layer whose specificity drop ``BnB - AnB`` is above 0 beyond noise
            (its interval over units lies above 0); None when no layer's is.
        gap: the specificity drop at that layer (at the deepest layer when none is).
        determined: False when no layer has an interval (fewer than 3 units).
        rule: the rule in words, for the report.
        stability: how often resampled units name the same layer (None: not determined).
    """

    n: int | None
    gap: Difference | None
    determined: bool
    rule: str
    stability: Stability | None = None


def _first_specific(gaps: dict[int, Difference]) -> int | None:
    return next((n for n in sorted(gaps) if (lo := gaps[n].ci_low) is not None and lo > 0), None)


def specific_layer(grid: Grid, *, resamples: int = 200, seed: int = 0) -> SpecificLayer | None:
    """The first n where AnB falls below BnB beyond noise.

    Rule: at each n, the per-unit gap ``BnB - AnB`` (each unit's own selffer against its own
    transfer) with its 95% t-interval over units; the first n whose interval lies above 0.
    Its stability: the share of ``resamples`` bootstrap resamples of the units (seeded) that
    name the same n (or, again, none).

    Returns:
        None when the grid has no layer with both BnB and AnB.
    """
    anb = f"{transfer_source(grid)}nB"
    pairs = {n: (b, a) for n in grid.transfer_layers if (b := grid.get("BnB", n)) and (a := grid.get(anb, n))}
    layers = list(pairs)
    if not layers:
        return None
    gaps = {n: diff(b, a) for n, (b, a) in pairs.items()}
    rule = f"first n whose 95% interval of BnB - {anb} over units lies above 0"
    if not any(g.determined for g in gaps.values()):
        return SpecificLayer(None, None, False, rule)
    first = _first_specific(gaps)
    per_unit = _gap_vectors(grid, anb, layers)

    def claim(groups: Sequence[Sequence[dict[int, float]]]) -> int | None:
        drawn = groups[0]
        return _first_specific({n: over_units(u[n] for u in drawn if n in u) for n in layers
                                if any(n in u for u in drawn)})

    stab = stability([per_unit], claim, resamples=resamples, seed=seed) if per_unit else None
    return SpecificLayer(first, gaps[first] if first is not None else gaps[layers[-1]], True, rule, stab)


def _gap_vectors(grid: Grid, anb: str, layers: Sequence[int]) -> list[dict[int, float]]:
    """Per unit, its gap BnB - AnB at every n it has both: what the bootstrap resamples."""
    out: dict[Hashable, dict[int, float]] = {}
    for n in layers:
        bnb, tr = grid.get("BnB", n), grid.get(anb, n)
        assert bnb is not None and tr is not None
        for unit, v in bnb.by_unit.items():
            if unit in tr.by_unit:
                out.setdefault(unit, {})[n] = v - tr.by_unit[unit]
    return list(out.values())
