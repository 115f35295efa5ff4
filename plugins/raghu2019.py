"""The findings of Raghu, Zhang, Kleinberg & Bengio (2019), "Transfusion: understanding
transfer learning for medical imaging" (NeurIPS 2019), as a findings plugin
(``report --compare raghu2019``).

Their questions are about *how fast* a network converges as much as how well: full transfer
(every layer but the classifier copied, then everything fine-tuned) against training from
scratch; the ``meanvar`` protocol (each copied tensor replaced by i.i.d. draws with the
source tensor's mean and std: the weights' scale without their features); and transfer of the
lowest layers only. Convergence speed is read from each network's evaluation history: the
steps it took to reach ``fraction`` (0.9) of its own final accuracy, as a fraction of the
steps it trained (:meth:`transferbench.Grid.unit_speed`); a speed-up is a difference of two
such fractions, in each unit (a split seed and a direction), so the scale of those findings
is "the training run", not the headroom. The final-accuracy finding is on the shared scale.

The paper gives its effects in figures (not used as numbers here): every speed finding is
judged on its direction; "much of" and "most of" the speed-up are read as more than
``threshold`` (half) of full transfer's, and "little benefit" as an equivalence within
``margin`` (5% of headroom): both ours, stated before any run. configs/followups/raghu2019.yaml
is the miniature.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Contrast, Finding, Grid, PaperFindings, headroom, hookimpl, unit_values

FINETUNE = "finetune"
MEANVAR = "meanvar"
TRAINING = "the training run"
FOUND_IN = "configs/followups/raghu2019.yaml has them"
SHAPE = ("base networks and, from the other half's base network, fine-tuned transfer at the deepest n (AnB+ and "
         "BnA+), at a small n (the lower layers), and `meanvar` transfer at the deepest n, with evaluation "
         f"histories; {FOUND_IN}")
#: The arXiv version's abstract (1902.07208v1), quoted.
ABSTRACT = "abstract of arXiv:1902.07208v1 (quoted)"


class RaghuParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.9, gt=0.0, le=1.0, description="convergence is the step a network first reaches "
                            "this fraction of its own final accuracy (in its evaluation history)")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="'much of' / 'most of' the speed-up of full "
                             "transfer: more than this fraction of it (ours: the paper gives no number)")
    margin: float = Field(0.05, gt=0.0, description="'little benefit to performance': full transfer's final "
                          "accuracy within this fraction of headroom of training from scratch (ours)")


def _transfers(grid: Grid, protocol: str) -> list[str]:
    """The treatments that transfer across halves by ``protocol`` (AnB+ and BnA+, not BnB+)."""
    return [t for t in grid.treatments if grid.protocols.get(t) == protocol and grid.sources.get(t) is not None
            and grid.sources.get(t) != grid.targets.get(t)]


def _layers(grid: Grid, names: Sequence[str]) -> list[int]:
    return sorted({n for t in names for n in grid.transfer_layers if grid.get(t, n) is not None})


def _speed(grid: Grid, names: Sequence[str], n: int, fraction: float) -> dict[Hashable, float]:
    """Per unit, the steps to ``fraction`` of the final accuracy (a fraction of the training run)
    of the networks of ``names`` at ``n``; the treatments' units differ by direction."""
    out: dict[Hashable, float] = {}
    for t in names:
        out.update(grid.unit_speed(t, n, fraction))
    return out


def _scratch(grid: Grid, fraction: float) -> dict[Hashable, float]:
    return _speed(grid, sorted(grid.bases), 0, fraction)


def _networks(grid: Grid, names: Sequence[str], n: int) -> int:
    return sum(grid.networks(t, [n]) for t in names)


def _bases(grid: Grid) -> int:
    return sum(grid.networks(b, [0]) for b in grid.bases)


class _Raghu(Finding):
    """A finding judged on one experiment that has base networks and fine-tuned transfer."""

    found_in = FOUND_IN
    #: the transfer protocols the finding reads (besides the base networks)
    protocols: tuple[str, ...] = (FINETUNE,)

    def __init__(self, fraction: float = 0.9, threshold: float = 0.5) -> None:
        self.fraction = fraction
        self.threshold = threshold

    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        for g in grids:
            if g.bases and all(_transfers(g, p) for p in self.protocols):
                return (g,)
        return None

    def _full(self, grid: Grid) -> tuple[list[str], int] | None:
        names = _transfers(grid, FINETUNE)
        layers = _layers(grid, names)
        return (names, layers[-1]) if layers else None

    def _speedup(self, grid: Grid, names: Sequence[str], n: int) -> dict[Hashable, float]:
        """Per unit, scratch's steps - the transfer's (fractions of the training run)."""
        scratch, transfer = _scratch(grid, self.fraction), _speed(grid, names, n, self.fraction)
        return {u: scratch[u] - transfer[u] for u in scratch if u in transfer}

    def _recovered(self, grid: Grid, names: Sequence[str], n: int, what: str) -> Contrast | None:
        """Per unit, the speed-up of ``names`` at ``n`` minus ``threshold`` x full transfer's."""
        full = self._full(grid)
        if full is None:
            return None
        part, whole = self._speedup(grid, names, n), self._speedup(grid, *full)
        values = {u: part[u] - self.threshold * whole[u] for u in part if u in whole}
        if not values:
            return None
        return Contrast((tuple(values.values()),), 1.0, _bases(grid) + _networks(grid, names, n)
                        + _networks(grid, *full),
                        f"speed-up of {what} - {self.threshold:.0%} of full transfer's (n={full[1]}), steps to "
                        f"{self.fraction:.0%} of final", n)


