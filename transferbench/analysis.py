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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .results import ResultRow, RunResults, check_metric, rows_to_csv

__all__ = [
    "CANONICAL",
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
    "results_csv",
    "specific_layer",
    "t_quantile",
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

#: Networks a cell needs for a 95% interval: two give t = 12.7, an interval too wide to mean
#: anything (a difference of two-network cells printed +-45 points); three give t = 4.3.
MIN_FOR_INTERVAL = 3

# Two-sided 95% quantiles of Student's t (0.975 quantile) by degrees of freedom; scipy is
# not a dependency, and between rows the quantile is close to linear in 1/df.
_T975: tuple[tuple[float, float], ...] = (
    (1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365),
    (8, 2.306), (9, 2.262), (10, 2.228), (11, 2.201), (12, 2.179), (13, 2.160), (14, 2.145),
    (15, 2.131), (16, 2.120), (17, 2.110), (18, 2.101), (19, 2.093), (20, 2.086), (21, 2.080),
    (22, 2.074), (23, 2.069), (24, 2.064), (25, 2.060), (26, 2.056), (27, 2.052), (28, 2.048),
    (29, 2.045), (30, 2.042), (40, 2.021), (50, 2.009), (60, 2.000), (80, 1.990), (100, 1.984),
    (120, 1.980), (math.inf, 1.960),
)


def t_quantile(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` (>= 1, may be fractional) degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    for (d0, t0), (d1, t1) in zip(_T975, _T975[1:]):
        if d0 <= df <= d1:
            if d1 == math.inf:
                w = 1.0 - d0 / df  # position between 1/d0 and 1/inf = 0
            else:
                w = (1 / d0 - 1 / df) / (1 / d0 - 1 / d1)
            return t0 + w * (t1 - t0)
    return _T975[-1][1]


@dataclass(frozen=True)
class Stat:
    """The accuracies of the networks in one cell.

    Attributes:
        values: one accuracy per network.
        mean: their mean.
        std: sample standard deviation (ddof=1); None with a single network.
        ci_low, ci_high: 95% t-interval of the mean; None with fewer than
            :data:`MIN_FOR_INTERVAL` networks.
    """

    values: tuple[float, ...]
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def count(self) -> int:
        """Number of networks."""
        return len(self.values)

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        """Summarise a non-empty collection of accuracies."""
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("Stat.of needs at least one value")
        mean = math.fsum(vals) / len(vals)
        if len(vals) < 2:
            return cls(vals, mean, None, None, None)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        if len(vals) < MIN_FOR_INTERVAL:
            return cls(vals, mean, std, None, None)
        half = t_quantile(len(vals) - 1) * std / math.sqrt(len(vals))
        return cls(vals, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Difference:
    """A derived quantity (a difference of means) with its 95% interval when known."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the width of the 95% interval, or None when the noise is unknown."""
        return None if self.ci_high is None else (self.ci_high - self.value)


def diff(a: Stat, b: Stat) -> Difference:
    """``mean(a) - mean(b)`` with a Welch 95% interval (None unless both have >= 3 networks)."""
    value = a.mean - b.mean
    if a.std is None or b.std is None or min(a.count, b.count) < MIN_FOR_INTERVAL:
        return Difference(value)
    va, vb = a.std**2 / a.count, b.std**2 / b.count
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(value, value, value)
    df = (va + vb) ** 2 / (va**2 / (a.count - 1) + vb**2 / (b.count - 1))
    half = t_quantile(max(df, 1.0)) * se
    return Difference(value, value - half, value + half)


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
        """Accuracies of every network of ``treatment`` at the given layers."""
        out: list[float] = []
        for n in layers:
            stat = self.get(treatment, n)
            if stat is not None:
                out.extend(stat.values)
        return out


def _equal_halves(rows: Sequence[ResultRow]) -> bool:
    # Whether A and B have the same number of classes (random halves always do; man-made 551 /
    # natural 449 does not). Unknown sizes: fall back to the paper's habit of pooling.
    sizes = {t: {r.num_classes for r in rows if r.target == t and r.num_classes} for t in ("A", "B")}
    if not sizes["A"] or not sizes["B"]:
        return True
    return sizes["A"] == sizes["B"]


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
        values: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
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
            value = row.value(metric)
            if value is not None:
                values[(name, row.n)][row.job_id] = value
        grid.cells = {key: Stat.of(v.values()) for key, v in values.items()}
        grid.treatments = [t for t in CANONICAL if t in order] + [t for t in order if t not in CANONICAL]
        grids.append(grid)
    return grids


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
        ratio_ok = base is not None and anb is not None and base.mean > 0
        out.append(
            LayerMetrics(
                n=n,
                coadaptation=_diff(base, bnb),
                specificity=_diff(bnb, anb),
                boost_base=_diff(anb_p, base),
                boost_selffer=_diff(anb_p, bnb_p),
                drop=_diff(base, anb),
                relative_drop=(base.mean - anb.mean) / base.mean if ratio_ok else None,
                generality=anb.mean / base.mean if ratio_ok else None,
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

    Like the paper, each AnB+ network in the range counts once (a mean over networks, not a
    mean of per-layer means; the two differ where layers have different numbers of networks).
    """

    lo: int
    hi: int
    networks: int
    boost_base: Difference | None
    boost_selffer: Difference | None


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
        plus = grid.values(name, layers)
        if not plus:
            continue
        selffer = grid.values("BnB+", [n for n in grid.transfer_layers if lo <= n <= hi])
        plus_stat = Stat.of(plus)
        rows.append(
            Table1Row(
                lo=lo,
                hi=hi,
                networks=len(plus),
                boost_base=diff(plus_stat, base),
                boost_selffer=diff(plus_stat, Stat.of(selffer)) if selffer else None,
            )
        )
    return rows


@dataclass(frozen=True)
class SpecificLayer:
    """Where transferred features stop being general.

    Attributes:
        n: the first layer whose specificity drop ``BnB - AnB`` exceeds ``threshold``;
            None when no layer does.
        gap: the specificity drop at that layer.
        threshold: the drop that counts as more than noise.
        noise_sd: pooled between-network standard deviation of BnB and AnB; None when no
            cell has two networks (then ``threshold`` is the stated fallback).
        rule: the rule in words, for the report.
    """

    n: int | None
    gap: float | None
    threshold: float
    noise_sd: float | None
    rule: str


def specific_layer(grid: Grid, *, k: float = 2.0, fallback: float = 0.01) -> SpecificLayer | None:
    """The first n where AnB falls below BnB by more than the noise between networks.

    Rule: noise = the pooled standard deviation of single networks over every BnB and AnB
    cell with at least two networks (variances weighted by their degrees of freedom); a layer
    is specific when ``BnB - AnB > k * noise``. Pooling over all layers makes the noise
    estimate usable with only 2 seeds. With one network per cell the noise is unknown and
    ``fallback`` (accuracy points as a fraction, 0.01 = 1 point) is the threshold.

    Returns:
        None when the grid has no layer with both BnB and AnB.
    """
    anb = f"{transfer_source(grid)}nB"
    layers = [n for n in grid.transfer_layers if grid.get("BnB", n) and grid.get(anb, n)]
    if not layers:
        return None
    num = den = 0.0
    for n in layers:
        for stat in (grid.get("BnB", n), grid.get(anb, n)):
            if stat is not None and stat.std is not None:
                num += (stat.count - 1) * stat.std**2
                den += stat.count - 1
    if den > 0:
        noise: float | None = math.sqrt(num / den)
        threshold = k * noise
        rule = f"first n with BnB - {anb} > {k:g} x pooled network std ({noise:.4f})"
    else:
        noise, threshold = None, fallback
        rule = f"one network per cell: noise unknown, first n with BnB - {anb} > {fallback:g}"
    for n in layers:
        gap = grid.get("BnB", n).mean - grid.get(anb, n).mean  # type: ignore[union-attr]
        if gap > threshold:
            return SpecificLayer(n, gap, threshold, noise, rule)
    return SpecificLayer(None, None, threshold, noise, rule)


# --------------------------------------------------------------------------- the main table as CSV


def results_csv(results: RunResults, metric: str) -> str:
    """``results_<metric>.csv``: one row per experiment, split seed and n; one column per treatment
    (not pooled), holding that seed's network's accuracy."""
    names = list(dict.fromkeys(r.treatment for r in results.rows))
    names = [t for t in CANONICAL if t in names] + [t for t in names if t not in CANONICAL]
    cells: dict[tuple[str, str, int, int], dict[str, list[float]]] = {}
    for r in results.rows:
        key = (r.experiment, r.split, r.split_seed, r.n)
        bucket = cells.setdefault(key, {})
        value = r.value(metric)
        if value is not None:
            bucket.setdefault(r.treatment, []).append(value)
    rows = []
    for (exp, split, seed, n), bucket in cells.items():
        values = [sum(bucket[t]) / len(bucket[t]) if t in bucket else None for t in names]
        rows.append([exp, split, seed, n, metric, *values])
    rows.sort(key=lambda row: (results.experiments.index(row[0]), row[2], row[3]))
    return rows_to_csv(["experiment", "split", "split_seed", "n", "metric", *names], rows)
