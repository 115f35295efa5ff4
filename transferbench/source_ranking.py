"""Which source to pick: estimators ranking several source networks for one target, judged
against the ranking retraining gives (model-level validation, docs/estimators.md).

An experiment with several sources for one target (``sources:`` with XnB / XnB+ per source,
or AnB beside them) asks the practitioner's question: which network to transfer from. For
every ground truth (a protocol: ``frozen`` XnB, ``finetune`` XnB+, ...) and every estimator,
at the deepest layer n the experiment has for every source (the penultimate layer, L-1, when
its layers include it; LEEP, NCE, H-score and TransRate read the source's classifier or its
top features, the layer-wise estimators its layer-n features), each **unit** (a split seed
and a target half, as everywhere: never two points that share a target network) ranks the
sources twice, by the estimator and by retraining:

* **2 sources**: a ranking is one pairwise choice, and a correlation of two items is ±1 and
  means nothing. What is reported is how often the estimator **picks the source retraining
  found better**: k of m units, with the exact (Clopper-Pearson) 95% interval of the rate
  (the units are independent draws of the target's retraining; a unit whose two sources
  retrained to exactly the same accuracy decides nothing and is left out).
* **3 or more sources**: the mean over units of the within-unit Spearman, Kendall and
  weighted tau, each with a cluster-bootstrap interval over units, and the pick rate.

Beside each: the top-1 regret (per unit, the ground truth of the source best on average
minus that of the estimator's pick; mean and t-interval over units), the free baselines (the
source's own accuracy on its own task, its parameter count, the static hierarchy: a source's
mean ground truth on the *other* units, and a random pick: right 1 time in k), "beats the
strongest baseline" (with 2 sources by exact tests: the sign test over the units where only one
of the two picks right, or, against a random pick, the exact interval of the pick rate against
1/k; with more, by the bootstrap interval of the paired difference of Spearman), and the
**ceiling**: how often two distinct units' retraining picks the same source (2 sources) or
the mean Spearman between two units' rankings (3+).

What the units do not cover: every unit reads the *same* source networks (one file per
source), so an interval says how the choice holds over the target's retraining, not over
retraining the sources themselves.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from scipy import stats as sps

from .ranking import Interval, bootstrap_units, kendall, spearman, weighted_tau
from .results import EstimateRow, RunResults, check_metric
from .stats import LEVEL, Difference, over_units

__all__ = ["Picks", "SourceBaseline", "SourceInfo", "SourceRanking", "source_info", "source_rankings"]

#: (experiment, split seed, target half): the independent unit.
Unit = tuple[str, int, str]


@dataclass(frozen=True)
class SourceInfo:
    """What is known of a source network without retraining: the free baselines' inputs.

    Attributes:
        accuracy: its own top-1 on the task it was trained on (an exported file's JSON, or
            the base network's record), or None.
        parameters: how many numbers its weights hold, or None.
    """

    accuracy: float | None = None
    parameters: int | None = None


@dataclass(frozen=True)
class Picks:
    """How often a score's first choice is the source retraining found best.

    Attributes:
        right: units where it picked the best source (a tie for first place counts as right
            only when every tied source is the best).
        units: units that decide (retraining not tied for first).
        ci_low, ci_high: exact (Clopper-Pearson) 95% interval of the rate; None without units.
    """

    right: int
    units: int
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def rate(self) -> float | None:
        return self.right / self.units if self.units else None

    @classmethod
    def of(cls, right: int, units: int) -> Picks:
        if not units:
            return cls(0, 0)
        ci = sps.binomtest(right, units).proportion_ci(confidence_level=LEVEL, method="exact")
        return cls(right, units, float(ci.low), float(ci.high))


@dataclass(frozen=True)
class SourceBaseline:
    """A free baseline ranking the same sources in the same units.

    Attributes:
        name: ``source accuracy``, ``parameters``, ``static`` or ``random``.
        picks: its pick rate (``random``: the expected 1 in k, no interval).
        spearman: 3+ sources: its mean within-unit Spearman (interval over units).
        difference: the estimator's statistic minus the baseline's (pick rate with 2 sources,
            Spearman with more), paired on the same resampled units.
    """

    name: str
    picks: Picks | None
    spearman: Interval | None
    difference: Interval | None


@dataclass(frozen=True)
class SourceRanking:
    """One estimator ranking the sources of one target against one ground truth.

    Attributes:
        experiment, estimator: where and what.
        ground_truth: the protocol of the retrained treatments (``frozen``, ``finetune``, ...).
        metric: the accuracy compared (``top1``: final; ``top1_best_k``: best).
        n: the layer the sources are scored and retrained at.
        target: the target half.
        sources: the sources ranked.
        treatments: source -> the treatment that retrained it.
        units: units behind the statistics.
        picks: how often the estimator picked the best source.
        spearman, kendall, weighted_tau: 3+ sources only (None with 2): mean within-unit
            statistics with their intervals over units.
        regret: the best-on-average source's ground truth minus the pick's, over units.
        baselines: every free baseline that applies.
        strongest, beats: the strongest baseline (highest pick rate, or Spearman with 3+) and
            whether the estimator beats it: ``yes`` / ``no`` / ``not determined``.
        ceiling: retraining against itself across units (pairs of distinct units agreeing on
            the best source with 2 sources; their mean Spearman with more).
    """

    experiment: str
    estimator: str
    ground_truth: str
    metric: str
    n: int
    target: str
    sources: tuple[str, ...]
    treatments: Mapping[str, str]
    units: int
    picks: Picks
    spearman: Interval | None
    kendall: Interval | None
    weighted_tau: Interval | None
    regret: Difference | None
    baselines: tuple[SourceBaseline, ...]
    strongest: str | None
    beats: str
    ceiling: Interval | None

    @property
    def pairwise(self) -> bool:
        """Two sources: a ranking is one choice; read the pick rate, not a correlation."""
        return len(self.sources) == 2


@dataclass(frozen=True)
class _Unit:
    """One unit's sources: the ground truth, the estimator and each baseline, aligned."""

    key: Unit
    truth: tuple[float, ...]
    score: tuple[float, ...]
    baselines: Mapping[str, tuple[float, ...]]


# --------------------------------------------------------------------------- per unit


def _right(score: Sequence[float], truth: Sequence[float]) -> bool:
    best = max(truth)
    top = max(score)
    return all(t == best for s, t in zip(score, truth) if s == top)


def _decides(truth: Sequence[float]) -> bool:
    return sum(t == max(truth) for t in truth) == 1


def _rate(units: Sequence[_Unit], score: str | None) -> float | None:
    decided = [u for u in units if _decides(u.truth)]
    if not decided:
        return None
    return sum(_right(u.score if score is None else u.baselines[score], u.truth) for u in decided) / len(decided)


def _mean_within(units: Sequence[_Unit], score: str | None,
                 stat: Callable[[Sequence[float], Sequence[float]], float | None] = spearman) -> float | None:
    values = [v for u in units if (v := stat(list(u.score if score is None else u.baselines[score]), list(u.truth)))
              is not None]
    return math.fsum(values) / len(values) if values else None


def _statistics(units: Sequence[_Unit], names: Sequence[str], pairwise: bool) -> list[float | None]:
    """[pick rate, Spearman, Kendall, weighted tau, then per baseline: its statistic, the
    estimator's minus it] on a (re)sample of units (the statistic: the pick rate with 2
    sources, the mean within-unit Spearman with more)."""
    rate = _rate(units, None)
    rho = None if pairwise else _mean_within(units, None)
    out: list[float | None] = [rate, rho, None if pairwise else _mean_within(units, None, kendall),
                               None if pairwise else _mean_within(units, None, weighted_tau)]
    mine = rate if pairwise else rho
    for name in names:
        if name == "random":
            theirs: float | None = 1 / len(units[0].truth) if pairwise else 0.0
        else:
            theirs = _rate(units, name) if pairwise else _mean_within(units, name)
        out += [theirs, None if mine is None or theirs is None else mine - theirs]
    return out


def _ceiling(units: Sequence[_Unit], pairwise: bool) -> list[float | None]:
    """Retraining against itself: over pairs of *distinct* units (a unit drawn twice by the
    bootstrap is one unit counted twice, never a pair with itself)."""
    times = Counter(u.key for u in units)
    first = {u.key: u for u in units}
    num = den = 0.0
    for a, b in combinations(first, 2):
        ta, tb = first[a].truth, first[b].truth
        if pairwise:
            if not (_decides(ta) and _decides(tb)):
                continue
            value: float | None = float(ta.index(max(ta)) == tb.index(max(tb)))
        else:
            value = spearman(list(ta), list(tb))
        if value is not None:
            w = times[a] * times[b]
            num, den = num + w * value, den + w
    return [num / den if den else None]


def _regret(units: Sequence[_Unit]) -> Difference | None:
    if not units:
        return None
    k = len(units[0].truth)
    best = max(range(k), key=lambda i: math.fsum(u.truth[i] for u in units))
    values = []
    for u in units:
        top = max(u.score)
        picked = [t for s, t in zip(u.score, u.truth) if s == top]
        values.append(u.truth[best] - math.fsum(picked) / len(picked))
    return over_units(values)


def _verdict(difference: Interval | None) -> str:
    if difference is None or not difference.determined:
        return "not determined"
    return "yes" if difference.above_zero else ("no" if difference.below_zero else "not determined")


# --------------------------------------------------------------------------- the run's sources


def source_info(run_dir: Path) -> dict[str, SourceInfo]:
    """Each named weights-file source of a run: its own accuracy (from the JSON that
    ``transferbench export`` writes beside it, when its SHA-256 is the file's) and its
    parameter count (from the file's header). A file no longer there gives nothing."""
    try:
        plan = json.loads((Path(run_dir) / "plan.json").read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, SourceInfo] = {}
    for job in plan.get("jobs", {}).values():
        checkpoint, name = job.get("source_checkpoint"), job.get("source")
        if not isinstance(checkpoint, dict) or not isinstance(name, str) or name in out:
            continue
        out[name] = _file_info(Path(str(checkpoint.get("file", ""))), str(checkpoint.get("sha256", "")))
    return out


def _file_info(path: Path, sha: str) -> SourceInfo:
    accuracy = parameters = None
    try:
        doc = json.loads(path.with_suffix(".json").read_text())
        if doc.get("sha256") == sha and isinstance(doc.get("top1"), int | float):
            accuracy = float(doc["top1"])
    except (OSError, ValueError, AttributeError):
        pass
    if path.suffix == ".safetensors":  # the header alone says every tensor's shape
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        except Exception:  # noqa: BLE001 - a file gone or damaged: no parameter count, no baseline
            parameters = None
    return SourceInfo(accuracy, parameters)


# --------------------------------------------------------------------------- rankings


def source_rankings(results: RunResults, estimates: Sequence[EstimateRow], metric: str = "top1",
                    info: Mapping[str, SourceInfo] | None = None, seed: int = 0) -> list[SourceRanking]:
    """Every (experiment, target, ground truth, estimator) with at least two sources for the
    target, ranked at the deepest layer every source has.

    Args:
        info: source name -> what is known of it (:func:`source_info`); a source half (A)
            also gets its base network's accuracy from ``results``.
    """
    check_metric(metric)
    info = dict(info or {})
    acc: dict[tuple[str, int, str, int], float] = {}
    base: dict[tuple[str, int, str], float] = {}
    groups: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)  # (exp, target, protocol) -> source -> t
    for r in results.rows:
        value = r.value(metric)
        if r.kind == "base" and value is not None and r.target:
            base[(r.experiment, r.split_seed, r.target)] = value
        elif r.kind == "transfer" and r.source and r.target and r.source != r.target and r.protocol:
            groups[(r.experiment, r.target, r.protocol)].setdefault(r.source, r.treatment)
            if value is not None:
                acc[(r.experiment, r.split_seed, r.treatment, r.n)] = value
    est: dict[str, dict[tuple[str, int, str, str, int], float]] = defaultdict(dict)
    for e in estimates:
        if e.value is not None:
            est[e.estimator][(e.experiment, e.split_seed, e.source, e.target, e.n)] = e.value
    out = []
    for (exp, target, protocol), treatments in groups.items():
        if len(treatments) < 2:
            continue
        names = tuple(sorted(treatments))
        layers = {n for (e, _, t, n) in acc if e == exp and t == treatments[names[0]]}
        common = [n for n in layers if all(any(k[0] == exp and k[2] == treatments[s] and k[3] == n for k in acc)
                                           for s in names)]
        if not common:
            continue
        n = max(common)
        seeds = sorted({k[1] for k in acc if k[0] == exp and k[3] == n
                        and all((exp, k[1], treatments[s], n) in acc for s in names)})
        for estimator in est:
            units = _units(exp, target, n, seeds, names, treatments, acc, base, est[estimator], info)
            if units:
                out.append(_ranking(exp, estimator, protocol, metric, n, target, names, treatments, units, seed))
    return out


