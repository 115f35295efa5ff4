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

"As good as the best" is an equivalence test, the rule the report's controls use
(:func:`transferbench.stats.equivalence`): the 95% interval of ``best - XnB(n)`` over units
(each unit's own difference; a unit is a split seed and a direction) lies within
``margin`` (default 1 point of top-1). A depth whose interval is too wide for that is "not
shown" as good, never assumed so. With fewer than three units there are no intervals: the
answer names the best mean and says that it is not determined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .analysis import Grid, Stat, diff, transfer_source
from .results import EstimateRow
from .stats import Difference, Stability, equivalence, stability
from .validation import Agreement

__all__ = ["EstimatorView", "Recommendation", "estimator_views", "recommend", "recommendation_stability"]

#: The default margin of "as good as the best" (top-1 as a fraction: 1 point).
MARGIN = 0.01


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
        determined: whether any interval exists (False with fewer than three units).
        stability: how often resampled units give the same ``n`` (set by the report).
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
    determined: bool = True
    stability: Stability | None = None

    def lines(self, layer_names: Sequence[str] = (), warnings: Sequence[str] = ()) -> list[str]:
        """The recommendation as a few hedged sentences; ``warnings`` names the validity checks
        that warned about this experiment's networks (the last sentence then says so)."""
        return _lines(self, layer_names, warnings)


def _diff(a: Stat | None, b: Stat | None) -> Difference | None:
    """``mean(a) - mean(b)``, paired over the units both cells have (each unit's own difference)."""
    return None if a is None or b is None else diff(a, b)


def _rule(margin: float) -> str:
    return (f"as good as the best: the 95% interval over units of the shortfall from the best n lies within "
            f"{100 * margin:.1f} points")


def recommend(grid: Grid, estimators: Sequence[EstimatorView] = (), *, margin: float = MARGIN
              ) -> Recommendation | None:
    """The recommendation for one grid, or None when it has no frozen transfer at any n.

    The frozen and fine-tuned treatments are ``XnB`` and ``XnB+`` for a weights file
    (``AnB``, ``AnB+`` for the paper's halves; :func:`~transferbench.analysis.transfer_source`).
    """
    src = transfer_source(grid)
    frozen, finetuned = f"{src}nB", f"{src}nB+"
    layers = [n for n in grid.transfer_layers if grid.get(frozen, n) is not None]
    if not layers:
        return None
    stats: dict[int, Stat] = {n: s for n in layers if (s := grid.get(frozen, n)) is not None}
    best_n = max(layers, key=lambda n: (stats[n].mean, n))
    gaps = {n: diff(stats[best_n], stats[n]) for n in layers}
    within = [n for n in layers if n == best_n or equivalence(gaps[n], margin) == "holds"]
    n = max(within)
    here, plus = stats[n], grid.get(finetuned, n)
    base_name = next((t for t in grid.bases if grid.targets.get(t) == grid.targets.get(frozen)), "baseB")
    base = grid.base_for(frozen)  # baseB, or the base of the half it trains on (baseall)
    return Recommendation(
        experiment=grid.experiment, frozen=frozen, finetuned=finetuned, base=base_name, best_n=best_n, n=n,
        within=within, rule=_rule(margin), gap=gaps[n], finetune_vs_frozen=_diff(plus, here),
        finetune_vs_base=_diff(plus, base), frozen_vs_base=_diff(here, base),
        estimators=list(estimators), determined=gaps[best_n].determined or any(g.determined for g in gaps.values()),
        **_best_finetuned(grid, finetuned, n),
    )


def recommendation_stability(grid: Grid, estimators: Sequence[EstimatorView] = (), *, margin: float = MARGIN,
                             resamples: int = 200, seed: int = 0) -> Stability | None:
    """How often resampled units (with replacement, seeded) recommend the same n."""
    units = grid.units
    if not units:
        return None

    def claim(groups: Sequence[Sequence[Any]]) -> int | None:
        rec = recommend(grid.resampled(groups[0]), estimators, margin=margin)
        return None if rec is None else rec.n

    return stability([units], claim, resamples=resamples, seed=seed)


def _best_finetuned(grid: Grid, finetuned: str, n: int) -> dict[str, Any]:
    """Where fine-tuning does best, and how far the recommended n is from it."""
    cells = {k: s for k in grid.transfer_layers if (s := grid.get(finetuned, k)) is not None}
    if not cells or n not in cells:
        return {}
    best = max(cells, key=lambda k: (cells[k].mean, -k))
    return {"finetune_best_n": best, "finetune_gap": _diff(cells[best], cells[n])}


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
            if e.estimator == name and e.value is not None:
                by_n.setdefault(e.n, []).append(float(e.value))
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
        return f"{d.units} unit{'s' if d.units != 1 else ''}: too few for an interval"
    return f"95% interval {_pts(d.ci_low)} to {_pts(d.ci_high)} over {d.units} units"


def _compare(d: Difference, what: str, other: str) -> str:
    """'<what> beats <other> by +x points (interval)', hedged by the interval."""
    numbers = f"{_pts(d.value)} points, {_interval(d)}"
    if d.ci_low is None or d.ci_high is None:
        return f"whether {what} beats {other} is not determined ({numbers})"
    if d.ci_low > 0:
        return f"{what} beats {other} ({numbers})"
    if d.ci_high < 0:
        return f"{what} is worse than {other} ({numbers})"
    return f"{what} cannot be told apart from {other} ({numbers})"


def _loses(d: Difference | None) -> bool:
    """Whether a difference is below 0 beyond noise (its interval lies below 0)."""
    return d is not None and d.ci_high is not None and d.ci_high < 0


def _layer(n: int, names: Sequence[str]) -> str:
    return f"n={n} ({names[n - 1]})" if 0 < n <= len(names) else f"n={n}"


def _lines(r: Recommendation, names: Sequence[str], warnings: Sequence[str] = ()) -> list[str]:
    out = []
    freeze = "Freeze layer 1 only" if r.n == 1 else f"Freeze layers 1..{r.n}"
    if not r.determined:
        where = (f"{_layer(r.n, names)} has the best mean frozen accuracy, but with {r.gap.units} unit(s) no "
                 "interval says whether another depth is as good (run more split seeds)")
    elif r.n == r.best_n:
        where = f"{_layer(r.n, names)} is the best frozen depth and no deeper one is shown as good ({r.rule})"
    else:
        where = (f"{_layer(r.n, names)} is the deepest frozen transfer shown as good as the best one "
                 f"({_layer(r.best_n, names)}, {_pts(r.gap.value)} points better; {r.rule}); as good: "
                 f"n = {', '.join(map(str, r.within))}")
    if r.stability is not None:
        where += f"; {r.stability.label} under resampling of the units"
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
