"""An answer, not only a table: how many layers to freeze, and whether to fine-tune.

For an experiment that transfers from a weights file (``XnB`` frozen, ``XnB+`` fine-tuned,
``baseB`` from scratch; docs/your-data.md) :func:`recommend` reads the grid the report
builds and says, with the numbers behind it:

* the **deepest n whose frozen transfer is within noise of the best frozen n**: freezing
  more layers trains fewer parameters and overfits a small data set less, so among the
  depths that cannot be told apart from the best, the deepest is the one to use;
* at that n, whether **fine-tuning** (``XnB+``) beats the frozen transfer and training from
  scratch (``baseB``), each with its 95% interval;
* when estimators ran for the experiment, whether their curves point at the same depth.

"Within noise" means that the 95% interval of ``best - XnB(n)`` includes 0. Intervals come
from the spread of single networks pooled over every cell of the treatments compared (all n;
Student's t), which assumes the spread does not change much with n but makes two networks
per cell (two split seeds) enough to say something; a
per-cell Welch interval with one degree of freedom would say nothing. With one network in
every cell the noise is unknown: 1 point of top-1 is the stated threshold, no interval is
given, and the answer says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .analysis import Difference, Grid, Stat, t_quantile, transfer_source
from .results import EstimateRow
from .validation import Agreement

__all__ = ["EstimatorView", "Recommendation", "estimator_views", "recommend"]

#: The threshold (top-1 as a fraction) when no cell has two networks.
FALLBACK = 0.01


@dataclass(frozen=True)
class EstimatorView:
    """One estimator's reading of the same curve.

    Attributes:
        estimator: its name.
        n: the deepest n whose score is within 5% of the score range of its best n.
        spearman: its rank correlation with the frozen transfer's accuracy across n (None
            when not computed).
        depth_spearman: what the rank of n alone reaches on the same points.
    """

    estimator: str
    n: int
    spearman: float | None = None
    depth_spearman: float | None = None


@dataclass(frozen=True)
class Recommendation:
    """How many layers to freeze, and whether fine-tuning pays, for one experiment.

    Attributes:
        experiment: the experiment.
        frozen, finetuned, base: the treatments read (``XnB``, ``XnB+``, ``baseB``).
        best_n: the n with the best mean frozen accuracy.
        n: the deepest n within noise of ``best_n`` (the recommendation).
        within: every n within noise of ``best_n``.
        rule: how "within noise" was decided, in words.
        gap: ``frozen(best_n) - frozen(n)``.
        finetune_vs_frozen: ``finetuned(n) - frozen(n)``, None without a fine-tuned cell at n.
        finetune_vs_base: ``finetuned(n) - base``.
        frozen_vs_base: ``frozen(n) - base``.
        estimators: what the estimators that ran for the experiment say.
        finetune_best_n: the n with the best mean fine-tuned accuracy (None without any).
        finetune_gap: ``finetuned(finetune_best_n) - finetuned(n)``.
    """

    experiment: str
    frozen: str
    finetuned: str
    base: str
    best_n: int
    n: int
    within: list[int]
    rule: str
    gap: Difference
    finetune_vs_frozen: Difference | None = None
    finetune_vs_base: Difference | None = None
    frozen_vs_base: Difference | None = None
    estimators: list[EstimatorView] = field(default_factory=list)
    finetune_best_n: int | None = None
    finetune_gap: Difference | None = None

    def lines(self, layer_names: Sequence[str] = (), warnings: Sequence[str] = ()) -> list[str]:
        """The recommendation as a few hedged sentences; ``warnings`` names the validity checks
        that warned about this experiment's networks (the last sentence then says so)."""
        return _lines(self, layer_names, warnings)


def _pooled(grid: Grid, names: Sequence[str]) -> tuple[float, float] | None:
    """(std, degrees of freedom) of single networks, pooled over every cell of ``names`` with
    two or more networks; None when there is none."""
    num = den = 0.0
    for (t, _), stat in grid.cells.items():
        if t in names and stat.std is not None:
            num += (stat.count - 1) * stat.std ** 2
            den += stat.count - 1
    return (math.sqrt(num / den), den) if den > 0 else None


def _diff(grid: Grid, a: tuple[str, Stat], b: tuple[str, Stat]) -> Difference:
    """``mean(a) - mean(b)`` with a 95% interval from the spread of single networks pooled
    over every cell of both treatments (all n): usable with two networks per cell, where a
    per-cell Welch interval would be too wide to say anything."""
    value = a[1].mean - b[1].mean
    noise = _pooled(grid, dict.fromkeys((a[0], b[0])))
    if noise is None:
        return Difference(value)
    sd, df = noise
    half = t_quantile(df) * sd * math.sqrt(1 / a[1].count + 1 / b[1].count)
    return Difference(value, value - half, value + half)


