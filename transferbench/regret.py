"""Validation by regret: what an advice gives up against the best regime of an exhaustive sweep.

A *regime* is one way to train a network on the target: freeze layers 1..n and train the
rest (``frozen``), copy them and fine-tune everything (``finetune``), fine-tune only block k
(``surgical``), a linear probe then fine-tuning (``lp_ft``), or train from scratch
(``scratch``). An exhaustive *sweep* trained every regime (every n, every k) in every unit
of the target. An *advice* names one regime per unit, and says what compute it spent to
choose and train it.

**Regret** of an advice in a unit is the accuracy of the sweep's best regime minus the
accuracy of the regime the advice chose, in top-1 points. The best regime is the one with
the highest mean over the units (a choice made with the whole sweep in hand), not each
unit's own maximum: a maximum over twenty noisy cells is biased upward by the noise alone,
so no advice could reach it. Regret can then be negative in a unit (the advice's choice did
better there than the best on average). Its interval is over independent units (a split
seed and a direction: :mod:`transferbench.stats`), each unit's own difference first.

**Compute** is in the sweep's own unit (FLOPs): an advice's fraction in a unit is what it
spent there divided by what the sweep spent there (every regime trained once). A fixed
heuristic spends the training of the one regime it names; today's recommendation
(:func:`transferbench.recommend.recommend`) reads the whole sweep, so it spends all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from .analysis import Grid, Stat
from .recommend import recommend
from .stats import Difference, over_units

__all__ = ["HEURISTICS", "KINDS", "Advice", "Regime", "RegretRow", "Sweep", "fixed", "heuristics", "overall", "regret",
           "within_noise"]

#: The kinds of regime, in the order tables list them.
KINDS = ("frozen", "finetune", "surgical", "lp_ft", "scratch")


@dataclass(frozen=True, order=True)
class Regime:
    """One way to train on the target: a kind of :data:`KINDS` and its n (or k; 0 for scratch)."""

    kind: str
    n: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown regime kind {self.kind!r}; known: {', '.join(KINDS)}")

    def __str__(self) -> str:
        letter = "k" if self.kind == "surgical" else "n"
        return self.kind if self.kind == "scratch" else f"{self.kind} {letter}={self.n}"


@dataclass(frozen=True)
class Sweep:
    """An exhaustive sweep of one target.

    Attributes:
        target: the target's name.
        accuracy: regime -> unit -> top-1 accuracy (a fraction) of the regime's network there.
        cost: regime -> compute (FLOPs) of training one network of the regime.
        num_layers: L, the architecture's layers with the classifier.
    """

    target: str
    accuracy: Mapping[Regime, Mapping[Hashable, float]]
    cost: Mapping[Regime, float]
    num_layers: int

    def __post_init__(self) -> None:
        if not self.accuracy:
            raise ValueError(f"sweep {self.target!r} has no regime")
        missing = [str(r) for r in self.accuracy if r not in self.cost]
        if missing:
            raise ValueError(f"sweep {self.target!r}: no cost for {', '.join(missing)}")

    @property
    def units(self) -> list[Hashable]:
        """The units where every regime has a network (the only ones a regret can be read in)."""
        sets = [set(by_unit) for by_unit in self.accuracy.values()]
        return sorted(set.intersection(*sets), key=str)

    @property
    def total_cost(self) -> float:
        """What the sweep spent in one unit: every regime trained once."""
        return math.fsum(self.cost[r] for r in self.accuracy)

    def mean(self, regime: Regime, units: Sequence[Hashable] | None = None) -> float:
        """``regime``'s mean accuracy over ``units`` (default: the sweep's units)."""
        units = self.units if units is None else units
        return math.fsum(self.accuracy[regime][u] for u in units) / len(units)

    def _best_over(self, units: Sequence[Hashable]) -> Regime:
        """The regime with the highest mean over ``units`` (ties: the cheaper, then the first)."""
        return max(sorted(self.accuracy), key=lambda r: (self.mean(r, units), -self.cost[r]))

    @property
    def best(self) -> Regime:
        """The regime with the highest mean accuracy over the units (ties: the cheaper, then the first)."""
        return self._best_over(self.units)

    def best_without(self, unit: Hashable) -> Regime:
        """The best regime by its mean over the units other than ``unit`` (ties as :attr:`best`):
        a reference for ``unit`` chosen without looking at it."""
        return self._best_over([u for u in self.units if u != unit])

    def regimes(self, kind: str) -> list[Regime]:
        """The sweep's regimes of one kind, by n."""
        return sorted(r for r in self.accuracy if r.kind == kind)