class TransferFaster(_Raghu):
    name = "transfer converges faster"
    claim = ("\"we find transfer has almost negligible effects on performance, but significantly helps convergence "
             f"speed\" ({ABSTRACT})")
    source = "convergence curves (figures; not used as a number): judged on its direction"
    needs = "base networks and fine-tuned transfer (finetune, across halves) with evaluation histories, 3+ units"
    scale = TRAINING

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        grid = grids[0]
        full = self._full(grid)
        if full is None:
            return None
        values = self._speedup(grid, *full)
        if not values:
            return None
        return Contrast((tuple(values.values()),), 1.0, _bases(grid) + _networks(grid, *full),
                        f"steps to {self.fraction:.0%} of final: scratch - full transfer (n={full[1]})", full[1])


class MeanVarFaster(_Raghu):
    name = "mean-var init converges faster"
    claim = ("\"convergence without transfer can be sped up dramatically by using only mean and variance statistics "
             f"of the pretrained weights\" ({ABSTRACT})")
    source = "convergence curves of Mean Var Init (figures; not used as a number): judged on its direction"
    needs = f"base networks and `{MEANVAR}` transfer with evaluation histories, 3+ units"
    scale = TRAINING
    protocols = (MEANVAR,)

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        grid = grids[0]
        names = _transfers(grid, MEANVAR)
        layers = _layers(grid, names)
        if not layers:
            return None
        values = self._speedup(grid, names, layers[-1])
        if not values:
            return None
        return Contrast((tuple(values.values()),), 1.0, _bases(grid) + _networks(grid, names, layers[-1]),
                        f"steps to {self.fraction:.0%} of final: scratch - mean-var init (n={layers[-1]})",
                        layers[-1])


class MeanVarRecovers(_Raghu):
    name = "mean-var init recovers much of the speed-up"
    claim = ("much of full transfer's convergence speed-up comes from the pretrained weights' scale alone "
             "(paraphrase of the paper's Mean Var Init section; the abstract's \"feature independent benefits of "
             "transfer arising from weight scalings\" is quoted from the NeurIPS abstract)")
    source = ("convergence curves (figures; not used as a number); 'much of' read as more than the threshold "
              "(half) of full transfer's speed-up: ours, stated before the run")
    needs = f"base networks, fine-tuned transfer and `{MEANVAR}` transfer with evaluation histories, 3+ units"
    scale = TRAINING
    protocols = (FINETUNE, MEANVAR)

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        grid = grids[0]
        names = _transfers(grid, MEANVAR)
        layers = _layers(grid, names)
        return self._recovered(grid, names, layers[-1], "mean-var init") if layers else None


class LowerLayersKeep(_Raghu):
    name = "lower layers keep most of the speed-up"
    claim = ("reusing only the lowest layers' pretrained weights (the rest re-initialised) keeps most of the "
             "convergence speed-up (paraphrase of the paper's weight transfusion experiment; its abstract: \"a "
             "transfusion experiment, which explores the convergence speed using a subset of pretrained weights\", "
             f"{ABSTRACT})")
    source = ("transfusion curves (figures; not used as a number); 'most of' read as more than the threshold "
              "(half) of full transfer's speed-up: ours, stated before the run")
    needs = "base networks and fine-tuned transfer at a small n and at the deepest n, with evaluation histories"
    scale = TRAINING

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        grid = grids[0]
        names = _transfers(grid, FINETUNE)
        layers = _layers(grid, names)
        if len(layers) < 2:
            return None
        return self._recovered(grid, names, layers[0], f"layers 1..{layers[0]}")


class LittleAccuracyBenefit(_Raghu):
    name = "little final-accuracy benefit"
    kind = "equivalence"
    claim = ("\"transfer offers little benefit to performance\" (NeurIPS abstract, quoted; said of large medical "
             "targets)")
    source = ("the paper's tables of AUCs (not used as a number); 'little' read as within the margin "
              "(5% of headroom): ours, stated before the run")
    needs = "base networks and fine-tuned transfer (finetune, across halves), 3+ units"

    def __init__(self, fraction: float = 0.9, threshold: float = 0.5, margin: float = 0.05) -> None:
        super().__init__(fraction, threshold)
        self.margin = margin

    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        grid = grids[0]
        full = self._full(grid)
        if full is None:
            return None
        names, n = full
        room = headroom(grid)
        scratch: dict[Hashable, float] = {}
        for b in sorted(grid.bases):
            stat = grid.get(b, 0)
            scratch.update(stat.by_unit if stat is not None else {})
        done: dict[Hashable, float] = {}
        for t in names:
            stat = grid.get(t, n)
            done.update(stat.by_unit if stat is not None else {})
        values = unit_values(done, room, minus=scratch)
        if not values:
            return None
        return Contrast((tuple(values.values()),), math.fsum(room[u] for u in values) / len(values),
                        _bases(grid) + _networks(grid, names, n), f"full transfer (n={n}) - scratch, final accuracy",
                        n)


class Raghu2019(PaperFindings[RaghuParams]):
    """Five findings of Raghu, Zhang, Kleinberg & Bengio (2019) on convergence and accuracy."""

    description = "Raghu, Zhang, Kleinberg & Bengio (2019), Transfusion: convergence speed, mean-var init, lower layers"
    paper = "Raghu, Zhang, Kleinberg & Bengio (2019), Transfusion: understanding transfer learning for medical imaging"
    shape = SHAPE
    Params = RaghuParams

    def findings(self) -> Sequence[Finding]:
        p = self.params
        return (TransferFaster(p.fraction, p.threshold), MeanVarFaster(p.fraction, p.threshold),
                MeanVarRecovers(p.fraction, p.threshold), LowerLayersKeep(p.fraction, p.threshold),
                LittleAccuracyBenefit(p.fraction, p.threshold, p.margin))


@hookimpl
def register_findings(register) -> None:
    register("raghu2019", Raghu2019)