def _rule(grid: Grid, frozen: str) -> str:
    noise = _pooled(grid, [frozen])
    if noise is not None:
        return (f"the 95% interval of the difference includes 0; network-to-network std {100 * noise[0]:.1f} "
                f"points, pooled over every {frozen} cell ({noise[1]:g} degrees of freedom)")
    return (f"one network per cell, so the noise is unknown and {100 * FALLBACK:g} point of top-1 is taken "
            "as noise; more split seeds give intervals")


def recommend(grid: Grid, estimators: Sequence[EstimatorView] = ()) -> Recommendation | None:
    """The recommendation for one grid, or None when it has no frozen transfer at any n.

    The frozen and fine-tuned treatments are ``XnB`` and ``XnB+`` for a weights file
    (``AnB``, ``AnB+`` for the paper's halves; :func:`~transferbench.analysis.transfer_source`).
    """
    src = transfer_source(grid)
    frozen, finetuned = f"{src}nB", f"{src}nB+"
    layers = [n for n in grid.transfer_layers if grid.get(frozen, n) is not None]
    if not layers:
        return None
    stats: dict[int, Stat] = {n: grid.get(frozen, n) for n in layers}  # type: ignore[misc]
    best_n = max(layers, key=lambda n: (stats[n].mean, n))
    best = (frozen, stats[best_n])
    gaps = {n: _diff(grid, best, (frozen, stats[n])) for n in layers}
    within = [n for n in layers if n == best_n or _within(gaps[n])]
    n = max(within)
    here, plus = (frozen, stats[n]), grid.get(finetuned, n)
    base_name = next((t for t in grid.bases if grid.targets.get(t) == grid.targets.get(frozen)), "baseB")
    base = grid.base_for(frozen)  # baseB, or the base of the half it trains on (baseall)
    return Recommendation(
        experiment=grid.experiment, frozen=frozen, finetuned=finetuned, base=base_name, best_n=best_n, n=n,
        within=within, rule=_rule(grid, frozen), gap=gaps[n],
        finetune_vs_frozen=_diff(grid, (finetuned, plus), here) if plus else None,
        finetune_vs_base=_diff(grid, (finetuned, plus), (base_name, base)) if plus and base else None,
        frozen_vs_base=_diff(grid, here, (base_name, base)) if base else None,
        estimators=list(estimators), **_best_finetuned(grid, finetuned, n),
    )


def _best_finetuned(grid: Grid, finetuned: str, n: int) -> dict[str, Any]:
    """Where fine-tuning does best, and how far the recommended n is from it."""
    cells = {k: grid.get(finetuned, k) for k in grid.transfer_layers if grid.get(finetuned, k) is not None}
    if not cells or n not in cells:
        return {}
    best = max(cells, key=lambda k: (cells[k].mean, -k))  # type: ignore[union-attr]
    return {"finetune_best_n": best,
            "finetune_gap": _diff(grid, (finetuned, cells[best]), (finetuned, cells[n]))}  # type: ignore[arg-type]


def _within(gap: Difference) -> bool:
    """Whether a gap from the best n is noise: its interval includes 0 (else: at most 1 point)."""
    return gap.ci_low <= 0.0 if gap.ci_low is not None else gap.value <= FALLBACK


def estimator_views(grid: Grid, estimates: Sequence[EstimateRow], agreements: Sequence[Agreement]
                    ) -> list[EstimatorView]:
    """What each estimator that scored the grid's transfer (source -> B) says: the deepest n
    whose mean score is within 5% of the score range of its best n, and its rank agreement
    with the frozen transfer across n (``agreements``, as the report computed them;
    docs/estimators.md)."""
    src = transfer_source(grid)
    frozen = f"{src}nB"
    mine = [e for e in estimates if e.experiment == grid.experiment and e.value is not None
            and e.source == src and (e.target == "B" or grid.pooled)]
    if not mine:
        return []
    spearman = {(a.estimator, a.reference): a for a in agreements
                if a.experiment == grid.experiment and a.comparison == "layers"}
    out = []
    for name in dict.fromkeys(e.estimator for e in mine):
        by_n: dict[int, list[float]] = {}
        for e in mine:
            if e.estimator == name:
                by_n.setdefault(e.n, []).append(float(e.value))  # type: ignore[arg-type]
        means = {n: sum(v) / len(v) for n, v in by_n.items()}
        top, span = max(means.values()), max(means.values()) - min(means.values())
        n = max(k for k, v in means.items() if top - v <= 0.05 * span)
        agreement = spearman.get((name, frozen))
        out.append(EstimatorView(name, n, agreement.spearman if agreement else None,
                                 agreement.depth_spearman if agreement else None))
    return out


