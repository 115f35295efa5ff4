"""The findings of Kumar, Raghunathan, Jones, Ma & Liang, "Fine-tuning can distort pretrained
features and underperform out-of-distribution" (ICLR 2022), as a findings plugin
(``report --compare kumar2022``).

Three ways to transfer a source network to a target, each read in distribution (the target's
held-out examples: the report's metric) and out of distribution (the same classes drawn
differently: the data source's OOD evaluation split, ``ood_top1``, which a grid carries as
``Grid.ood``): linear probing (``frozen`` at the deepest tested n: every layer but the
classifier copied and frozen), fine-tuning (``finetune`` there: a new classifier, everything
trained) and LP-FT (``lp_ft`` there: the probe first, then everything). Every contrast is
divided by the unit's headroom, the fine-tuned network's in-distribution distance from chance
(one scale for the in- and out-of-distribution findings, so their sizes compare).

The paper's effects are the abstract's averages over its 10 shifts, in points of accuracy
(stated as ``effect_points``; the paper's own headroom is not given, so no effect on the shared
scale and no power reading at the paper's effect). The equivalence margin of "LP-FT matches
fine-tuning in distribution", 5% of headroom, was chosen before any run.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from transferbench import Contrast, Finding, Grid, NoParams, PaperFindings, hookimpl, unit_values

FOUND_IN = "configs/followups/kumar2022.yaml"
PROBE, FINETUNE, LPFT = "frozen", "finetune", "lp_ft"
ABSTRACT = "abstract"


def _treatment(grid: Grid, protocol: str) -> str | None:
    return next((t for t in grid.treatments if grid.protocols.get(t) == protocol), None)


def _deepest(grid: Grid, names: Sequence[str]) -> int | None:
    """The deepest n every one of ``names`` has a result at."""
    common = [n for n in grid.transfer_layers if all(grid.get(t, n) for t in names)]
    return common[-1] if common else None


def scale(grid: Grid, n: int) -> dict[Hashable, float]:
    """Per unit, the fine-tuned network's in-distribution distance from chance at ``n``."""
    name = _treatment(grid, FINETUNE)
    stat = grid.get(name, n) if name else None
    if name is None or stat is None:
        return {}
    chance = grid.chance(name) or 0.0
    return {u: v - chance for u, v in stat.by_unit.items() if v - chance > 0}


class _Regimes(Finding):
    """``better`` minus ``worse`` (two protocols at the deepest n both have), in or out of distribution."""

    found_in = FOUND_IN
    headroom_of = "the fine-tuned network (in distribution)"
    better = LPFT
    worse = FINETUNE
    ood = True

    needs = ("frozen, finetune and lp_ft networks at one n in >= 3 units; out of distribution, their evaluation on "
             "the data source's OOD split too (a source with one: synthetic's ood setting)")

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        for g in grids:
            names = [_treatment(g, p) for p in {self.better, self.worse, FINETUNE}]
            if all(names) and (g.ood is not None or not self.ood):
                return (g,)
        return None

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        g = grids[0]
        better, worse = _treatment(g, self.better), _treatment(g, self.worse)
        assert better is not None and worse is not None
        n = _deepest(g, [better, worse])
        read = g.ood if self.ood else g
        if n is None or read is None:
            return None
        room = scale(g, n)
        a, b = read.get(better, n), read.get(worse, n)
        if a is None or b is None or not room:
            return None
        values = unit_values(a.by_unit, room, minus=b.by_unit)
        if not values:
            return None
        where = f"{better} - {worse} at n={n}, {'out of distribution' if self.ood else 'in distribution'}"
        return Contrast((tuple(values.values()),), math.fsum(room[u] for u in values) / len(values),
                        a.count + b.count, where, n)


class LpFtBeatsFineTuningOod(_Regimes):
    name = "LP-FT beats fine-tuning OOD"
    claim = ("\"LP-FT outperforms both fine-tuning and linear probing on the above datasets (1% better ID, 10% "
             "better OOD than full fine-tuning)\" (abstract); here: the OOD part")
    source = "abstract: 10 points better OOD than fine-tuning, averaged over 10 shifts (effect_points)"
    effect_points = 10.0
    better, worse, ood = LPFT, FINETUNE, True


class LpFtMatchesFineTuningId(_Regimes):
    name = "LP-FT matches fine-tuning ID"
    claim = ("LP-FT is at least as accurate as fine-tuning in distribution (the abstract: \"1% better ID\" than "
             "full fine-tuning); here: equivalent within the margin")
    source = ("abstract (1 point better ID; judged as an equivalence within 5% of headroom, a margin chosen here "
              "before any run)")
    kind = "equivalence"
    margin = 0.05
    better, worse, ood = LPFT, FINETUNE, False


class FineTuningBelowProbeOod(_Regimes):
    name = "fine-tuning underperforms linear probing OOD"
    claim = ("\"fine-tuning can achieve worse accuracy than linear probing out-of-distribution (OOD) when the "
             "pretrained features are good and the distribution shift is large\" (abstract)")
    source = "abstract: fine-tuning 7 points lower OOD than linear probing, averaged over 10 shifts (effect_points)"
    effect_points = 7.0
    better, worse, ood = PROBE, FINETUNE, True


class FineTuningAboveProbeId(_Regimes):
    name = "fine-tuning beats linear probing ID"
    claim = ("\"fine-tuning obtains on average 2% higher accuracy ID but 7% lower accuracy OOD than linear "
             "probing\" (abstract); here: the ID part")
    source = "abstract: fine-tuning 2 points higher ID than linear probing, averaged over 10 shifts (effect_points)"
    effect_points = 2.0
    better, worse, ood = FINETUNE, PROBE, False


class Kumar2022(PaperFindings[NoParams]):
    """Four findings of Kumar et al. (2022) on fine-tuning, linear probing and LP-FT, in and out of distribution."""

    description = "Kumar et al. (2022): LP-FT against fine-tuning and linear probing, in and out of distribution"
    paper = ("Kumar, Raghunathan, Jones, Ma & Liang (ICLR 2022), Fine-tuning can distort pretrained features and "
             "underperform out-of-distribution")
    shape = ("one experiment with frozen (the linear probe), finetune and lp_ft treatments at the same n (the "
             "deepest), on a data source with an out-of-distribution evaluation split (synthetic's ood setting); "
             f"{FOUND_IN}")

    def findings(self) -> Sequence[Finding]:
        return (LpFtBeatsFineTuningOod(), LpFtMatchesFineTuningId(), FineTuningBelowProbeOod(),
                FineTuningAboveProbeId())


@hookimpl
def register_findings(register) -> None:
    register("kumar2022", Kumar2022)