@dataclass(frozen=True)
class Advice:
    """What an advice chose in each unit, and what it spent there.

    Attributes:
        name: what the table calls it.
        choice: unit -> the regime it advises.
        spent: unit -> compute (FLOPs) it spent there: choosing, and training its choice.
        reads_sweep: whether it read the sweep's results (today's recommendation does).
    """

    name: str
    choice: Mapping[Hashable, Regime]
    spent: Mapping[Hashable, float]
    reads_sweep: bool = False


@dataclass(frozen=True)
class RegretRow:
    """One advice against one sweep (or several: :func:`overall`).

    Attributes:
        advice: its name.
        regret: best minus chosen, in top-1 points, over the units, with its 95% interval.
        fraction: its compute as a fraction of the sweep's, the mean over the units.
        choices: regime -> in how many units it was chosen.
        reads_sweep: whether it read the sweep's results.
        per_unit: unit -> its regret there (points).
        loo_per_unit: unit -> its regret there against :meth:`Sweep.best_without` the unit
            (points; empty with one unit): free of the winner's curse that choosing the
            reference on the same units adds to every row (see :attr:`loo`).
    """

    advice: str
    regret: Difference
    fraction: float
    choices: dict[Regime, int] = field(default_factory=dict)
    reads_sweep: bool = False
    per_unit: dict[Hashable, float] = field(default_factory=dict, repr=False)
    loo_per_unit: dict[Hashable, float] = field(default_factory=dict, repr=False)

    @property
    def loo(self) -> Difference | None:
        """The regret against a reference chosen on the other units (leave one unit out), over
        the units. The best regime by its mean over the very units it is then read on is the
        maximum of many noisy means, lifted by their noise (the winner's curse), so the plain
        regret of even the truly best rule is above zero; this one is not lifted that way."""
        return over_units(self.loo_per_unit.values()) if self.loo_per_unit else None


def regret(sweep: Sweep, advice: Advice) -> RegretRow:
    """``advice``'s regret against ``sweep``'s best regime, per unit and over the units.

    Raises:
        ValueError: the sweep has no complete unit, or the advice misses a unit or names a
            regime the sweep did not train.
    """
    units = sweep.units
    if not units:
        raise ValueError(f"sweep {sweep.target!r} has no unit where every regime trained")
    best = sweep.accuracy[sweep.best]
    per_unit: dict[Hashable, float] = {}
    loo: dict[Hashable, float] = {}
    fractions = []
    for u in units:
        if u not in advice.choice or u not in advice.spent:
            raise ValueError(f"advice {advice.name!r} says nothing for unit {u!r} of {sweep.target!r}")
        chosen = advice.choice[u]
        if chosen not in sweep.accuracy:
            raise ValueError(f"advice {advice.name!r} chose {chosen}, which sweep {sweep.target!r} did not train")
        per_unit[u] = 100 * (best[u] - sweep.accuracy[chosen][u])
        if len(units) > 1:
            loo[u] = 100 * (sweep.accuracy[sweep.best_without(u)][u] - sweep.accuracy[chosen][u])
        fractions.append(advice.spent[u] / sweep.total_cost)
    choices: dict[Regime, int] = {}
    for u in units:
        choices[advice.choice[u]] = choices.get(advice.choice[u], 0) + 1
    return RegretRow(advice.name, over_units(per_unit[u] for u in units), math.fsum(fractions) / len(fractions),
                     choices, advice.reads_sweep, per_unit, loo)