def _units(exp: str, target: str, n: int, seeds: Sequence[int], names: Sequence[str], treatments: Mapping[str, str],
           acc: Mapping[tuple[str, int, str, int], float], base: Mapping[tuple[str, int, str], float],
           scores: Mapping[tuple[str, int, str, str, int], float], info: Mapping[str, SourceInfo]) -> list[_Unit]:
    rows = []
    for s in seeds:
        found = [scores.get((exp, s, name, target, n)) for name in names]
        if any(v is None for v in found):
            continue
        truth = tuple(acc[(exp, s, treatments[name], n)] for name in names)
        baselines: dict[str, tuple[float, ...]] = {}
        own = [info[name].accuracy if name in info else base.get((exp, s, name)) for name in names]
        if all(v is not None for v in own):
            baselines["source accuracy"] = tuple(float(v) for v in own if v is not None)
        params = [info[name].parameters if name in info else None for name in names]
        if all(v is not None for v in params):
            baselines["parameters"] = tuple(float(v) for v in params if v is not None)
        rows.append(((exp, s, target), truth, tuple(float(v) for v in found if v is not None), baselines))
    out = []
    for key, truth, score, baselines in rows:  # static: each source's mean ground truth on the other units
        others = [t for k, t, _, _ in rows if k != key]
        if others:
            baselines = {**baselines, "static": tuple(math.fsum(t[i] for t in others) / len(others)
                                                       for i in range(len(names)))}
        out.append(_Unit(key, truth, score, baselines))
    return out