# --------------------------------------------------------------------------- words


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def _interval(d: Difference) -> str:
    if d.ci_low is None or d.ci_high is None:
        return "one network per cell: no interval"
    return f"95% interval {_pts(d.ci_low)} to {_pts(d.ci_high)}"


def _compare(d: Difference, what: str, other: str) -> str:
    """'<what> beats <other> by +x points (interval)', hedged by the interval."""
    numbers = f"{_pts(d.value)} points, {_interval(d)}"
    if d.ci_low is None or d.ci_high is None:
        word = "is above" if d.value > 0 else "is below" if d.value < 0 else "equals"
        return f"{what} {word} {other} ({numbers}); with one network per cell this may be noise"
    if d.ci_low > 0:
        return f"{what} beats {other} ({numbers})"
    if d.ci_high < 0:
        return f"{what} is worse than {other} ({numbers})"
    return f"{what} cannot be told apart from {other} ({numbers})"


def _loses(d: Difference | None) -> bool:
    """Whether a difference is below 0 beyond noise (by its interval, else by 1 point)."""
    if d is None:
        return False
    return d.ci_high < 0 if d.ci_high is not None else d.value < -FALLBACK


def _layer(n: int, names: Sequence[str]) -> str:
    return f"n={n} ({names[n - 1]})" if 0 < n <= len(names) else f"n={n}"


def _lines(r: Recommendation, names: Sequence[str], warnings: Sequence[str] = ()) -> list[str]:
    out = []
    freeze = "Freeze layer 1 only" if r.n == 1 else f"Freeze layers 1..{r.n}"
    if r.n == r.best_n:
        where = f"{_layer(r.n, names)} is the best frozen depth and no deeper one is within noise of it ({r.rule})"
    else:
        where = (f"{_layer(r.n, names)} is the deepest frozen transfer within noise of the best one "
                 f"({_layer(r.best_n, names)}, {_pts(r.gap.value)} points better; {r.rule}); within noise: "
                 f"n = {', '.join(map(str, r.within))}")
    if _loses(r.frozen_vs_base):
        out.append(f"Frozen transfer does not pay here: even at its best it is below training from scratch "
                   f"({r.base}). If layers must stay frozen, freeze at most layers 1..{r.n}: {where}.")
    else:
        out.append(f"{freeze}: {where}.")
    if r.finetune_vs_frozen is not None:
        out.append(f"At n={r.n}, " + _compare(r.finetune_vs_frozen, f"fine-tuning ({r.finetuned})",
                                             f"frozen transfer ({r.frozen})") + ".")
    else:
        out.append(f"No fine-tuned network ({r.finetuned}) at n={r.n}: add {r.finetuned} to the treatments "
                   "to learn whether fine-tuning pays.")
    if r.finetune_best_n is not None and r.finetune_gap is not None and r.finetune_best_n != r.n:
        out.append(f"Fine-tuned networks do best at {_layer(r.finetune_best_n, names)}: "
                   + _compare(r.finetune_gap, "that depth", f"n={r.n}") + ".")
    if r.finetune_vs_base is not None:
        out.append(_compare(r.finetune_vs_base, f"Fine-tuned ({r.finetuned}, n={r.n})",
                            f"training from scratch ({r.base})") + ".")
    if r.frozen_vs_base is not None:
        out.append(_compare(r.frozen_vs_base, f"Frozen ({r.frozen}, n={r.n})", f"training from scratch ({r.base})")
                   + ".")
    for e in r.estimators:
        agree = "agrees" if e.n == r.n else "is within one layer" if abs(e.n - r.n) == 1 else "disagrees"
        corr = "" if e.spearman is None else (
            f"; Spearman with {r.frozen} across n {e.spearman:+.2f}"
            + ("" if e.depth_spearman is None else f" (depth alone {e.depth_spearman:+.2f})"))
        out.append(f"Estimator {e.estimator} would freeze layers 1..{e.n}: it {agree} with retraining{corr}.")
    if warnings:
        out.append(f"The validity checks warn ({', '.join(warnings)}): read these numbers with their remedies in "
                   "mind; more seeds or more training can move them.")
    else:
        out.append("These are measurements on this data and these seeds; a change of data, architecture or "
                   "training length can move them.")
    return out
