"""`transferbench recommend`: which regime to train on a target, chosen from short trainings,
and (``--validate``) its regret against the exhaustive sweep it replaces.

A recommend config is a run config whose every experiment is a *target*: one source half,
one target half, and the regimes to choose from as treatments (``frozen``, ``finetune``,
``surgical`` or ``surgical_head``, ``lp_ft``), at every n the experiment lists; the base of
the target half is the ``scratch`` regime. ``lp_ft`` is kept at n = L-1 only (a linear probe
on the whole copied network, then fine-tuning: Kumar et al.'s LP-FT). That is the *sweep*.

The advice, in each unit (a split seed and a direction) on its own:

1. trains the unit's source network (the base network of the source half: what a
   practitioner already has; counted in neither the advice's compute nor the sweep's), or
   reads it from the experiment's weights file (``source: X``);
2. holds :data:`HOLDOUT` of every class's *training* examples out of the target
   (:class:`~transferbench.holdout.HoldoutSource`): every short training learns from the rest
   and is scored on them, never on the eval examples its regret is read on;
3. starts from the default, ``finetune`` at n = L - :data:`DEFAULT_DEPTH` (every layer
   copied but the last hidden one, which is new with the classifier; everything fine-tuned),
   and trains it and its *challengers* (scratch, and ``finetune`` at every smaller n: the
   regimes that learn every layer from the start and copy fewer layers, so converge no
   faster) for :data:`PROBE` of the training length;
4. departs from the default only when the best challenger's held-out top-1 beats the
   default's by more than the noise of the two scores (a two-proportion z bound at a
   family-wise :data:`ALPHA`, Bonferroni over the challengers): :func:`depart`;
5. trains its choice at full length, on all the training examples: the network it hands
   over, whose accuracy is the advice's expected accuracy (over the units, with its interval).

Frozen, surgical and LP-FT regimes are never challengers: they reach their final accuracy
sooner than fine-tuning from fewer copied layers (docs/your-data.md section 8 has the measured
short trainings), so a lead at a quarter of the length is largely speed, not the final
accuracy (0.5's advice, which ranked every regime at 1/16 of the length, chose them for that
reason). Every network it trains it trains itself
(:func:`~transferbench.trainer.train_job`, seeded as the sweep's jobs are), and it reads
nothing from the run directory but the source networks' checkpoints: never a result of the
sweep it is validated against (a test spies on every read), nor an eval example before its
choice (a test poisons them). The settings (:data:`HOLDOUT`, :data:`PROBE`, :data:`ALPHA`,
the challengers) were fixed before the first validation on fresh units, and
:data:`DEFAULT_DEPTH` (first L-1: fine-tune everything) before the second (docs/your-data.md).

Beside the advice, in each unit and from the same source network and the held-out training
examples alone, four selectors choose (rows of the validation, not the printed advice):
0.5's advice (:func:`_halving`: every regime at 1/16 of the length, the :data:`KEEP` best at
1/4), Auto-RGN (the surgical block with the largest relative gradient norm), TransRate (the
frozen n with the highest score) and the kNN-pruned halving (:func:`prune`, then the same
halving); see :mod:`transferbench.selectors` and docs/your-data.md section 8.

Compute is the training FLOPs of :func:`train_flops`, in the sweep's unit; the source
networks are counted in neither. ``--validate`` then runs the sweep into the same run
directory and reports :mod:`transferbench.regret`'s table: the advice and each fixed
heuristic, per target and over all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, cast

import torch
from rich.console import Console

from .api import Prepared
from .compute import forward_gflop
from .config import Config
from .context import TrainContext
from .devices import resolve_device
from .engine import run_plan
from .errors import ConfigError, TrainingFailed
from .estimator import Estimator
from .files import atomic_write_text
from .holdout import HoldoutSource
from .jobs import Job
from .network import build_meta, input_shape, start_step
from .plan import Plan
from .plugins import get_registry
from .reading import ProtocolReading
from .regret import HEURISTICS, Advice, Regime, RegretRow, Sweep, heuristics, overall, regret
from .schedule import TrainingLength
from .selectors import best_layer, layer_scores, source_rgn
from .sources import load_state
from .stats import Difference, over_units
from .store import RunStore
from .trainer import train_job

__all__ = ["ALPHA", "DEFAULT_DEPTH", "HOLDOUT", "KEEP", "PROBE", "PROTOCOL_KINDS", "RUNGS", "AdviceResult", "Candidate",
           "SweepPlan", "advise", "depart", "read_sweep_plan", "train_flops", "validate"]

#: The regime kind of each protocol a recommend config may name.
PROTOCOL_KINDS = {"frozen": "frozen", "finetune": "finetune", "surgical": "surgical", "surgical_head": "surgical",
                  "lp_ft": "lp_ft"}

#: The share of every class's training examples the advice holds out to score its short
#: trainings (and the selectors' held-out scores), so it never chooses on the eval examples
#: its regret is read on. Fixed before the fresh-unit validation: one in six keeps 5/6 of the
#: examples to learn from and gives 10 to 40 held-out examples a class on the recommend
#: targets.
HOLDOUT = 1 / 6

#: The fraction of the training length of the advice's short trainings (the default and its
#: challengers). A quarter: long enough that 0.5's second rung ranked its three regimes, short
#: enough that the default and up to 6 challengers cost under 2 networks.
PROBE = 1 / 4

#: The family-wise error rate of a departure from the default (Bonferroni over the challengers).
ALPHA = 0.05

#: The default regime is ``finetune`` at n = L - DEFAULT_DEPTH: copy every layer but the last
#: hidden one (new, with the classifier) and fine-tune everything. Written after 0.6's first
#: validation (docs/your-data.md: on its 24 units the best regime was a fine-tuning with the
#: upper layers new in most targets, and this rule's regret was +0.42 and +0.49 against
#: fine-tuning everything's +0.84 and +0.98), before the units that judge it ran. Why it helps
#: (the last hidden layer too specific to the source's task, Yosinski et al.'s reading) is a
#: hypothesis here: no run tests it.
DEFAULT_DEPTH = 2

#: Successive halving (0.5's advice, now a row): the fractions of the full training length of the two rungs of short
#: trainings. Chosen before the first run: the first rung trains every regime (about 23 per
#: unit for an 8-layer network) for 1/16 of the length, about 1.4 networks' worth; the
#: second trains :data:`KEEP` of them for 1/4, 0.75 networks; with the full training of the
#: choice the advice spends about 3.2 of the sweep's 23 networks (14%), under the 20% the
#: issue sets, before any saving from frozen layers.
RUNGS = (1 / 16, 1 / 4)

#: How many regimes of the first rung go on to the second.
KEEP = 3

#: The rows of a validation besides the advice and the fixed heuristics.
ADVICE = "advice (fine-tune, last hidden layer new, unless beaten)"
HALVING = "successive halving (0.5's advice)"
AUTO_RGN = "Auto-RGN (surgical k of the largest RGN)"
TRANSRATE = "TransRate (frozen n of the highest TransRate)"
PRUNED = "successive halving, kNN-pruned"

#: The estimator whose layer-n curve picks TransRate's n.
TRANSRATE_ESTIMATOR = "transrate"

#: The estimator-informed halving (:data:`PRUNED`): 0.5's successive halving over the
#: regimes left after :func:`prune`, which drops the frozen regimes deeper than the layer
#: where this estimator's curve (the source's layer-n features on the target, held-out
#: top-1 of a kNN vote among the training examples) peaks. Fixed before its first
#: validation: kNN because its score is an accuracy on the target, the quantity a frozen
#: regime's upper layers start from, and cheap (no fitting); "deeper than the peak" because a
#: frozen layer whose features score lower than a layer below it freezes features less
#: useful to the target (Yosinski et al.'s specificity) than a shallower cut would. It only
#: removes candidates, so it can only save compute and change the choice when the advice
#: would have kept a pruned regime.
PRUNE_ESTIMATOR = "knn"

Unit = tuple[str, int, str]  # (experiment, split seed, target half), as analysis.Unit

#: The run directories under a recommend's ``--out``: the source networks (all the advice
#: reads), and the sweep (``--validate``).
SOURCES, SWEEP = "sources", "sweep"


@dataclass(frozen=True)
class Candidate:
    """One regime of the sweep in one unit: the job that trains it."""

    unit: Unit
    regime: Regime
    job: Job


@dataclass
class SweepPlan:
    """The sweep a recommend config describes, read from its plan.

    Attributes:
        plan: the plan of the sweep (``lp_ft`` at n = L-1 only; no estimators).
        candidates: every regime of every unit.
        sources: unit -> the job of its source network (none for a weights file: the
            candidates' jobs carry it, ``job.external``).
    """

    plan: Plan
    candidates: list[Candidate]
    sources: dict[Unit, Job]

    def source_state(self, unit: Unit, store: RunStore) -> dict[str, torch.Tensor] | None:
        """The unit's source network's weights: its checkpoint, or its weights file."""
        if unit in self.sources:
            return store.load_checkpoint(self.sources[unit].id)
        external = next((c.job.external for c in self.of(unit) if c.job.external is not None), None)
        return None if external is None else load_state(external.file)

    @property
    def num_layers(self) -> int:
        return self.plan.num_layers

    @property
    def units(self) -> list[Unit]:
        return sorted({c.unit for c in self.candidates})

    def targets(self) -> list[str]:
        return list(dict.fromkeys(c.unit[0] for c in self.candidates))

    def of(self, unit: Unit) -> list[Candidate]:
        return [c for c in self.candidates if c.unit == unit]

    def sources_plan(self) -> Plan:
        """The plan of the source networks alone (what the advice may read)."""
        jobs = {j.id: j for j in self.sources.values()}
        return replace(self.plan, jobs=jobs, cells=[c for c in self.plan.cells if c.job_id in jobs], estimates=[])


def read_sweep_plan(prepared: Prepared) -> SweepPlan:
    """The sweep of a recommend config (see the module's docstring).

    Raises:
        ConfigError: an experiment whose treatments are not one source and one target half,
            or name a protocol that is not a regime, or with no base of the target half.
    """
    config, plan = prepared.config, prepared.plan
    L = plan.num_layers
    problems: list[tuple[str, str]] = []
    halves: dict[str, tuple[str, str]] = {}
    for i, exp in enumerate(config.experiments):
        # one key per weights file (a named source, an inline checkpoint, the experiment's X), so two
        # files are never read as one source: a recommend target has exactly one
        pairs = {((f"X@{t.source_name or t.source}" if t.source != "X" else "X") if t.external else t.half,
                  t.target) for t in exp.treatments}
        names = {t.protocol.name for t in exp.treatments}
        if len(pairs) != 1 or next(iter(pairs))[0] is None:
            problems.append((f"experiments.{i}.treatments", "a recommend target copies from one source half into "
                             f"one target half; got {sorted(map(str, pairs))}"))
            continue
        unknown = sorted(names - set(PROTOCOL_KINDS))
        if unknown:
            problems.append((f"experiments.{i}.treatments", f"{', '.join(unknown)} is not a regime recommend knows "
                             f"({', '.join(PROTOCOL_KINDS)})"))
            continue
        halves[exp.name] = next(iter(pairs))  # type: ignore[assignment]
    if problems:
        raise ConfigError(problems)
    candidates: list[Candidate] = []
    sources: dict[Unit, Job] = {}
    keep: set[str] = set()
    for cell in plan.cells:
        job = plan.jobs[cell.job_id]
        source, target = halves[cell.experiment]
        unit: Unit = (cell.experiment, cell.split_seed, target)
        if job.kind == "base":
            if job.target == target:
                candidates.append(Candidate(unit, Regime("scratch"), job))
                keep.add(job.id)
            continue
        if job.kind != "transfer" or job.protocol_spec is None:
            continue
        kind = PROTOCOL_KINDS[job.protocol_spec["name"]]
        if kind == "lp_ft" and job.n != L - 1:
            continue
        candidates.append(Candidate(unit, Regime(kind, job.n), job))
        keep.add(job.id)
        if job.depends_on:
            sources[unit] = plan.jobs[job.depends_on]
            keep.add(job.depends_on)
    missing = sorted({c.unit[0] for c in candidates} - {c.unit[0] for c in candidates if c.regime.kind == "scratch"})
    if missing:
        raise ConfigError([("experiments", f"{', '.join(missing)}: no base network of the target half (the scratch "
                            "regime): add it to `bases:`")])
    jobs = {jid: j for jid, j in plan.jobs.items() if jid in keep}
    sweep = replace(plan, jobs=jobs, cells=[c for c in plan.cells if c.job_id in jobs], estimates=[])
    return SweepPlan(sweep, candidates, sources)


# --------------------------------------------------------------------------- compute


def prefix_gflops(config: Config, components: Any, num_classes: int) -> list[float] | None:
    """GFLOP of one example's forward pass through layers 1..k, for k = 0..L (k = L: the
    whole network); None when the architecture cannot be cut (``split_at``)."""
    from torch.utils.flop_counter import FlopCounterMode

    arch = components.architecture
    shape = input_shape(config.train.augment, components.data)
    model = build_meta(arch, num_classes, shape)
    total = forward_gflop(config, components, num_classes)
    out = [0.0]
    for k in range(1, len(list(arch.layers(model)))):
        parts = arch.split_at(model, k)
        if parts is None:
            return None
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            parts[0](torch.empty(1, *shape))
        out.append(counter.get_total_flops() / 1e9)
    return [*out, total]


def train_flops(reading: ProtocolReading, steps: int, batch: int, prefix: Sequence[float]) -> float:
    """Training FLOPs of a network: every step a forward pass through every layer, and a
    backward pass (twice the forward's FLOPs) through the layers from the lowest one that
    learns at that step to the top (a staged protocol's phases each counted as they are).
    An upper bound where the frozen-feature cache computes a frozen prefix once."""
    total = prefix[-1]
    learns = [(i, start_step(s, steps)) for i, (t, s) in enumerate(zip(reading.trained, reading.start)) if t]
    bounds = sorted({0, steps, *(min(steps, b) for _, b in learns)})
    flops = 0.0
    for lo, hi in zip(bounds, bounds[1:]):
        active = [i for i, b in learns if b <= lo]
        backward = 2 * (total - prefix[min(active)]) if active else 0.0
        flops += (hi - lo) * batch * (total + backward)
    return flops * 1e9


class Costs:
    """The training FLOPs of any candidate at any fraction of the full length."""

    def __init__(self, config: Config, components: Any, sweep: SweepPlan) -> None:
        self.config = config
        self.batch = config.train.batch_size
        num_classes = max(c.job.num_classes for c in sweep.candidates)
        per_class = _train_examples(components, len(components.data.classes()))
        self.per_class = per_class
        self.prefix = prefix_gflops(config, components, num_classes) or \
            [0.0] * sweep.num_layers + [forward_gflop(config, components, num_classes)]

    def steps(self, job: Job, fraction: float = 1.0) -> int:
        train = _shortened(self.config, fraction).train
        examples = None if self.per_class is None else int(sum(self.per_class[i] for i in job.classes))
        return TrainingLength.of(train, self.config.eval, examples).total

    def of(self, job: Job, fraction: float = 1.0) -> float:
        reading = job.reading or ProtocolReading.of(None, 0, len(self.prefix) - 1)
        return train_flops(reading, self.steps(job, fraction), self.batch, self.prefix)


def _train_examples(components: Any, classes: int) -> list[int] | None:
    import numpy as np

    try:
        labels = np.asarray(components.data.load("train").with_format("numpy")["label"])
    except Exception:  # noqa: BLE001 - a stream: lengths are in steps
        return None
    return [int(c) for c in np.bincount(labels, minlength=classes)]


def _shortened(config: Config, fraction: float) -> Config:
    """``config`` with its training ``fraction`` as long (evaluated once, at the end)."""
    if fraction == 1.0:
        return config
    t = config.train
    length = {"epochs": t.epochs * fraction} if t.epochs is not None else {"steps": max(1, round((t.steps or 1)
                                                                                                 * fraction))}
    every = (t.epochs * fraction) if t.epochs is not None else None
    return config.model_copy(update={"train": t.model_copy(update=length),
                                     "eval": config.eval.model_copy(update={"every": every, "best_k": 1})})


# --------------------------------------------------------------------------- the advice


@dataclass(frozen=True)
class Selection:
    """What a selector without short trainings (or the pruned advice) chose in one unit.

    Attributes:
        regime: its choice.
        flops: what it spent: its signal (gradients, features, the estimator's arithmetic, or
            short trainings) and one full training of its choice.
        signal: what it read, for the record: layer -> RGN or score (empty for the pruned
            advice's trainings, which are in ``probes``).
    """

    regime: Regime
    flops: float
    signal: dict[int, float] = field(default_factory=dict)


@dataclass
class AdviceResult:
    """What the advice did in every unit.

    Attributes:
        choice: unit -> the regime it chose.
        accuracy: unit -> the top-1 of its choice trained at full length (by the advice); None
            when that training failed (diverged).
        spent: unit -> the FLOPs it spent (its short trainings and the full one).
        sweep_cost: unit -> the FLOPs the sweep spends there.
        probes: every short training: unit, regime, fraction of the length, held-out top-1, FLOPs.
        evidence: unit -> what the departure rule read (:func:`depart`): the default, each
            challenger's held-out top-1, the margin, whether it departed.
        selections: row name (:data:`HALVING`, :data:`PRUNED`, :data:`AUTO_RGN`,
            :data:`TRANSRATE`) -> unit -> its :class:`Selection`.
    """

    choice: dict[Unit, Regime] = field(default_factory=dict)
    accuracy: dict[Unit, float | None] = field(default_factory=dict)
    spent: dict[Unit, float] = field(default_factory=dict)
    sweep_cost: dict[Unit, float] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[Unit, dict[str, Any]] = field(default_factory=dict)
    selections: dict[str, dict[Unit, Selection]] = field(default_factory=dict)

    def expected(self, target: str) -> Difference | None:
        """The top-1 its choices reached in ``target``'s units, with the interval over them (a
        unit whose full training failed is left out: ``units`` says how many remain; None when
        none is left)."""
        values = [v for u, v in self.accuracy.items() if u[0] == target and v is not None]
        return over_units(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {"format": "transferbench.advice/3", "holdout": HOLDOUT, "probe": PROBE, "alpha": ALPHA,
                "rungs": list(RUNGS), "keep": KEEP,
                "units": [{"unit": list(u), "choice": str(r), "top1": self.accuracy[u], "flops": self.spent[u],
                           "sweep_flops": self.sweep_cost[u], "evidence": self.evidence.get(u)}
                          for u, r in self.choice.items()],
                "selectors": {name: [{"unit": list(u), "choice": str(s.regime), "flops": s.flops,
                                      "signal": {str(k): v for k, v in s.signal.items()}}
                                     for u, s in by_unit.items()]
                              for name, by_unit in self.selections.items()},
                "probes": self.probes}


class _Probes:
    """The short trainings of one unit, each trained once whichever halving asks for it."""

    def __init__(self, contexts: dict[float, TrainContext], state: dict[str, torch.Tensor] | None, costs: Costs,
                 unit: Unit, log: list[dict[str, Any]]) -> None:
        self.contexts, self.state, self.costs, self.unit, self.log = contexts, state, costs, unit, log
        self.done: dict[tuple[Regime, float], float | None] = {}

    def top1(self, c: Candidate, rung: int, fraction: float) -> float | None:
        key = (c.regime, fraction)
        if key not in self.done:
            try:
                record, _ = train_job(c.job, self.contexts[fraction], self.state if c.job.kind == "transfer" else None)
                self.done[key] = record.top1
            except TrainingFailed:  # diverged: the regime is out (recorded as such)
                self.done[key] = None
            self.log.append({"unit": list(self.unit), "regime": str(c.regime), "rung": rung, "fraction": fraction,
                             "top1": self.done[key], "flops": self.costs.of(c.job, fraction)})
        return self.done[key]


def _halving(pool: list[Candidate], probes: _Probes, costs: Costs) -> tuple[Candidate, float]:
    """Successive halving over ``pool`` (:data:`RUNGS`, :data:`KEEP`): the choice, and the
    FLOPs of its short trainings (each counted, even when another halving trained it first)."""
    spent = 0.0
    for rung, fraction in enumerate(RUNGS):
        scores: dict[Regime, float] = {}
        for c in pool:
            top1 = probes.top1(c, rung, fraction)
            spent += costs.of(c.job, fraction)
            scores[c.regime] = -1.0 if top1 is None else top1
        ranked = sorted(pool, key=lambda c: (-scores[c.regime], costs.of(c.job), c.regime))
        pool = ranked[:KEEP] if rung == 0 else ranked[:1]
    return pool[0], spent


def depart(default: float, challengers: Mapping[Regime, float | None], examples: int,
           alpha: float = ALPHA) -> tuple[Regime | None, float]:
    """The departure rule: the challenger to train instead of the default, or None; and the
    margin its lead had to exceed.

    The best challenger (held-out top-1; a diverged one is out) replaces the default only when
    its lead exceeds ``z * sqrt(p_d (1 - p_d) / m + p_c (1 - p_c) / m)``, the noise of two
    top-1s on ``examples`` (m) held-out examples, with z the two-sided normal quantile at
    ``alpha`` over the number of challengers (Bonferroni: the best of several is picked).
    Scoring both networks on the same examples correlates their errors, which makes the true
    noise of the difference smaller than this bound: a conservative rule, by design ("depart
    only on evidence")."""
    scored = {r: v for r, v in challengers.items() if v is not None}
    if not scored or examples <= 0:
        return None, math.inf
    best = max(sorted(scored), key=lambda r: scored[r])
    z = NormalDist().inv_cdf(1 - alpha / (2 * len(challengers)))
    p, q = default, scored[best]
    margin = z * math.sqrt(max(p * (1 - p), 0.0) / examples + max(q * (1 - q), 0.0) / examples)
    return (best if q - p > margin else None), margin


def _anchored(pool: list[Candidate], probes: _Probes, costs: Costs, num_layers: int, held: HoldoutSource
              ) -> tuple[Candidate, float, dict[str, Any]] | None:
    """The advice in one unit (the module's docstring): its choice, the FLOPs of its short
    trainings and the evidence it read; None when the sweep has no ``finetune`` regime to start
    from (the caller then falls back to the halving)."""
    finetune = sorted((c for c in pool if c.regime.kind == "finetune"), key=lambda c: c.regime.n)
    if not finetune:
        return None
    # the deepest finetune n at or below L - DEFAULT_DEPTH; the shallowest when all are deeper
    default = ([c for c in finetune if c.regime.n <= num_layers - DEFAULT_DEPTH] or finetune[:1])[-1]
    challengers = [c for c in pool if c.regime.kind == "scratch"] + \
        [c for c in finetune if c.regime.n < default.regime.n]
    spent = 0.0
    scores: dict[Regime, float | None] = {}
    for c in (default, *challengers):
        scores[c.regime] = probes.top1(c, 1, PROBE)
        spent += costs.of(c.job, PROBE)
    mine = scores.pop(default.regime)
    examples = held.examples(default.job.classes)
    if mine is None:  # the default diverged: the best challenger that did not
        best = max((r for r, v in scores.items() if v is not None), key=lambda r: scores[r] or 0.0, default=None)
        chosen, margin = best, 0.0
    else:
        chosen, margin = depart(mine, scores, examples)
    evidence = {"default": str(default.regime), "default_top1": mine, "challengers": {str(r): v for r, v in
                                                                                      scores.items()},
                "held_out": examples, "margin": margin, "departed": chosen is not None}
    pick = default if chosen is None else next(c for c in challengers if c.regime == chosen)
    return pick, spent, evidence


def _because(evidence: Mapping[str, Any]) -> str:
    """Why the advice chose what it chose in one unit, as a clause of its printed line."""
    scored = {r: v for r, v in (evidence.get("challengers") or {}).items() if v is not None}
    if evidence.get("default") is None:
        return " (no finetune regime to start from: successive halving)"
    if evidence.get("default_top1") is None:
        return f" ({evidence['default']} diverged in its short training: the best challenger)"
    if not scored:
        return f" (the default, {evidence['default']}: no challenger trained)"
    best = max(sorted(scored), key=lambda r: scored[r])
    lead = 100 * (scored[best] - evidence["default_top1"])
    verb = "departed from" if evidence["departed"] else "kept"
    return (f" ({verb} {evidence['default']}: held-out top-1 {100 * evidence['default_top1']:.1f}%, best challenger "
            f"{best} {lead:+.1f} points, margin {100 * evidence['margin']:.1f} on {evidence['held_out']} examples)")


def _estimators() -> dict[str, Estimator]:
    """The estimators the selectors read (:data:`TRANSRATE_ESTIMATOR`, :data:`PRUNE_ESTIMATOR`),
    with their default settings, resolved by name here (the edge)."""
    registry = get_registry()
    out: dict[str, Estimator] = {}
    for name in (TRANSRATE_ESTIMATOR, PRUNE_ESTIMATOR):
        factory = registry.get("estimator", name).factory
        out[name] = cast("Estimator", factory(factory.Params()))
    return out


def _selections(ctx: TrainContext, pool: list[Candidate], state: dict[str, torch.Tensor] | None, costs: Costs,
                estimators: dict[str, Estimator]) -> tuple[dict[str, Selection], dict[int, float], float]:
    """Auto-RGN's and TransRate's choices in one unit; the :data:`PRUNE_ESTIMATOR` curve (for
    the pruned advice; empty when the sweep has no frozen regime) and its FLOPs. A selector
    whose regimes the sweep lacks (no surgical, no frozen) or that has no source network is
    left out."""
    out: dict[str, Selection] = {}
    if state is None:
        return out, {}, 0.0
    total = costs.prefix[-1] * 1e9
    surgical = sorted((c for c in pool if c.regime.kind == "surgical"), key=lambda c: c.regime.n)
    if surgical:
        rgn, examples = source_rgn(ctx, surgical[0].job, state)
        k = best_layer({i + 1: v for i, v in enumerate(rgn)}, (c.regime.n for c in surgical))
        best = next(c for c in surgical if c.regime.n == k)
        # forward and backward (twice the forward) through the whole network, per example
        out[AUTO_RGN] = Selection(best.regime, examples * 3 * total + costs.of(best.job),
                                  {i + 1: v for i, v in enumerate(rgn)})
    frozen = sorted((c for c in pool if c.regime.kind == "frozen"), key=lambda c: c.regime.n)
    if not frozen:
        return out, {}, 0.0
    ns = [c.regime.n for c in frozen]
    curves = layer_scores(ctx, frozen[-1].job, state, ns, estimators)
    transrate = curves.scores[TRANSRATE_ESTIMATOR]
    n = best_layer(transrate, ns)
    best = next(c for c in frozen if c.regime.n == n)
    features = math.fsum(costs.prefix[n] for n in ns) * 1e9
    classes = frozen[0].job.num_classes
    arithmetic = math.fsum(estimators[TRANSRATE_ESTIMATOR].cost_flops(curves.n_train, curves.n_eval, curves.dims[n],
                                                                       classes) or 0.0 for n in ns)
    out[TRANSRATE] = Selection(best.regime, curves.n_train * features + arithmetic + costs.of(best.job), transrate)
    knn = curves.scores[PRUNE_ESTIMATOR]
    knn_cost = math.fsum(estimators[PRUNE_ESTIMATOR].cost_flops(curves.n_train, curves.n_eval, curves.dims[n],
                                                                classes) or 0.0 for n in ns)
    return out, knn, (curves.n_train + curves.n_eval) * features + knn_cost


def prune(pool: Sequence[Candidate], curve: Mapping[int, float]) -> list[Candidate]:
    """The pruned advice's candidates: ``pool`` without the frozen regimes deeper than the
    layer where ``curve`` (the source's layer-n :data:`PRUNE_ESTIMATOR` score on the
    target) peaks (ties: the deepest): freezing a layer whose features score below a lower
    layer's keeps the less transferable ones (see :data:`PRUNE_ESTIMATOR`)."""
    if not curve:
        return list(pool)
    peak = best_layer(curve, curve, ties="deeper")
    return [c for c in pool if not (c.regime.kind == "frozen" and c.regime.n > peak)]


def advise(prepared: Prepared, sweep: SweepPlan, run_dir: Path, console: Console) -> AdviceResult:
    """The advice in every unit of ``sweep`` (see the module's docstring). The source networks
    are trained into ``run_dir/sources`` (resumed from there), a run directory of their own
    that no sweep network enters; the advice reads nothing else, scores its short trainings on
    :data:`HOLDOUT` of the target's training examples, and writes ``run_dir/advice.json``.
    Beside it, the selectors (0.5's halving, the kNN-pruned halving, Auto-RGN, TransRate)
    choose in every unit, from the same source networks and held-out examples."""
    config, components = prepared.config, prepared.components
    keep_sources = config.model_copy(update={"output": config.output.model_copy(update={"checkpoints": "all"})})
    run_plan(keep_sources, components, sweep.sources_plan(), run_dir / SOURCES, console)
    store = RunStore(run_dir / SOURCES)
    device = resolve_device(config.device)
    costs = Costs(config, components, sweep)
    held = HoldoutSource(components.data, HOLDOUT, config.seed)
    on_held = replace(components, data=held)
    # short trainings and the selectors' signals: on the holdout; the handed-over network: on everything
    contexts = {f: TrainContext(_shortened(config, f), on_held, device) for f in (*RUNGS, PROBE)}
    signals_ctx = TrainContext(config, on_held, device)
    full = TrainContext(config, components, device)
    estimators = _estimators()
    result = AdviceResult()
    for unit in sweep.units:
        state = sweep.source_state(unit, store)
        pool = sweep.of(unit)
        probes = _Probes(contexts, state, costs, unit, result.probes)
        halved, short = _halving(pool, probes, costs)
        anchored = _anchored(pool, probes, costs, sweep.num_layers, held)
        if anchored is None:  # no finetune regime to start from: the halving is the advice
            chosen, spent, evidence = halved, short, {"default": None, "departed": None}
        else:
            chosen, spent, evidence = anchored
        try:
            record, _ = train_job(chosen.job, full, state if chosen.job.kind == "transfer" else None)
            top1 = record.top1
        except TrainingFailed as exc:  # the handed-over network diverged: said, and left out of the expected top-1
            console.print(f"[red]{unit[0]} seed {unit[1]}: the full training of {chosen.regime} failed ({exc})[/red]")
            top1 = None
        spent += costs.of(chosen.job)
        result.choice[unit], result.accuracy[unit], result.spent[unit] = chosen.regime, top1, spent
        result.evidence[unit] = evidence
        result.sweep_cost[unit] = math.fsum(costs.of(c.job) for c in sweep.of(unit))
        console.print(f"{unit[0]} seed {unit[1]} ({unit[2]}): {chosen.regime}, top-1 "
                      f"{'failed' if top1 is None else f'{100 * top1:.1f}%'}, "
                      f"{100 * spent / result.sweep_cost[unit]:.1f}% of the sweep's compute{_because(evidence)}")
        # the halving's full training is counted, not run (the same seeded job as the sweep's network)
        selected = {HALVING: Selection(halved.regime, short + costs.of(halved.job))}
        more, curve, curve_cost = _selections(signals_ctx, pool, state, costs, estimators)
        selected.update(more)
        if curve:
            # the pruned halving: its short trainings already run are not run again, but counted
            mine, pruned_short = _halving(prune(pool, curve), probes, costs)
            selected[PRUNED] = Selection(mine.regime, curve_cost + pruned_short + costs.of(mine.job), curve)
        for name, selection in selected.items():
            result.selections.setdefault(name, {})[unit] = selection
    atomic_write_text(run_dir / "advice.json", json.dumps(result.to_json(), indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- validation


def sweeps_of(sweep: SweepPlan, store: RunStore, costs: Costs) -> list[Sweep]:
    """The sweep's results read from the run directory, one :class:`Sweep` per target."""
    out = []
    for target in sweep.targets():
        accuracy: dict[Regime, dict[Hashable, float]] = {}
        cost: dict[Regime, float] = {}
        for c in sweep.candidates:
            record = store.read_record(c.job.id) if c.unit[0] == target else None
            if record is None or record.status != "ok" or record.top1 is None:
                continue
            accuracy.setdefault(c.regime, {})[c.unit] = record.top1
            cost[c.regime] = costs.of(c.job)
        out.append(Sweep(target, accuracy, cost, sweep.num_layers))
    return out


def selector_advice(selections: Mapping[str, Mapping[Unit, Selection]], units: Sequence[Unit]) -> list[Advice]:
    """The halving, the pruned halving, Auto-RGN and TransRate as :class:`~transferbench.regret.Advice` in
    ``units`` (those it chose in every one of them)."""
    out = []
    for name in (HALVING, PRUNED, AUTO_RGN, TRANSRATE):
        by_unit = selections.get(name, {})
        if units and all(u in by_unit for u in units):
            out.append(Advice(name, {u: by_unit[u].regime for u in units}, {u: by_unit[u].flops for u in units}))
    return out


def validate(prepared: Prepared, sweep: SweepPlan, advice: AdviceResult, run_dir: Path, console: Console
             ) -> dict[str, list[RegretRow]]:
    """Run the sweep into ``run_dir/sweep`` and compute every row: target -> the advice, then
    the fixed heuristics; ``"all"`` -> each of them over every target."""
    run_plan(prepared.config, prepared.components, sweep.plan, run_dir / SWEEP, console)
    costs = Costs(prepared.config, prepared.components, sweep)
    tables: dict[str, list[RegretRow]] = {}
    for s in sweeps_of(sweep, RunStore(run_dir / SWEEP), costs):
        units = cast("list[Unit]", s.units)
        mine = Advice(ADVICE, {u: advice.choice[u] for u in units}, {u: advice.spent[u] for u in units})
        tables[s.target] = [regret(s, a) for a in (mine, *selector_advice(advice.selections, units), *heuristics(s))]
    by_name: dict[str, list[RegretRow]] = {}
    for rows in list(tables.values()):
        for r in rows:
            by_name.setdefault(r.advice, []).append(r)
    tables["all"] = [overall(rows) for rows in by_name.values()]
    return tables


#: The issue's target: mean regret at most this many top-1 points ...
TARGET_REGRET = 1.0
#: ... at at most this fraction of the sweep's compute.
TARGET_FRACTION = 0.2


def _ci(d: Difference) -> str:
    """A regret's 95% interval as the tables and sentences print it."""
    return "not determined" if not d.determined else f"{d.ci_low:+.2f} to {d.ci_high:+.2f}"


def target_verdict(row: RegretRow) -> str:
    """Whether ``row`` meets the target, judged on its interval, not its mean alone: met when
    the whole 95% interval of its regret is at or below :data:`TARGET_REGRET` (and its compute
    within :data:`TARGET_FRACTION`), NOT met when the whole interval is above it (or the compute
    over), and not shown either way when the interval contains it."""
    d, frac = row.regret, row.fraction
    said = f"mean regret {d.value:.2f} points ({_ci(d)}) at {100 * frac:.1f}% of the compute"
    if frac > TARGET_FRACTION:
        return f"NOT met: its compute is above {100 * TARGET_FRACTION:.0f}% ({said})"
    if not d.determined or d.ci_low is None or d.ci_high is None:
        return f"not determined: too few units for an interval ({said})"
    if d.ci_high <= TARGET_REGRET:
        return f"met: the whole interval is at or below {TARGET_REGRET:.1f} point ({said})"
    if d.ci_low > TARGET_REGRET:
        return f"NOT met: the whole interval is above {TARGET_REGRET:.1f} point ({said})"
    return (f"not shown: the interval contains {TARGET_REGRET:.1f} point ({said}); more units would decide "
            f"(the mean alone is {'within' if d.value <= TARGET_REGRET else 'above'} it)")


def paired(advice: RegretRow, other: RegretRow) -> Difference | None:
    """The advice's regret minus ``other``'s, unit by unit over the units both have, with its
    interval over those units (None: no common unit). Negative: the advice gave up less."""
    common = [u for u in advice.per_unit if u in other.per_unit]
    return over_units(advice.per_unit[u] - other.per_unit[u] for u in common) if common else None


def verdict_lines(rows: Sequence[RegretRow]) -> list[str]:
    """The plain sentences under the table: the issue's target for the advice and 0.5's
    halvings (:func:`target_verdict`: judged on the interval); the advice against each fixed
    heuristic and each selector, by the paired difference of their regrets over units (beyond
    noise only when its interval excludes zero)."""
    advice, others = rows[0], rows[1:]
    out = []
    for r in (advice, *(r for r in others if r.advice in (HALVING, PRUNED))):
        out.append(f"Target (mean regret <= {TARGET_REGRET:.1f} point at <= {100 * TARGET_FRACTION:.0f}% of the "
                   f"sweep's compute), {r.advice}: {target_verdict(r)}.")
    beaten: list[str] = []
    not_beaten: list[str] = []
    for r in others:
        if r.reads_sweep or r.advice not in (*HEURISTICS, HALVING, PRUNED, AUTO_RGN, TRANSRATE):
            continue
        d = paired(advice, r)
        if d is None:
            continue
        same = all(abs(advice.per_unit[u] - r.per_unit[u]) < 1e-9 for u in advice.per_unit if u in r.per_unit)
        if same:
            verdict = "the same regret in every unit (the same choices, or as good)"
        elif d.determined and d.ci_high is not None and d.ci_high < 0:
            verdict = "the advice gave up less, beyond noise"
        elif d.determined and d.ci_low is not None and d.ci_low > 0:
            verdict = "the advice gave up MORE, beyond noise"
        else:
            verdict = "not separated (the interval contains 0)"
        out.append(f"Against {r.advice} ({100 * r.fraction:.1f}% of the compute): advice minus it "
                   f"{d.value:+.2f} points ({_ci(d)}, {d.units} units): {verdict}.")
        if r.advice in HEURISTICS:
            (beaten if verdict == "the advice gave up less, beyond noise" else not_beaten).append(r.advice)
    if not_beaten:
        out.append(f"The advice does NOT beat every fixed heuristic beyond noise: not {', '.join(not_beaten)}.")
    elif beaten:
        out.append("The advice beats every fixed heuristic beyond noise.")
    if advice.loo is not None:
        # a diagnostic beside the verdict (whose metric stays the regret above): how much of it
        # is the reference's own selection noise
        d = advice.loo
        out.append(f"Diagnostic, not the verdict's metric: against a best regime chosen on the other units (leave "
                   f"one unit out, free of the winner's curse of choosing it on the same units), the advice's "
                   f"regret is {d.value:+.2f} points ({_ci(d)}).")
    return out


def table_rows(rows: Sequence[RegretRow]) -> list[list[str]]:
    """One row per advice: name, regret with its interval, compute fraction, what it chose."""
    out = []
    for r in rows:
        d = r.regret
        ci = _ci(d)
        chose = ", ".join(f"{regime} x{count}" for regime, count in sorted(r.choices.items(), key=lambda kv: -kv[1]))
        out.append([r.advice, f"{d.value:+.2f}", ci, str(d.units), f"{100 * r.fraction:.1f}%", chose])
    return out


def _difference_json(d: Difference) -> dict[str, Any]:
    return {"value": d.value, "ci_low": d.ci_low, "ci_high": d.ci_high, "units": d.units}


def row_json(r: RegretRow) -> dict[str, Any]:
    """One row of a regret table: what ``recommend --json`` prints for it (regret in points)."""
    return {"advice": r.advice, "regret": _difference_json(r.regret), "fraction": r.fraction,
            "choices": {str(k): v for k, v in sorted(r.choices.items())}, "reads_sweep": r.reads_sweep,
            "regret_leave_one_out": None if r.loo is None else _difference_json(r.loo),
            "per_unit": [{"unit": list(u) if isinstance(u, tuple) else u, "regret": v}
                         for u, v in r.per_unit.items()]}


def recommend_json(sweep: SweepPlan, advice: AdviceResult, tables: Mapping[str, Sequence[RegretRow]] | None
                   ) -> dict[str, Any]:
    """``transferbench recommend --json``: what the command prints, as one document
    (docs/json-output.md): per target the advice's choice in each unit, its expected top-1
    with its interval and its compute against the sweep's; with ``--validate`` every table
    and the sentences under the overall one."""
    targets = []
    for target in sweep.targets():
        units = [u for u in advice.choice if u[0] == target]
        spent, full = math.fsum(advice.spent[u] for u in units), math.fsum(advice.sweep_cost[u] for u in units)
        targets.append({"target": target,
                        "units": [{"unit": list(u), "choice": str(advice.choice[u]), "top1": advice.accuracy[u]}
                                  for u in units],
                        "expected_top1": None if (expected := advice.expected(target)) is None
                        else _difference_json(expected),
                        "flops": spent, "sweep_flops": full, "fraction": spent / full if full else None})
    return {"format": "transferbench.recommend/1", "targets": targets, "advice": advice.to_json(),
            "validation": None if tables is None else {t: [row_json(r) for r in rows] for t, rows in tables.items()},
            "verdict": None if tables is None else verdict_lines(tables["all"])}

