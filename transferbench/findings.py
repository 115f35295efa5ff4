"""A paper's findings judged on a run: one machinery for every claim.

A :class:`Finding` states a claim (the paper's sentence, where its effect size comes from)
and computes its *contrast* on a run's grids: one value per independent unit (see
:mod:`transferbench.stats`), signed so that the paper's direction is positive, on a scale
that a run and the paper share. :func:`judge` does the rest, the same way for every finding:
the interval over units, the paper's effect (the same contrast on the paper's published
networks), the four-valued verdict (or, for a control, the equivalence test), the units a
decisive answer would need, the bootstrap stability of the verdict and the caveats of the
validity checks that warned.

**The shared scale.** A toy task's base network may reach .94 where the paper's reached
.625, so effects are compared as a fraction of each unit's *headroom*: its base network's
distance from chance (``base - 1/classes``). A 1-point dip below a base at .625 with 500
classes (headroom .623) is 1.6% of headroom; the same fraction is 1.4 points below a base
at .94 with 20 classes (headroom .89). Every contrast is divided by its own unit's headroom
before it is averaged, so units of different difficulty stay comparable; the report prints
the result in both scales.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .analysis import Grid
from .claims import INVALIDATING, Contrast, Finding, Kind
from .stats import (
    Difference,
    Equivalence,
    Stability,
    Verdict,
    equivalence,
    over_units,
    stability,
    units_for_effect,
    units_for_equivalence,
    verdict,
)
from .validity import CheckResult

__all__ = [
    "INVALIDATING",
    "SCALE",
    "Contrast",
    "Finding",
    "FindingResult",
    "combine",
    "headroom",
    "judge",
    "nearest",
    "same_depth",
    "unit_values",
]

#: The shared scale's name, as the report prints it.
SCALE = "% of headroom (the base's distance from chance, unless a finding names another network)"

def headroom(grid: Grid, base: str = "baseB") -> dict[Hashable, float]:
    """Per unit, its base network's distance from chance (the shared scale's unit)."""
    stat = grid.get(base, 0)
    chance = grid.chance(base) or 0.0
    if stat is None:
        return {}
    return {u: v - chance for u, v in stat.by_unit.items() if v - chance > 0}


@dataclass(frozen=True)
class FindingResult:
    """What a run says about one finding.

    Attributes:
        name, claim, source: the finding's.
        verdict: reproduced, contradicted, inconclusive or not determined.
        experiment: the experiment(s) it was judged on.
        run: the run's comparison in words, with its numbers.
        estimate: the run's contrast on the shared scale (a fraction of headroom), with its
            interval over units.
        points: the same in points of top-1 (times the units' mean headroom).
        effect: the paper's effect on the shared scale.
        effect_points: the paper's effect in its own points of top-1.
        equivalence: for a control, holds / not shown / fails / not determined.
        margin: for a control, the margin on the shared scale.
        units_needed: units for 80% power at the paper's effect (or to show equivalence); per
            side for a comparison of two experiments.
        sizes: the units of each side (one entry, or two for a comparison of experiments).
        stability: how often resampled units give the same verdict.
        caveats: the validity checks that warned for its experiments.
        invalidated: those among them that make it not determined.
        parts: the parts of a compound finding.
        paper: the findings plugin it belongs to (``yosinski2014``), set by the scorecard.
        scale: what the estimate is a fraction of (the finding's :attr:`Finding.scale`).
        headroom_of: whose distance from chance the headroom is, when not the base's
            (:attr:`Finding.headroom_of`).
    """

    name: str
    claim: str
    verdict: Verdict
    experiment: str = ""
    run: str = ""
    source: str = ""
    estimate: Difference | None = None
    points: Difference | None = None
    effect: float | None = None
    effect_points: float | None = None
    equivalence: Equivalence | None = None
    margin: float | None = None
    units_needed: int | None = None
    sizes: tuple[int, ...] = ()
    stability: Stability | None = None
    caveats: tuple[str, ...] = ()
    invalidated: tuple[str, ...] = ()
    parts: tuple[FindingResult, ...] = field(default_factory=tuple)
    paper: str = ""
    scale: str = "headroom"
    headroom_of: str | None = None

    @property
    def size(self) -> str | None:
        """How a reproduced effect compares with the paper's: ``smaller`` or ``larger`` when its
        whole interval lies below or above the paper's effect, ``compatible`` when it holds it;
        None for any other verdict. A direction reproduced at a fraction of the paper's size is
        still a reproduction of the claim (its sign), and the report says so beside it."""
        est = self.estimate
        if self.verdict != "reproduced" or self.equivalence is not None or self.effect is None or est is None \
                or est.ci_low is None or est.ci_high is None:
            return None
        sign = 1.0 if self.effect >= 0 else -1.0
        lo, hi = sorted((sign * est.ci_low, sign * est.ci_high))
        return "smaller" if hi < abs(self.effect) else "larger" if lo > abs(self.effect) else "compatible"


# --------------------------------------------------------------------------- judging


_EQUIVALENCE_VERDICTS: dict[Equivalence, Verdict] = {
    "holds": "reproduced", "fails": "contradicted", "not shown": "inconclusive", "not determined": "not determined"}


def _equivalence_verdict(outcome: Equivalence) -> Verdict:
    return _EQUIVALENCE_VERDICTS[outcome]


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """A compound finding's verdict: reproduced only when every part is; contradicted when
    any part is; not determined when any part is; inconclusive otherwise."""
    if any(v == "contradicted" for v in verdicts):
        return "contradicted"
    if any(v == "not determined" for v in verdicts):
        return "not determined"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def _decide(kind: Kind, est: Difference, effect: float, margin: float | None) -> tuple[Verdict, Equivalence | None]:
    if kind == "equivalence":
        outcome = equivalence(est, margin or 0.0)
        return _equivalence_verdict(outcome), outcome
    return verdict(est, effect), None


def _stability(c: Contrast, kind: Kind, effect: float, margin: float | None, resamples: int,
               seed: int) -> Stability | None:
    def claim(groups: Sequence[Sequence[float]]) -> Hashable:
        drawn = Contrast(tuple(tuple(g) for g in groups), c.headroom, c.networks, c.where)
        return _decide(kind, drawn.estimate(), effect, margin)[0]

    return stability(c.groups, claim, resamples=resamples, seed=seed)


def _caveats(finding: Finding, experiments: Sequence[str], checks: Sequence[CheckResult]
             ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    warned = tuple(dict.fromkeys(c.check for c in checks if c.status == "warn"
                                 and c.experiment in (None, "", *experiments)))
    return warned, tuple(c for c in warned if c in finding.invalidated_by)


def _pts(d: Difference | None, unit: str = "points") -> str:
    if d is None:
        return ""
    text = f"{100 * d.value:+.1f}" + ("" if unit.startswith("%") else " ")
    if d.ci_low is not None and d.ci_high is not None:
        return (f"{text}{unit} ±{100 * (d.half_width or 0):.1f} [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]"
                f" over {d.units} units")
    return f"{text}{unit} (no interval: {d.units} unit{'s' if d.units != 1 else ''})"


def judge(finding: Finding, grids: Sequence[Grid], paper: Sequence[Grid], checks: Sequence[CheckResult] = (), *,
          margin: float | None = None, resamples: int = 200, seed: int = 0) -> FindingResult:
    """Judge one finding on a run's grids against the paper's grids (see the module docstring).

    Args:
        finding: the claim.
        grids: the run's grids.
        paper: the paper's grids (its published networks), where its effect is read.
        checks: the run's validity checks (their warnings become caveats).
        margin: for a control, the equivalence margin on the shared scale.
        resamples, seed: the bootstrap of the verdict's stability.
    """
    if finding.parts():
        return _judge_compound(finding, grids, paper, checks, resamples=resamples, seed=seed)
    margin = finding.margin if margin is None else margin
    located = finding.locate(grids)
    if located is None:
        return FindingResult(finding.name, finding.claim, "not determined", run="not in this run: add the "
                             f"experiment it needs ({finding.found_in})", source=finding.source)
    names = tuple(g.experiment for g in located)
    where = " vs ".join(names)
    caveats, invalid = _caveats(finding, names, checks)
    c = finding.contrast(located)
    if c is None:
        return FindingResult(finding.name, finding.claim, "not determined", where, f"needs {finding.needs}",
                             finding.source, caveats=caveats, invalidated=invalid)
    effect, effect_points = _paper_effect(finding, c, located[0], paper)
    est = c.estimate()
    unit = "points" if finding.scale == "headroom" else f"% of {finding.scale}"
    decided, outcome = _decide(finding.kind, est, effect or 0.0, margin)
    if invalid and decided != "not determined":
        decided = "not determined"
    two = len(c.groups) > 1
    sizes = tuple(len(g) for g in c.groups)
    needed = (units_for_equivalence(est.sd, margin or 0.0) if finding.kind == "equivalence"
              else units_for_effect(est.sd, effect or 0.0, two_groups=two) if effect else None)
    stab = _stability(c, finding.kind, effect or 0.0, margin, resamples, seed) if est.determined else None
    return FindingResult(
        finding.name, finding.claim, decided, where, f"{c.where} = {_pts(est.scaled(c.headroom), unit)}",
        finding.source, est, est.scaled(c.headroom), effect, effect_points, outcome, margin, needed, sizes, stab,
        caveats, invalid, scale=finding.scale, headroom_of=finding.headroom_of)


def _paper_effect(finding: Finding, c: Contrast, run: Grid, paper: Sequence[Grid]
                  ) -> tuple[float | None, float | None]:
    """The paper's effect on the shared scale and in its own points: recomputed from the
    paper's networks (read at the run's depth) when it has them, else the finding's stated one."""
    pl = finding.locate(paper) if paper else None
    pc = finding.contrast(pl, like=replace(c, n=same_depth(c.n, run.num_layers, pl[0].num_layers))
                          ) if pl is not None else None
    if pc is not None:
        return pc.effect, pc.effect * pc.headroom
    return finding.effect, finding.effect_points


def _judge_compound(finding: Finding, grids: Sequence[Grid], paper: Sequence[Grid], checks: Sequence[CheckResult],
                    *, resamples: int, seed: int) -> FindingResult:
    parts = [judge(p, grids, paper, checks, resamples=resamples, seed=seed) for p in finding.parts()]
    located = finding.locate(grids)
    names = tuple(g.experiment for g in located) if located else ()
    caveats, invalid = _caveats(finding, names, checks)
    decided = combine([p.verdict for p in parts])
    stab = _compound_stability(finding, grids, paper, parts, resamples, seed)
    return FindingResult(finding.name, finding.claim, decided, " vs ".join(names),
                         "; ".join(f"{p.name}: {p.run}" for p in parts), finding.source, caveats=caveats,
                         invalidated=invalid, parts=tuple(parts), stability=stab)


def _compound_stability(finding: Finding, grids: Sequence[Grid], paper: Sequence[Grid],
                        parts: Sequence[FindingResult], resamples: int, seed: int) -> Stability | None:
    """The compound verdict under resampling of the units every part shares (drawn jointly)."""
    located = finding.locate(grids)
    if located is None or any(p.estimate is None or not p.estimate.determined for p in parts):
        return None
    rows = finding.unit_rows(located)
    effects = [p.effect or 0.0 for p in parts]

    def claim(groups: Sequence[Sequence[tuple[float, ...]]]) -> Hashable:
        drawn = groups[0]
        return combine([verdict(over_units(r[i] for r in drawn), effects[i]) for i in range(len(effects))])

    return stability([rows], claim, resamples=resamples, seed=seed) if rows else None


def unit_values(values: Mapping[Hashable, float], scale: Mapping[Hashable, float],
                minus: Mapping[Hashable, float] | None = None) -> dict[Hashable, float]:
    """Per unit, ``(values - minus) / scale`` for the units all three have."""
    out = {}
    for u, v in values.items():
        if u in scale and (minus is None or u in minus):
            out[u] = (v - (minus[u] if minus is not None else 0.0)) / scale[u]
    return out


def same_depth(n: int | None, layers: int, other: int) -> int | None:
    """Layer n of a network of ``layers`` layers, at the same fraction of the transferable
    depth (1..L-1) of a network of ``other`` layers: the paper's layer a run's n is read
    against (the identity for the paper's own 8-layer CaffeNet)."""
    if n is None or layers < 2 or other < 2 or layers == other:
        return n
    return max(1, min(other - 1, round(n * (other - 1) / (layers - 1))))


def nearest(layers: Sequence[int], n: int | None) -> int | None:
    """The layer of ``layers`` nearest to ``n`` (the deeper one on a tie), or None."""
    if not layers or n is None:
        return None
    return min(layers, key=lambda k: (abs(k - n), -k))

