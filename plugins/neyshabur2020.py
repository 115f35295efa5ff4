"""The findings of Neyshabur, Sedghi & Zhang (2020), "What is being transferred in transfer
learning?", as a findings plugin (``report --compare neyshabur2020``).

Their block-shuffled target domain (the ``block_shuffle`` data transform) destroys the visual
features above the block's scale; if pre-training still helps there, what it transfers is
not only those features. The paper's P-T (pre-trained, then fine-tuned) is ``AnB+`` at the
deepest tested n (every layer but the classifier copied, everything fine-tuned); its RI-T
(random initialisation) is the target's base network. Every contrast is divided by the
unit's headroom (the base network's distance from chance).

The run's tidy rows do not record a network's data transforms, so the experiments are found by
name, as the plugin's settings say (``clean`` and ``shuffled`` by default, the names in
configs/followups/neyshabur2020.yaml). The paper's effects are read from its figures and not
used as numbers here: both findings are judged on their direction. Not built here: the loss
basin findings (no barrier between two fine-tuned networks, one between two trained from
scratch), which need an evaluator of the straight line between two networks' weights.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Contrast, Finding, Grid, PaperFindings, headroom, hookimpl, unit_values

FOUND_IN = "configs/followups/neyshabur2020.yaml"


class NeyshaburParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clean: str = Field("clean", description="the experiment whose target half is as it is")
    shuffled: str = Field("shuffled", description="the experiment whose target half is block-shuffled")


def _benefit(grid: Grid) -> tuple[dict[Hashable, float], int, int | None]:
    """Per unit, (AnB+ at the deepest tested n - baseB) / headroom; the networks; that n."""
    layers = [n for n in grid.transfer_layers if grid.get("AnB+", n)]
    base = grid.get("baseB", 0)
    if not layers or base is None:
        return {}, 0, None
    n = layers[-1]
    plus = grid.get("AnB+", n)
    assert plus is not None
    return unit_values(plus.by_unit, headroom(grid), minus=base.by_unit), plus.count + base.count, n


def _room(grid: Grid, units: Sequence[Hashable]) -> float:
    room = headroom(grid)
    return math.fsum(room[u] for u in units) / len(units)


class _ByName(Finding):
    found_in = FOUND_IN
    experiments: tuple[str, ...] = ()

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        by_name = {g.experiment: g for g in grids}
        if not all(e in by_name for e in self.experiments):
            return None
        return tuple(by_name[e] for e in self.experiments)


class ShuffledBenefit(_ByName):
    name = "benefit on shuffled targets"
    claim = ("pre-training still helps when the target images are block-shuffled, so low-level statistics, not "
             "only visual features, are transferred (paraphrase of the block-shuffling experiment; not quoted)")
    source = "the block-shuffled domains' accuracy of P-T against RI-T (figures; not used as a number)"
    needs = "baseB and AnB+ networks of the shuffled experiment in at least 3 units"

    def __init__(self, shuffled: str = "shuffled") -> None:
        self.experiments = (shuffled,)

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        values, networks, n = _benefit(grids[0])
        if not values:
            return None
        return Contrast((tuple(values.values()),), _room(grids[0], list(values)), networks,
                        f"AnB+ (n={n}) - baseB, shuffled targets", n)


class SmallerWhenShuffled(_ByName):
    name = "smaller benefit when shuffled"
    claim = ("the benefit of pre-training shrinks as the target's visual features are destroyed (smaller block "
             "sizes), while not vanishing (paraphrase; not quoted)")
    source = "the benefit against the block size (figures; not used as a number)"
    needs = "baseB and AnB+ networks of both experiments in at least 3 units each"

    def __init__(self, clean: str = "clean", shuffled: str = "shuffled") -> None:
        self.experiments = (clean, shuffled)

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        (clean, c_net, n), (shuffled, s_net, _) = _benefit(grids[0]), _benefit(grids[1])
        if not clean or not shuffled:
            return None
        room = (_room(grids[0], list(clean)) + _room(grids[1], list(shuffled))) / 2
        return Contrast((tuple(clean.values()), tuple(shuffled.values())), room, c_net + s_net,
                        "AnB+ - baseB: clean - shuffled targets (Welch)", n)


class Neyshabur2020(PaperFindings[NeyshaburParams]):
    """Two findings of Neyshabur, Sedghi & Zhang (2020) on block-shuffled targets."""

    description = "Neyshabur, Sedghi & Zhang (2020): what pre-training transfers to block-shuffled targets"
    paper = "Neyshabur, Sedghi & Zhang (2020), What is being transferred in transfer learning?"
    shape = (f"two experiments on the same split seeds with baseB and AnB+: `clean`, and `shuffled` whose half B "
             f"is block-shuffled (block_shuffle transform); {FOUND_IN}")
    Params = NeyshaburParams

    def findings(self) -> Sequence[Finding]:
        p = self.params
        return (ShuffledBenefit(p.shuffled), SmallerWhenShuffled(p.clean, p.shuffled))


@hookimpl
def register_findings(register) -> None:
    register("neyshabur2020", Neyshabur2020)
