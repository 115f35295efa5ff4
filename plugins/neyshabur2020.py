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
used as numbers here: both findings are judged on their direction.

The basin findings read the ``loss_barrier`` evaluator (plugins/evaluators.py) of an experiment
(``basin`` by default, configs/followups/neyshabur2020-basin.yaml) on two pairs of networks per
unit: two fine-tuned from one source (``AnB+`` and its replica; label ``finetuned``) and two
trained from scratch (``baseB`` and a ``scratch`` treatment; label ``scratch``). Each is read on
the top-1 barrier (the largest fall of top-1 below the straight line between the end points'
accuracies, in points of top-1) divided by the unit's headroom, the scale every finding shares.
The margin of "one basin" (5% of headroom) was fixed before any run: the paper gives no number.
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
    basin: str = Field("basin", description="the experiment with the loss_barrier evaluations")
    finetuned: str = Field("finetuned",
                           description="the label of the evaluation of two fine-tuned networks of one source")
    scratch: str = Field("scratch", description="the label of the evaluation of two networks trained from scratch")


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


BARRIER = "top1_barrier"
BASIN_IN = "configs/followups/neyshabur2020-basin.yaml"


def _barriers(grid: Grid, label: str) -> tuple[dict[Hashable, float], int | None]:
    """Per unit, the top-1 barrier of evaluation ``label`` at the deepest n that has it."""
    layers = sorted(n for name, n in grid.measures if name == f"{label}.{BARRIER}")
    if not layers:
        return {}, None
    stat = grid.measure(f"{label}.{BARRIER}", layers[-1])
    assert stat is not None
    return dict(stat.by_unit), layers[-1]


class _Basin(_ByName):
    found_in = BASIN_IN

    def __init__(self, basin: str = "basin", finetuned: str = "finetuned", scratch: str = "scratch") -> None:
        self.experiments = (basin,)
        self.labels = (finetuned, scratch)


class FinetunedOneBasin(_Basin):
    name = "fine-tuned networks in one basin"
    claim = ("two networks fine-tuned from the same pre-trained weights lie in one basin: no performance barrier on "
             "the straight line between their weights (paraphrase of the paper's performance-barrier experiment; "
             "not quoted)")
    source = ("the paper's performance-barrier figure (no number used: an equivalence within 5% of headroom, chosen "
              "here before any run)")
    needs = "baseB and a loss_barrier evaluation of two fine-tuned networks (label finetuned) in at least 3 units"
    kind = "equivalence"
    margin = 0.05

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        barriers, n = _barriers(g, self.labels[0])
        values = unit_values(barriers, headroom(g))
        if not values:
            return None
        return Contrast((tuple(values.values()),), _room(g, list(values)), 2 * len(values),
                        f"top-1 barrier between two fine-tuned networks ({self.labels[0]}, n={n})", n)


class ScratchBarrierLarger(_Basin):
    name = "scratch networks: a larger barrier"
    claim = ("two networks trained from random initialisation are not in one basin: the barrier between them is "
             "larger than between two fine-tuned ones (paraphrase of the paper's performance-barrier experiment; "
             "not quoted)")
    source = "the paper's performance-barrier figure (no number used: judged on the direction)"
    needs = "baseB and loss_barrier evaluations labelled finetuned and scratch at one n in at least 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        (tuned, n), (scratch, m) = _barriers(g, self.labels[0]), _barriers(g, self.labels[1])
        if n != m:
            return None
        values = unit_values(scratch, headroom(g), minus=tuned)
        if not values:
            return None
        return Contrast((tuple(values.values()),), _room(g, list(values)), 4 * len(values),
                        f"top-1 barrier: scratch - fine-tuned pairs (n={n})", n)


class Neyshabur2020(PaperFindings[NeyshaburParams]):
    """Four findings of Neyshabur, Sedghi & Zhang (2020): block-shuffled targets, and the basin."""

    description = ("Neyshabur, Sedghi & Zhang (2020): what pre-training transfers to block-shuffled targets; "
                   "fine-tuned networks in one basin")
    paper = "Neyshabur, Sedghi & Zhang (2020), What is being transferred in transfer learning?"
    shape = (f"two experiments on the same split seeds with baseB and AnB+: `clean`, and `shuffled` whose half B "
             f"is block-shuffled (block_shuffle transform); {FOUND_IN}. The basin: an experiment `basin` with "
             f"loss_barrier evaluations of two fine-tuned networks of one source (`finetuned`) and of two "
             f"networks trained from scratch (`scratch`); {BASIN_IN}")
    Params = NeyshaburParams

    def findings(self) -> Sequence[Finding]:
        p = self.params
        return (ShuffledBenefit(p.shuffled), SmallerWhenShuffled(p.clean, p.shuffled),
                FinetunedOneBasin(p.basin, p.finetuned, p.scratch),
                ScratchBarrierLarger(p.basin, p.finetuned, p.scratch))


@hookimpl
def register_findings(register) -> None:
    register("neyshabur2020", Neyshabur2020)
