"""The findings of Lee, Chen, Tajwar, Kumar, Yao, Liang & Finn, "Surgical fine-tuning improves
adaptation to distribution shifts" (ICLR 2023; arXiv 2022), as a findings plugin
(``report --compare lee2022``).

Their surgical fine-tuning tunes one block of a pre-trained network and leaves the rest, its
classifier included, as it was (the ``surgical`` protocol: n names the one layer that learns;
``surgical_head`` when the target's classes are not the source's). Which block is best depends
on the shift: the first for an input-level shift (image corruptions: the ``corrupt`` data
transform), the last for an output-level shift (the same inputs, other labels: ``relabel``).

Each shift is one experiment (named by the plugin's settings, ``corrupt`` and ``relabel`` by
default, as in configs/followups/lee2022.yaml) with a surgical treatment at the first and the
deepest tested n and fine-tuning everything (``finetune`` at the deepest tested n: every layer
but the classifier copied, a new classifier, all of it trained). Every contrast is divided by
the unit's headroom, here the fully fine-tuned network's distance from chance: the regime the
paper compares against (no network trained from scratch is needed).

"Matches or beats" is a one-sided (non-inferiority) claim: the contrast is surgical minus full
fine-tuning *plus a margin*, so "reproduced" says the whole interval of the difference lies
above minus the margin, "contradicted" that it lies below it. The margin, 5% of headroom, was
chosen before any run (the paper states none).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Contrast, Finding, Grid, PaperFindings, hookimpl, unit_values

FOUND_IN = "configs/followups/lee2022.yaml"
SURGICAL = ("surgical", "surgical_head")
FINETUNE = "finetune"
#: The non-inferiority margin of "matches or beats", on the shared scale (a fraction of the
#: unit's headroom): fixed before any run; the paper gives no number.
MARGIN = 0.05
ABSTRACT = ("\"selectively fine-tuning a subset of layers (which we term surgical fine-tuning) matches or "
            "outperforms commonly used fine-tuning approaches\" (abstract)")


class LeeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_shift: str = Field("corrupt", description="the experiment whose target is an input-level shift")
    output_shift: str = Field("relabel", description="the experiment whose target is an output-level shift")


def _treatment(grid: Grid, protocols: Sequence[str]) -> str | None:
    return next((t for t in grid.treatments if grid.protocols.get(t) in protocols), None)


def _ends(grid: Grid) -> tuple[str, int, int] | None:
    """The surgical treatment and its first and deepest tested n (None: fewer than two)."""
    name = _treatment(grid, SURGICAL)
    layers = [n for n in grid.transfer_layers if name and grid.get(name, n)]
    if name is None or len(layers) < 2:
        return None
    return name, layers[0], layers[-1]


def _finetuned(grid: Grid) -> tuple[str, int] | None:
    """Fine-tuning everything: the ``finetune`` treatment at its deepest tested n."""
    name = _treatment(grid, (FINETUNE,))
    layers = [n for n in grid.transfer_layers if name and grid.get(name, n)]
    return (name, layers[-1]) if name and layers else None


def scale(grid: Grid) -> dict[Hashable, float]:
    """Per unit, the fully fine-tuned network's distance from chance (the shared scale's unit)."""
    ft = _finetuned(grid)
    if ft is None:
        return {}
    stat = grid.get(*ft)
    assert stat is not None
    chance = grid.chance(ft[0]) or 0.0
    return {u: v - chance for u, v in stat.by_unit.items() if v - chance > 0}


def _contrast(values: dict[Hashable, float], grid: Grid, networks: int, where: str, n: int | None,
              shift: float = 0.0) -> Contrast | None:
    if not values:
        return None
    room = scale(grid)
    return Contrast((tuple(v + shift for v in values.values()),), math.fsum(room[u] for u in values) / len(values),
                    networks, where, n)


class _Shift(Finding):
    """A finding judged on one shift's experiment, found by name."""

    found_in = FOUND_IN
    headroom_of = "the fully fine-tuned network"
    experiment = ""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        g = next((g for g in grids if g.experiment == self.experiment), None)
        return None if g is None else (g,)