def _ranking(exp: str, estimator: str, protocol: str, metric: str, n: int, target: str, names: tuple[str, ...],
             treatments: Mapping[str, str], units: list[_Unit], seed: int) -> SourceRanking:
    pairwise = len(names) == 2
    baseline_names = [b for b in ("source accuracy", "parameters", "static")
                      if all(b in u.baselines for u in units)] + ["random"]
    by_unit = {u.key: [u] for u in units}
    found = bootstrap_units(by_unit, lambda us: _statistics(us, baseline_names, pairwise), seed=seed)
    found += [None] * (4 + 2 * len(baseline_names) - len(found))
    decided = [u for u in units if _decides(u.truth)]
    picks = Picks.of(sum(_right(u.score, u.truth) for u in decided), len(decided))
    baselines = []
    for i, name in enumerate(baseline_names):
        stat, diff = found[4 + 2 * i], found[5 + 2 * i]
        if name == "random":
            # a random pick is right 1 time in k and a random ranking's Spearman is 0 on average
            baselines.append(SourceBaseline(name, None, None if pairwise else Interval(0.0), diff))
            continue
        bp = Picks.of(sum(_right(u.baselines[name], u.truth) for u in decided), len(decided))
        baselines.append(SourceBaseline(name, bp, None if pairwise else stat, diff))

    def strength(b: SourceBaseline) -> float:
        if b.name == "random":
            return 1 / len(names) if pairwise else 0.0
        if pairwise:
            return b.picks.rate if b.picks is not None and b.picks.rate is not None else -1.0
        return b.spearman.value if b.spearman is not None else -2.0

    strongest = max(baselines, key=strength, default=None)
    if strongest is None:
        beats = "not determined"
    elif pairwise:
        beats = _exact_verdict(decided, strongest.name, picks, len(names))
    else:
        beats = _verdict(strongest.difference)
    ceiling = bootstrap_units(by_unit, lambda us: _ceiling(us, pairwise), seed=seed)
    return SourceRanking(
        exp, estimator, protocol, metric, n, target, names, dict(treatments), len(units), picks,
        None if pairwise else found[1], None if pairwise else found[2], None if pairwise else found[3],
        _regret(units), tuple(baselines), strongest.name if strongest else None, beats,
        ceiling[0] if ceiling else None)


def _exact_verdict(decided: Sequence[_Unit], baseline: str, picks: Picks, k: int) -> str:
    """Two sources: whether the estimator picks better than ``baseline``, by exact tests on the
    units (a bootstrap of a few units that all agree has an interval of zero width). Against
    ``random``: the exact interval of the pick rate against 1/k. Against another baseline: the
    exact sign test over the units where exactly one of the two picks right (McNemar's)."""
    if baseline == "random":
        if picks.ci_low is None or picks.ci_high is None:
            return "not determined"
        return "yes" if picks.ci_low > 1 / k else ("no" if picks.ci_high < 1 / k else "not determined")
    mine = [_right(u.score, u.truth) for u in decided]
    theirs = [_right(u.baselines[baseline], u.truth) for u in decided]
    better = sum(a and not b for a, b in zip(mine, theirs))
    worse = sum(b and not a for a, b in zip(mine, theirs))
    if not better + worse or sps.binomtest(better, better + worse).pvalue >= 1 - LEVEL:
        return "not determined"
    return "yes" if better > worse else "no"
