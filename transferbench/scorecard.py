"""The reproduction scorecard: the six findings of Yosinski et al. (2014), judged on a run.

Absolute accuracies of a toy task say nothing about ImageNet's, so each finding is a
comparison *within* the run (a treatment against its own unit's base, a split against
another), on the scale a run and the paper share (a fraction of each unit's headroom, see
:mod:`transferbench.findings`), with its interval over independent units, against the same
comparison on the paper's published networks. :func:`scorecard` judges them all with
:func:`transferbench.findings.judge`:

* ``control``: BnB+ matches baseB (an equivalence test within a margin: half the smallest
  effect it guards, the fine-tuning boost);
* ``co-adaptation``: BnB dips below baseB at the middle third of the layers *and* recovers at
  the top third (two parts, both needed: a pipeline that only degrades would not pass);
* ``specificity``: AnB falls below BnB at the deepest layer;
* ``fine-tuning boost``: AnB+ is above baseB, averaged over every n;
* ``dissimilar split``: the dissimilar split falls further (relative to its base) than random
  halves at the deepest shared layer;
* ``random weights``: frozen random layers fall further than transferred ones, at the first
  shared layer above 1.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache

from .analysis import Grid, build_grids
from .claims import PaperFindings
from .findings import Contrast, Finding, FindingResult, headroom, judge, nearest, unit_values
from .interfaces import NoParams
from .paperdata import load_paper
from .validity import CheckResult

__all__ = ["CONTROL_SHARE", "FINDINGS", "PAPER_ALIAS", "Yosinski2014", "default_margin", "judge_paper", "scorecard"]

#: The control's default margin: this share of the smallest effect it guards (the boost).
CONTROL_SHARE = 0.5


def _thirds(layers: Sequence[int]) -> tuple[list[int], list[int]]:
    """The middle and the top third of the tested layers (n = 3-5 and 6-7 of the paper's 1-7)."""
    k = len(layers) // 3
    return list(layers[k:len(layers) - k]), list(layers[len(layers) - k:]) if k else []


def _random_halves(grids: Sequence[Grid]) -> Grid | None:
    return next((g for g in grids if g.pooled and g.get("baseB", 0) and any(
        g.get("AnB", n) for n in g.transfer_layers)), None)


def _random_weights(grids: Sequence[Grid]) -> Grid | None:
    return next((g for g in grids if any(t not in g.bases and g.sources.get(t) is None for t in g.treatments)), None)


def _dissimilar(grids: Sequence[Grid]) -> Grid | None:
    skip = (_random_halves(grids), _random_weights(grids))
    return next((g for g in grids if g not in skip and not g.pooled and any(
        t not in g.bases and g.sources.get(t) not in (None, g.targets.get(t)) for t in g.treatments)), None)


def _mean_over(grid: Grid, treatment: str, layers: Sequence[int]) -> dict[Hashable, float]:
    return grid.unit_means(treatment, layers)


def _contrast(values: dict[Hashable, float], room: dict[Hashable, float], networks: int, where: str,
              n: int | None = None, layers: Sequence[int] = ()) -> Contrast | None:
    if not values:
        return None
    mean_room = math.fsum(room[u] for u in values) / len(values)
    return Contrast((tuple(values.values()),), mean_room, networks, where, n, tuple(layers))


class _RandomHalves(Finding):
    """A finding judged on the random-halves experiment alone."""

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        g = _random_halves(grids)
        return None if g is None else (g,)


class Control(_RandomHalves):
    name = "control"
    claim = "BnB+ matches baseB (.627 vs .625): training the same network again does not help"
    source = "Figure 2 (BnB+ at every n against baseB), the paper's networks"
    kind = "equivalence"
    needs = "baseB and BnB+ networks in at least 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        room = headroom(g)
        plus = _mean_over(g, "BnB+", g.transfer_layers)
        base = g.get("baseB", 0)
        if base is None:
            return None
        values = unit_values(plus, room, minus=base.by_unit)
        return _contrast(values, room, g.networks("BnB+", g.transfer_layers) + base.count,
                         "BnB+ - baseB over every n", layers=g.transfer_layers)


class Dip(_RandomHalves):
    name = "dip"
    claim = "BnB falls below baseB at the middle layers (n = 3-5)"
    source = "Figure 2 (BnB at n = 3-5 against baseB), the paper's networks"
    needs = "baseB and BnB networks at the middle third of the layers in at least 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        middle, _ = _thirds(g.transfer_layers)
        base = g.get("baseB", 0)
        if base is None or not middle:
            return None
        room = headroom(g)
        values = unit_values(base.by_unit, room, minus=_mean_over(g, "BnB", middle))
        return _contrast(values, room, g.networks("BnB", middle) + base.count,
                         f"baseB - BnB over {_span(middle)}", layers=middle)


class Recovery(_RandomHalves):
    name = "recovery"
    claim = "BnB recovers at the top layers (n = 6-7), above its middle-layer dip"
    source = "Figure 2 (BnB at n = 6-7 against n = 3-5), the paper's networks"
    needs = "BnB networks at the middle and the top third of the layers (at least 3 tested n) in 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        middle, top = _thirds(g.transfer_layers)
        if not middle or not top:
            return None
        room = headroom(g)
        values = unit_values(_mean_over(g, "BnB", top), room, minus=_mean_over(g, "BnB", middle))
        return _contrast(values, room, g.networks("BnB", middle + top),
                         f"BnB over {_span(top)} - BnB over {_span(middle)}", layers=middle + top)


class CoAdaptation(_RandomHalves):
    name = "co-adaptation"
    claim = "BnB dips below baseB at the middle layers (n = 3-5) and recovers at the top (n = 6-7): fragile " \
            "co-adaptation of middle layers"
    source = "Figure 2, the paper's networks"

    def parts(self) -> tuple[Finding, ...]:
        return (Dip(), Recovery())

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        return None  # judged by its parts

    def unit_rows(self, grids: tuple[Grid, ...]) -> list[tuple[float, ...]]:
        dip, rec = (p.contrast(grids) for p in self.parts())
        if dip is None or rec is None:
            return []
        g = grids[0]
        middle, top = _thirds(g.transfer_layers)
        room, base = headroom(g), g.get("baseB", 0)
        mid = _mean_over(g, "BnB", middle)
        tops = _mean_over(g, "BnB", top)
        assert base is not None
        units = [u for u in mid if u in tops and u in room and u in base.by_unit]
        return [((base.by_unit[u] - mid[u]) / room[u], (tops[u] - mid[u]) / room[u]) for u in units]


class Specificity(_RandomHalves):
    name = "specificity"
    claim = "AnB falls below BnB at the top layers (n = 6-7): features specific to A"
    source = "Figure 2 (BnB - AnB at the same n), the paper's networks"
    needs = "BnB and AnB networks at the deepest layer in at least 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        layers = [n for n in g.transfer_layers if g.get("BnB", n) and g.get("AnB", n)]
        n = nearest(layers, like.n) if like is not None else (layers[-1] if layers else None)
        if n is None:
            return None
        bnb, anb = g.get("BnB", n), g.get("AnB", n)
        assert bnb is not None and anb is not None
        values = unit_values(bnb.by_unit, headroom(g), minus=anb.by_unit)
        return _contrast(values, headroom(g), bnb.count + anb.count, f"BnB - AnB at n={n}", n)


class Boost(_RandomHalves):
    name = "fine-tuning boost"
    claim = "AnB+ is above baseB: fine-tuning transferred features helps (+1.6 points over n = 1-7, Table 1)"
    source = "Table 1 (AnB+ - baseB over n = 1-7), recomputed per unit from the paper's networks"
    invalidated_by = Finding.invalidated_by | {"convergence"}  # extra training alone could make it
    needs = "baseB and AnB+ networks in at least 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        base = g.get("baseB", 0)
        plus = _mean_over(g, "AnB+", g.transfer_layers)
        if base is None:
            return None
        room = headroom(g)
        values = unit_values(plus, room, minus=base.by_unit)
        return _contrast(values, room, g.networks("AnB+", g.transfer_layers) + base.count,
                         "AnB+ - baseB over every n", layers=g.transfer_layers)


def _drops(grid: Grid, names: Sequence[str], n: int) -> tuple[dict[Hashable, float], float, int]:
    """Per unit, (base - T(n)) / headroom for every treatment named (each against its own
    direction's base); the units' mean headroom; the networks."""
    values: dict[Hashable, float] = {}
    rooms: list[float] = []
    networks = 0
    for name in names:
        base_name = next((b for b in grid.bases if grid.targets.get(b) == grid.targets.get(name)), None)
        cell, base = grid.get(name, n), grid.base_for(name)
        if base_name is None or cell is None or base is None:
            continue
        room = headroom(grid, base_name)
        values.update(unit_values(base.by_unit, room, minus=cell.by_unit))
        rooms += [room[u] for u in cell.by_unit if u in room]
        networks += cell.count + base.count
    return values, (math.fsum(rooms) / len(rooms) if rooms else 0.0), networks


class _AgainstRandomHalves(Finding):
    """A finding that compares another experiment's drop from base with random halves' AnB."""

    def other(self, grids: Sequence[Grid]) -> Grid | None:
        raise NotImplementedError

    def treatments(self, grid: Grid) -> list[str]:
        raise NotImplementedError

    def layer(self, shared: Sequence[int]) -> int | None:
        raise NotImplementedError

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        random, other = _random_halves(grids), self.other(grids)
        return None if random is None or other is None else (other, random)

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        other, random = grids
        names = self.treatments(other)
        shared = [n for n in other.transfer_layers if n in random.transfer_layers and random.get("AnB", n)
                  and any(other.get(t, n) for t in names)]
        n = nearest(shared, like.n) if like is not None else self.layer(shared)
        if n is None:
            return None
        mine, room_a, nets_a = _drops(other, names, n)
        theirs, room_b, nets_b = _drops(random, ["AnB"], n)
        if not mine or not theirs:
            return None
        return Contrast((tuple(mine.values()), tuple(theirs.values())), (room_a + room_b) / 2, nets_a + nets_b,
                        f"drop from base at n={n}, {other.experiment} - {random.experiment} AnB", n)


class Dissimilar(_AgainstRandomHalves):
    name = "dissimilar split"
    claim = "the dissimilar split falls further at the top layer than random halves (man-made/natural against " \
            "random halves, Figure 3)"
    source = "Figure 3 (drop from base at n = 7), the paper's networks"
    needs = "3 units of each split with networks at a shared layer"

    def other(self, grids: Sequence[Grid]) -> Grid | None:
        return _dissimilar(grids)

    def treatments(self, grid: Grid) -> list[str]:
        return [t for t in grid.treatments if t not in grid.bases and grid.sources.get(t) not in
                (None, grid.targets.get(t))]

    def layer(self, shared: Sequence[int]) -> int | None:
        return shared[-1] if shared else None


class RandomWeights(_AgainstRandomHalves):
    name = "random weights"
    claim = "random frozen weights fall further with n than transferred ones (near chance by n = 3-5, Figure 3)"
    source = "Figure 3 (drop from base of random frozen layers against AnB), the paper's networks"
    needs = "3 units of each experiment with networks at a shared layer above 1"

    def other(self, grids: Sequence[Grid]) -> Grid | None:
        return _random_weights(grids)

    def treatments(self, grid: Grid) -> list[str]:
        return [t for t in grid.treatments if t not in grid.bases and grid.sources.get(t) is None]

    def layer(self, shared: Sequence[int]) -> int | None:
        return next((n for n in shared if n > 1), None)


def _span(layers: Sequence[int]) -> str:
    return f"n={layers[0]}" if len(layers) == 1 else f"n={layers[0]}-{layers[-1]}"


#: The paper's six findings, in the order the report prints them.
FINDINGS: tuple[Finding, ...] = (Control(), CoAdaptation(), Specificity(), Boost(), Dissimilar(), RandomWeights())


def default_margin(paper: Sequence[Grid], share: float = CONTROL_SHARE) -> float | None:
    """The control's default margin on the shared scale: ``share`` of the paper's boost (the
    smallest effect the control guards), read from the paper's networks."""
    located = Boost().locate(paper)
    c = Boost().contrast(located) if located else None
    return None if c is None else share * abs(c.effect)


class Yosinski2014(PaperFindings[NoParams]):
    """The six findings of Yosinski et al. (2014), their effects recomputed from the paper's
    published networks (the ``yosinski2014`` findings plugin; ``--compare paper`` names it too)."""

    description = "Yosinski et al. (2014): six findings, effects recomputed from the paper's networks"
    paper = "Yosinski, Clune, Bengio & Lipson (2014), How transferable are features in deep neural networks?"
    shape = ("random halves (baseB, BnB, BnB+, AnB, AnB+), a dissimilar split (AnB) and random frozen weights "
             "(configs/quickstart.yaml has all three)")

    def findings(self) -> Sequence[Finding]:
        return FINDINGS

    def reference(self, metric: str, pool: bool | None) -> Sequence[Grid]:
        return _paper_grids(metric, pool)

    def default_margin(self, reference: Sequence[Grid]) -> float | None:
        return default_margin(reference)


@lru_cache(maxsize=4)
def _paper_grids(metric: str, pool: bool | None) -> tuple[Grid, ...]:
    return tuple(build_grids(load_paper(), metric, pool))


#: ``report --compare paper``: the name it stands for (0.3's only comparison).
PAPER_ALIAS = "yosinski2014"


def judge_paper(name: str, plugin: PaperFindings, grids: Sequence[Grid], checks: Sequence[CheckResult] = (), *,
                metric: str = "top1", pool: bool | None = None, margin: float | None = None, resamples: int = 200,
                seed: int = 0) -> list[FindingResult]:
    """Every finding of one findings plugin judged on a run's grids.

    Args:
        name: the plugin's registered name (each result's ``paper``).
        plugin: the findings plugin.
        grids: the run's grids.
        checks: the run's validity checks (their warnings become caveats).
        metric, pool: how the paper's own networks are read, when the plugin has them.
        margin: a control's margin on the shared scale, for controls that state none (default:
            the plugin's :meth:`~transferbench.claims.PaperFindings.default_margin`).
    """
    reference = plugin.reference(metric, pool)
    fallback = plugin.default_margin(reference) if margin is None else margin
    out = []
    for f in plugin.findings():
        m = (f.margin if f.margin is not None else fallback) if f.kind == "equivalence" else None
        r = judge(f, grids, reference, checks, margin=m, resamples=resamples, seed=seed)
        out.append(replace(r, paper=name, parts=tuple(replace(p, paper=name) for p in r.parts)))
    return out


def scorecard(grids: Sequence[Grid], papers: Mapping[str, PaperFindings], checks: Sequence[CheckResult] = (), *,
              metric: str = "top1", pool: bool | None = None, margin: float | None = None, resamples: int = 200,
              seed: int = 0) -> list[FindingResult]:
    """The findings of every plugin in ``papers`` (name -> plugin, in the order given) judged
    on a run's grids, one scorecard across papers.

    Args:
        grids: the run's grids.
        papers: the findings plugins to judge (``yosinski2014``: the paper's six findings).
        checks: the run's validity checks: their warnings are the rows' caveats, and
            provenance, completeness, input scale (and, for Yosinski's boost, convergence)
            make a row not determined.
        metric, pool: how a paper's own networks are read.
        margin: the margin of controls that state none, on the shared scale (default: each
            plugin's own; Yosinski's is :func:`default_margin`).
    """
    return [r for name, plugin in papers.items()
            for r in judge_paper(name, plugin, grids, checks, metric=metric, pool=pool, margin=margin,
                                 resamples=resamples, seed=seed)]