class _BlockOrder(_Shift):
    """One end of the network's surgical tuning against the other; ``first`` in the paper's
    direction when True."""

    first = True
    needs = "surgical networks at the first and the deepest tested n, and finetune at the deepest, in >= 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        ends = _ends(g)
        if ends is None or _finetuned(g) is None:
            return None
        name, low, high = ends
        better, worse = (low, high) if self.first else (high, low)
        a, b = g.get(name, better), g.get(name, worse)
        assert a is not None and b is not None
        values = unit_values(a.by_unit, scale(g), minus=b.by_unit)
        return _contrast(values, g, a.count + b.count, f"{name} n={better} - {name} n={worse}", better)


class FirstBlockForInputShift(_BlockOrder):
    name = "first block for an input-level shift"
    claim = ("\"for image corruptions, fine-tuning only the first few layers works best\" (abstract); here: "
             "tuning the first layer beats tuning the deepest, under the corrupt shift")
    source = "abstract and Figure 2 (relative accuracy by tuned block; not used as a number: judged on the direction)"
    first = True


class LastBlockForOutputShift(_BlockOrder):
    name = "last block for an output-level shift"
    claim = ("tuning later layers is best for an output-level shift (paraphrase of the paper's Figure 2 and "
             "section 3; not quoted); here: tuning the deepest layer beats tuning the first, under relabel")
    source = "Figure 2 (relative accuracy by tuned block; not used as a number: judged on the direction)"
    first = False


class _MatchesFineTuning(_Shift):
    """The paper's block for the shift (the first, or the deepest) against fine-tuning
    everything, as non-inferiority within :data:`MARGIN`."""

    first = True
    margin_note = f"non-inferiority: surgical - finetune + {MARGIN:.0%} of headroom (margin chosen before any run)"
    needs = "surgical networks at the first and the deepest tested n, and finetune at the deepest, in >= 3 units"

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        ends, ft = _ends(g), _finetuned(g)
        if ends is None or ft is None:
            return None
        name, low, high = ends
        k = low if self.first else high
        a, b = g.get(name, k), g.get(*ft)
        assert a is not None and b is not None
        values = unit_values(a.by_unit, scale(g), minus=b.by_unit)
        return _contrast(values, g, a.count + b.count,
                         f"{name} n={k} - {ft[0]} n={ft[1]} + margin {MARGIN:.0%} of headroom", k, shift=MARGIN)


class SurgicalMatchesInput(_MatchesFineTuning):
    name = "surgical (first block) matches fine-tuning, input-level shift"
    claim = ABSTRACT + "; here: tuning the first layer alone is not worse than fine-tuning everything, under corrupt"
    source = "abstract and Table 1 (no number used: " + _MatchesFineTuning.margin_note + ")"
    first = True


class SurgicalMatchesOutput(_MatchesFineTuning):
    name = "surgical (last block) matches fine-tuning, output-level shift"
    claim = ABSTRACT + "; here: tuning the deepest layer alone is not worse than fine-tuning everything, under relabel"
    source = "abstract and Table 1 (no number used: " + _MatchesFineTuning.margin_note + ")"
    first = False


class Lee2022(PaperFindings[LeeParams]):
    """Four findings of Lee et al. (2022) on which block to tune for which shift."""

    description = "Lee et al. (2022): surgical fine-tuning, first block for input shifts, last for output shifts"
    paper = ("Lee, Chen, Tajwar, Kumar, Yao, Liang & Finn (ICLR 2023), Surgical fine-tuning improves adaptation to "
             "distribution shifts")
    shape = ("two experiments on the same source's own classes, shifted: `corrupt` (an input-level shift) and "
             "`relabel` (an output-level one), each with a surgical treatment at the first and the deepest n and "
             f"finetune at the deepest; {FOUND_IN}")
    Params = LeeParams

    def findings(self) -> Sequence[Finding]:
        p = self.params
        return (FirstBlockForInputShift(p.input_shift), LastBlockForOutputShift(p.output_shift),
                SurgicalMatchesInput(p.input_shift), SurgicalMatchesOutput(p.output_shift))


@hookimpl
def register_findings(register) -> None:
    register("lee2022", Lee2022)
