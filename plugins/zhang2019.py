"""The findings of Zhang, Bengio & Singer (2019; JMLR 2022), "Are all layers created equal?",
as a findings plugin (``report --compare zhang2019``).

Their protocol resets one layer of a trained network and evaluates it without any training:
to the layer's own initial weights (``reinit_eval``, re-initialisation) or to a fresh draw
from the initialisation (``rerandomize_eval``, re-randomisation). Every contrast here is a
drop from the unit's own base network (the trained network, nothing reset), divided by that
unit's headroom (its distance from chance): 0 is "nothing lost", 1 is "down to chance".

The paper gives no table of effects for this kind of network; the critical layer's effect is
the abstract's "essentially dropping to random guesses" (all of the headroom), the others are
judged on their direction (re-randomisation) or as an equivalence within a margin chosen here
and stated before any run (robust layers). configs/followups/zhang2019.yaml is the miniature.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from transferbench import Contrast, Finding, Grid, PaperFindings, headroom, hookimpl, unit_values

REINIT = "reinit_eval"
RERANDOM = "rerandomize_eval"
SHAPE = ("base networks and, from each, every tested layer n reset and evaluated untrained: reinit_eval and "
         "rerandomize_eval treatments (source and target the same half; configs/followups/zhang2019.yaml)")


def _treatment(grid: Grid, protocol: str) -> str | None:
    return next((t for t in grid.treatments if grid.protocols.get(t) == protocol), None)


def _drops(grid: Grid, protocol: str, layers: Sequence[int]) -> dict[Hashable, float]:
    """Per unit, (base - the reset network's mean over ``layers``) / headroom."""
    name = _treatment(grid, protocol)
    base = grid.base_for(name) if name else None
    if name is None or base is None:
        return {}
    return unit_values(base.by_unit, headroom(grid), minus=grid.unit_means(name, layers))


def _contrast(values: dict[Hashable, float], grid: Grid, networks: int, where: str,
              layers: Sequence[int]) -> Contrast | None:
    if not values:
        return None
    room = headroom(grid)
    return Contrast((tuple(values.values()),), math.fsum(room[u] for u in values) / len(values), networks, where,
                    layers=tuple(layers))


def _top_third(layers: Sequence[int]) -> list[int]:
    """The top third of the tested layers (n = 6-7 of 1-7), at least the deepest one."""
    return list(layers[len(layers) - max(1, len(layers) // 3):])


class _Reset(Finding):
    """A finding judged on the experiment that resets layers by ``reinit_eval``."""

    needs = "baseB and reinit_eval networks in at least 3 units"
    found_in = "configs/followups/zhang2019.yaml"
    protocols: tuple[str, ...] = (REINIT,)

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        g = next((g for g in grids if all(_treatment(g, p) for p in self.protocols)), None)
        return None if g is None else (g,)

    def layers(self, grid: Grid) -> list[int]:
        name = _treatment(grid, self.protocols[0])
        return [n for n in grid.transfer_layers if name and grid.get(name, n)]


class FirstLayerCritical(_Reset):
    name = "first layer critical"
    claim = ("re-initialising the lowest layer drops the network to chance (paraphrase; the abstract: "
             "\"re-initializing critical layers vastly degrades the performance of the network with test error "
             "essentially dropping to random guesses\")")
    source = "abstract (a critical layer's reset falls to chance: all of the headroom)"
    effect = 1.0
    needs = "baseB and reinit_eval networks at n=1 in at least 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        if 1 not in self.layers(g):
            return None
        name = _treatment(g, REINIT)
        assert name is not None
        return _contrast(_drops(g, REINIT, [1]), g, g.networks(name, [1]), f"base - {name} at n=1", [1])


class UpperLayersRobust(_Reset):
    name = "upper layers robust"
    claim = ("\"Resetting the robust layers to their initial values does not result in adverse decline in "
             "performance\" (abstract); here: the top third of the layers")
    source = "abstract (no number: an equivalence within a margin of 10% of headroom, chosen here before any run)"
    kind = "equivalence"
    margin = 0.10

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        layers = self.layers(g)
        if len(layers) < 2:
            return None
        top = _top_third(layers)
        name = _treatment(g, REINIT)
        assert name is not None
        return _contrast(_drops(g, REINIT, top), g, g.networks(name, top), f"base - {name} over {_span(top)}", top)


class RerandomizationWorse(_Reset):
    name = "re-randomisation worse"
    claim = ("re-randomising a layer (a fresh draw from the initialisation) is more damaging than re-initialising it "
             "to its own initial weights (paraphrase of the paper's comparison of the two robustness measures; "
             "not quoted)")
    source = "the paper's re-randomisation results (no number used: judged on the direction)"
    needs = "reinit_eval and rerandomize_eval networks at the same n in at least 3 units"
    protocols = (REINIT, RERANDOM)

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        reinit, rerandom = _treatment(g, REINIT), _treatment(g, RERANDOM)
        assert reinit is not None and rerandom is not None
        layers = [n for n in g.transfer_layers if g.get(reinit, n) and g.get(rerandom, n)]
        if not layers:
            return None
        values = unit_values(g.unit_means(reinit, layers), headroom(g), minus=g.unit_means(rerandom, layers))
        return _contrast(values, g, g.networks(reinit, layers) + g.networks(rerandom, layers),
                         f"{reinit} - {rerandom} over {_span(layers)}", layers)


def _span(layers: Sequence[int]) -> str:
    return f"n={layers[0]}" if len(layers) == 1 else f"n={layers[0]}-{layers[-1]}"


class Zhang2019(PaperFindings):
    """Three findings of Zhang, Bengio & Singer (2019) on resetting one layer after training."""

    description = "Zhang, Bengio & Singer (2019): re-initialisation and re-randomisation robustness of layers"
    paper = "Zhang, Bengio & Singer (2019; JMLR 2022), Are all layers created equal?"
    shape = SHAPE

    def findings(self) -> Sequence[Finding]:
        return (FirstLayerCritical(), UpperLayersRobust(), RerandomizationWorse())


@hookimpl
def register_findings(register) -> None:
    register("zhang2019", Zhang2019)