def overall(rows: Sequence[RegretRow]) -> RegretRow:
    """One advice's rows over several targets as one: regret over every unit of every target
    (units of different targets are independent; targets with as many units weigh alike),
    the compute fraction averaged likewise."""
    if not rows:
        raise ValueError("overall needs at least one row")
    values = [v for r in rows for v in r.per_unit.values()]
    weights = [len(r.per_unit) for r in rows]
    fraction = math.fsum(r.fraction * w for r, w in zip(rows, weights)) / sum(weights)
    choices: dict[Regime, int] = {}
    for r in rows:
        for regime, count in r.choices.items():
            choices[regime] = choices.get(regime, 0) + count
    per_unit: dict[Hashable, float] = {(i, u): v for i, r in enumerate(rows) for u, v in r.per_unit.items()}
    loo: dict[Hashable, float] = {(i, u): v for i, r in enumerate(rows) for u, v in r.loo_per_unit.items()}
    return RegretRow(rows[0].advice, over_units(values), fraction, choices, any(r.reads_sweep for r in rows),
                     per_unit, loo)


# --------------------------------------------------------------------------- fixed heuristics


def fixed(name: str, regime: Regime, sweep: Sweep) -> Advice:
    """A rule that names ``regime`` in every unit without looking: it spends one training of it."""
    return Advice(name, {u: regime for u in sweep.units}, {u: sweep.cost[regime] for u in sweep.units})


def within_noise(sweep: Sweep, *, margin: float = 0.01) -> Advice:
    """Today's recommendation (:func:`transferbench.recommend.recommend`) on the whole sweep:
    the deepest frozen n within noise of the best frozen n; fine-tuned at that n when
    fine-tuning beats the frozen transfer there beyond noise (its interval above 0); from
    scratch when both the frozen and the fine-tuned transfer lose to it beyond noise. It
    reads every result of the sweep, so it spends all of the sweep's compute."""
    units = sweep.units
    grid = Grid(sweep.target, "", "top1", False, num_layers=sweep.num_layers,
                targets={"XnB": "B", "XnB+": "B", "baseB": "B"}, sources={"XnB": "X", "XnB+": "X", "baseB": None},
                bases={"baseB"}, treatments=["baseB", "XnB", "XnB+"])
    for treatment, kind in (("XnB", "frozen"), ("XnB+", "finetune"), ("baseB", "scratch")):
        for r in sweep.regimes(kind):
            grid.cells[(treatment, r.n)] = Stat.of([sweep.accuracy[r][u] for u in units], units)
    rec = recommend(grid, margin=margin)
    if rec is None:
        raise ValueError(f"sweep {sweep.target!r} has no frozen transfer: today's recommendation needs one")

    def beats(d: Difference | None) -> bool:
        return d is not None and d.ci_low is not None and d.ci_low > 0

    def loses(d: Difference | None) -> bool:
        return d is not None and d.ci_high is not None and d.ci_high < 0

    regime = Regime("frozen", rec.n)
    if beats(rec.finetune_vs_frozen):
        regime = Regime("finetune", rec.n)
    if loses(rec.frozen_vs_base) and (rec.finetune_vs_base is None or loses(rec.finetune_vs_base)) \
            and sweep.regimes("scratch"):
        regime = Regime("scratch")
    return Advice("the deepest n within noise (today's recommend, full sweep)", {u: regime for u in units},
                  {u: sweep.total_cost for u in units}, reads_sweep=True)


#: The fixed heuristics a validation lists: name -> the regime it names for L layers.
HEURISTICS: dict[str, Callable[[int], Regime]] = {
    "fine-tune everything": lambda L: Regime("finetune", L - 1),
    "fine-tune, last hidden layer new": lambda L: Regime("finetune", L - 2),
    "freeze the first half": lambda L: Regime("frozen", L // 2),
    "linear probe on the penultimate layer": lambda L: Regime("frozen", L - 1),
}


def heuristics(sweep: Sweep) -> list[Advice]:
    """The fixed heuristics the sweep trained (each as :func:`fixed`), then today's
    recommendation on the full sweep (:func:`within_noise`)."""
    out = [fixed(name, rule(sweep.num_layers), sweep) for name, rule in HEURISTICS.items()
           if rule(sweep.num_layers) in sweep.accuracy]
    if sweep.regimes("frozen"):
        out.append(within_noise(sweep))
    return out
