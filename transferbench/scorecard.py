"""A reproduction scorecard: the paper's findings, each reproduced, not, or not determined.

Absolute accuracies of a toy task say nothing about ImageNet's, so the scorecard compares
shapes: each finding is a comparison *within* the run (a treatment against its own base, a
split against another), judged with the run's own 95% intervals, beside the paper's number.
A finding whose comparison cannot be made (a missing experiment or cell, too few networks
for an interval) is "not determined", never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .analysis import Difference, Grid, Stat, diff
from .validity import CheckResult

__all__ = ["Finding", "scorecard"]

Verdict = Literal["reproduced", "not reproduced", "not determined"]


@dataclass(frozen=True)
class Finding:
    """One finding of the paper, and what the run says about it.

    Attributes:
        name: short name (``control``, ``co-adaptation``, ...).
        paper: the paper's finding, with its number.
        run: the run's comparison, with its numbers and interval.
        verdict: reproduced, not reproduced, or not determined.
        experiment: the experiment(s) it was judged on.
    """

    name: str
    paper: str
    run: str
    verdict: Verdict
    experiment: str = ""


def _pts(d: Difference) -> str:
    ci = "" if d.ci_low is None else f" [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]"
    return f"{100 * d.value:+.1f} points{ci}"


def _enough(*stats: Stat | None) -> bool:
    return all(s is not None and s.count >= 3 for s in stats)


def _experiments(grids: Sequence[Grid]) -> tuple[Grid | None, Grid | None, Grid | None]:
    """The random-halves, dissimilar-split and random-weights experiments of a run, if any."""
    random = next((g for g in grids if g.pooled and g.get("baseB", 0) and any(
        g.get("AnB", n) for n in g.transfer_layers)), None)
    weights = next((g for g in grids if any(t not in g.bases and g.sources.get(t) is None
                                            for t in g.treatments)), None)
    dissimilar = next((g for g in grids if g is not random and g is not weights and not g.pooled and any(
        t for t in g.treatments if t not in g.bases and g.sources.get(t) not in (None, g.targets.get(t)))), None)
    return random, dissimilar, weights


def _relative_drop(grid: Grid, name: str, n: int) -> Stat | None:
    """(base - T) / base for each network of ``name`` at n, against the mean of its own base."""
    base, cell = grid.base_for(name), grid.get(name, n)
    if base is None or cell is None or base.mean <= 0:
        return None
    return Stat.of((base.mean - v) / base.mean for v in cell.values)


def _verdict(d: Difference, positive: bool = True) -> Verdict:
    if d.ci_low is None:
        return "not determined"
    holds = d.ci_low > 0 if positive else d.ci_high < 0
    return "reproduced" if holds else "not reproduced"


def _control(g: Grid) -> Finding:
    paper = "BnB+ matches baseB (.627 vs .625): extra training alone does not help"
    base, plus = g.get("baseB", 0), g.values("BnB+", g.transfer_layers)
    if not plus or not _enough(base, Stat.of(plus)):
        return Finding("control", paper, "needs >= 3 baseB and BnB+ networks", "not determined", g.experiment)
    d = diff(Stat.of(plus), base)
    within = d.ci_low is not None and d.ci_low <= 0 <= d.ci_high
    return Finding("control", paper, f"BnB+ - baseB = {_pts(d)}", "reproduced" if within else "not reproduced",
                   g.experiment)


def _coadaptation(g: Grid) -> Finding:
    paper = "BnB falls below baseB at middle layers (n = 3-5: fragile co-adaptation)"
    layers = g.transfer_layers
    middle = [n for n in layers if len(layers) // 3 <= layers.index(n) < len(layers) - len(layers) // 3]
    base, selffer = g.get("baseB", 0), g.values("BnB", middle)
    # Every BnB network of the middle layers against baseB, as the boost pools every n (and
    # Table 1 pools its ranges): one comparison, never the best of several layers.
    if not middle or not selffer or not _enough(base, Stat.of(selffer)):
        return Finding("co-adaptation", paper, "needs >= 3 networks in baseB and the middle BnB cells",
                       "not determined", g.experiment)
    d = diff(base, Stat.of(selffer))
    where = f"n={middle[0]}" if len(middle) == 1 else f"n={middle[0]}-{middle[-1]}"
    return Finding("co-adaptation", paper, f"baseB - BnB over {where} = {_pts(d)}", _verdict(d), g.experiment)


def _specificity(g: Grid) -> Finding:
    paper = "AnB falls below BnB at the top layers (n = 6-7: features specific to A)"
    top = g.transfer_layers[-1] if g.transfer_layers else None
    if top is None or not _enough(g.get("BnB", top), g.get("AnB", top)):
        return Finding("specificity", paper, "needs >= 3 networks in BnB and AnB at the top layer",
                       "not determined", g.experiment)
    d = diff(g.get("BnB", top), g.get("AnB", top))  # type: ignore[arg-type]
    return Finding("specificity", paper, f"BnB - AnB at n={top} = {_pts(d)}", _verdict(d), g.experiment)


def _boost(g: Grid) -> Finding:
    paper = "AnB+ is at least baseB: fine-tuning transferred features helps (+1.6 points over n = 1-7)"
    base, plus = g.get("baseB", 0), g.values("AnB+", g.transfer_layers)
    if not plus or not _enough(base, Stat.of(plus)):
        return Finding("fine-tuning boost", paper, "needs >= 3 baseB and AnB+ networks", "not determined",
                       g.experiment)
    d = diff(Stat.of(plus), base)
    # Judged by the interval, like every other finding, never by the sign of a mean within
    # noise (a -0.0 and a +0.3 with the same interval must get the same verdict).
    if d.ci_low is not None and d.ci_low > 0:
        note = "a boost beyond noise"
    elif d.ci_high is not None and d.ci_high < 0:
        note = "AnB+ below baseB"
    else:
        note = "no boost beyond noise; AnB+ is not below baseB either"
    return Finding("fine-tuning boost", paper, f"AnB+ - baseB over all n = {_pts(d)} ({note})", _verdict(d),
                   g.experiment)


def _dissimilar(random: Grid, dis: Grid) -> Finding:
    paper = "the dissimilar split falls further at n = 7 than random halves (man-made/natural 39-46% vs 13%)"
    n = min(random.transfer_layers[-1], dis.transfer_layers[-1]) if random.transfer_layers and dis.transfer_layers \
        else None
    names = [t for t in dis.treatments if t not in dis.bases and dis.sources.get(t) not in (None, dis.targets.get(t))]
    drops = [s for t in names if n is not None and (s := _relative_drop(dis, t, n)) is not None]
    ours = _relative_drop(random, "AnB", n) if n is not None else None
    if not drops or ours is None or not _enough(ours, Stat.of(v for s in drops for v in s.values)):
        return Finding("dissimilar split", paper, "needs >= 3 networks per split at the top layer",
                       "not determined", f"{dis.experiment} vs {random.experiment}")
    theirs = Stat.of(v for s in drops for v in s.values)
    d = diff(theirs, ours)
    return Finding("dissimilar split", paper, f"drop at n={n}: {100 * theirs.mean:.0f}% vs {100 * ours.mean:.0f}% "
                   f"of base; difference {_pts(d)}", _verdict(d), f"{dis.experiment} vs {random.experiment}")


def _random_weights(random: Grid, weights: Grid) -> Finding:
    paper = "random frozen weights fall faster with n than transferred ones (near chance by n = 3-5)"
    name = next(t for t in weights.treatments if t not in weights.bases and weights.sources.get(t) is None)
    shared = [n for n in weights.transfer_layers if n in random.transfer_layers and n > 1]
    for n in shared:
        rw, tr = _relative_drop(weights, name, n), _relative_drop(random, "AnB", n)
        if rw is not None and tr is not None and _enough(rw, tr):
            d = diff(rw, tr)
            return Finding("random weights", paper, f"drop at n={n}: {100 * rw.mean:.0f}% vs AnB "
                           f"{100 * tr.mean:.0f}% of base; difference {_pts(d)}", _verdict(d),
                           f"{weights.experiment} vs {random.experiment}")
    return Finding("random weights", paper, "needs >= 3 networks per cell at a shared n > 1", "not determined",
                   f"{weights.experiment} vs {random.experiment}")


def scorecard(grids: Sequence[Grid], checks: Sequence[CheckResult] = ()) -> list[Finding]:
    """The paper's findings judged on a run's grids (see the module docstring).

    A finding judged on an experiment whose control fails (the ``convergence`` check warns
    that BnB+ beats baseB) says so: its boosts may be extra training, not transfer.
    """
    random, dissimilar, weights = _experiments(grids)
    missing = "not in this run: add an experiment (configs/quickstart.yaml has all three)"
    out = []
    if random is None:
        out += [Finding(name, "", missing, "not determined") for name in
                ("control", "co-adaptation", "specificity", "fine-tuning boost")]
    else:
        boost = _boost(random)
        if any(c.check == "convergence" and c.status == "warn" and c.experiment == random.experiment for c in checks):
            boost = Finding(boost.name, boost.paper, f"{boost.run}; but the control fails: may be extra training",
                            boost.verdict, boost.experiment)
        out += [_control(random), _coadaptation(random), _specificity(random), boost]
    out.append(_dissimilar(random, dissimilar) if random and dissimilar
               else Finding("dissimilar split", "", missing, "not determined"))
    out.append(_random_weights(random, weights) if random and weights
               else Finding("random weights", "", missing, "not determined"))
    return out
