"""Train a cohort: networks that share a training set and a data order, in lockstep.

The transferred networks of one split that train on the same half (BnB, BnB+, AnB, AnB+ for
every n) can read one stream of batches, as in the paper, where every network saw the same
data in the same order. :func:`train_cohort` trains them step by step together:

* each batch is read (decoded), shuffled and augmented once, for every member;
* members whose frozen layers 1..n copy the same source share their frozen prefix: the
  deepest one is computed once per batch and its intermediate outputs feed the shallower
  ones (:meth:`Architecture.prefix_outputs`). Sharing stops where the architecture's
  ``split_at`` stops: dropout in frozen fc6/fc7 stays active, each member with its own;
* members whose frozen prefix is cached (no augmentation) read their own cached features,
  in the same order;
* each member keeps its own dropout stream (torch's RNG, swapped in while it runs), so a
  member gets the record it gets alone with the same data order (``job.stream_seed``),
  bit for bit on the CPU;
* how members step is a :class:`~transferbench.members.Stepper`'s business: one by one
  (:class:`~transferbench.members.SoloSteppers`), or same-shaped members that train every
  layer as one batched computation (:mod:`transferbench.batched`, ``performance.batched``),
  equal within float tolerance. Every step follows
  :class:`~transferbench.stepping.TrainingSteps`, as a network trained alone does.

A member whose loss becomes NaN fails alone; the others train on. The cohort saves a joint
checkpoint at epoch ends (``output.cohort_checkpoint_minutes``), from which an interrupted
cohort resumes to the same numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batched import BatchedMembers
from .context import TrainContext
from .errors import TrainingFailed
from .executor import ProgressFn
from .files import atomic_target, quarantine
from .hashing import content_hash
from .jobs import Job
from .members import Inputs, Member, RngState, SoloSteppers, Stepper
from .network import Target
from .records import HistoryPoint, JobRecord, utc_now
from .stepping import TrainingSteps
from .trainer import count_correct, evaluate, job_record, prepare_job

__all__ = ["CohortResult", "joint_checkpoint", "train_cohort"]

log = logging.getLogger("transferbench")

#: Format of the joint checkpoint files (``cohorts/<cohort>/<members>.pt`` in the run directory).
CHECKPOINT_FORMAT = 1


@dataclass
class CohortResult:
    """What became of one member: its record and trained network, or why it failed."""

    job: Job
    record: JobRecord | None
    model: nn.Module | None
    error: str | None = None


@dataclass(eq=False)
class _PrefixGroup:
    """Members whose frozen layers copy one source: its prefix runs once per batch."""

    target: Target  # the deepest member's network: its prefix is every member's
    members: list[Member]

    def outputs(self, arch: Any, x: torch.Tensor) -> dict[Member, torch.Tensor]:
        alive = [m for m in self.members if m.alive]
        if not alive:
            return {}
        with torch.no_grad():
            out = arch.prefix_outputs(self.target.model, x, sorted({_cut(m) for m in alive}))
        readers: dict[int, int] = {}
        for m in alive:
            readers[id(out[_cut(m)])] = readers.get(id(out[_cut(m)]), 0) + 1
        fed = {}
        for m in alive:  # a suffix may write into its input: each reader but the last gets a copy
            t = out[_cut(m)]
            readers[id(t)] -= 1
            fed[m] = t.clone() if readers[id(t)] else t
        return fed


@dataclass(eq=False)
class _Cohort:
    """The members, how they are fed and how they step."""

    ctx: TrainContext
    members: list[Member]
    groups: list[_PrefixGroup]
    steppers: list[Stepper]  # every member in exactly one
    steps: TrainingSteps
    generator: torch.Generator
    step: int = 0

    @property
    def lead(self) -> Member:
        """The member whose data (raw examples, transform) the cohort's stream uses."""
        return next((m for m in self.members if m.feed != "cached"), self.members[0])

    def alive(self, feed: str | None = None) -> list[Member]:
        return [m for m in self.members if m.alive and (feed is None or m.feed == feed)]

    def shared(self) -> list[Member]:
        """Members that read the cohort's own batches (raw or through a shared prefix)."""
        return [m for m in self.alive() if m.feed != "cached"]

    def train_mode(self) -> None:
        """Training mode for every live member and shared prefix (frozen normalisation pinned)."""
        for target in [m.setup.target for m in self.alive()] + [g.target for g in self.groups]:
            target.train_mode()

    def sync(self) -> None:
        """Every member's own network and optimizer hold what training made of them."""
        for stepper in self.steppers:
            stepper.sync()


def _members(jobs: Sequence[Job], ctx: TrainContext, sources: Mapping[str, Mapping[str, torch.Tensor] | None],
             progress: Callable[[Job], ProgressFn | None]) -> list[Member]:
    """Every member built and prepared exactly as :func:`train_job` prepares it alone."""
    members: list[Member] = []
    raw = None
    for job in jobs:
        setup = prepare_job(job, ctx, sources.get(job.id))
        member = Member(job, setup, RngState(ctx.device), progress(job), setup.data.net)
        member.base_lrs = [g["lr"] for g in member.optimizer.param_groups]
        if setup.data.cached:
            member.feed = "cached"
            member.generator = torch.Generator().manual_seed(job.stream_seed)
        elif raw is None:
            raw = setup.data
        else:  # the same examples: one copy in memory for the whole cohort
            setup.data.train, setup.data.eval = raw.train, raw.eval
        members.append(member)
    return members


def _cut(m: Member) -> int:
    """n, where the member's layers 1..n are frozen copies of its source (its reading's
    ``source_prefix``; 0: none): the depth at which it reads a shared prefix's output."""
    return m.setup.target.reading.source_prefix


def _prefix_groups(members: list[Member], ctx: TrainContext) -> list[_PrefixGroup]:
    """Group the members whose frozen layers 1..n are copies of one source network."""
    arch = ctx.components.architecture
    if ctx.config.performance.compile:
        return []  # the compiled whole network is what a member runs alone
    by_source: dict[str, list[tuple[Member, nn.Module]]] = {}
    for m in members:
        parts = arch.split_at(m.model, _cut(m)) if m.feed == "raw" and m.job.depends_on and _cut(m) else None
        if parts is not None and m.job.depends_on:
            by_source.setdefault(m.job.depends_on, []).append((m, parts[1]))
    groups = []
    for pairs in by_source.values():
        if len(pairs) < 2:
            continue
        for m, suffix in pairs:
            m.net, m.feed = suffix, "prefix"
        ms = [m for m, _ in pairs]
        groups.append(_PrefixGroup(max(ms, key=_cut).setup.target, ms))
    return groups


def _batches(c: _Cohort) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None, dict[Member, tuple]]]:
    """One epoch: the cohort's batch (untransformed) and each cached member's own batch."""
    bs = c.ctx.config.train.batch_size
    raw = c.lead.setup.data.train.batches(bs, shuffle=True, generator=c.generator) if c.shared() else None
    own = {m: m.setup.data.train.batches(bs, shuffle=True, generator=m.generator) for m in c.alive("cached")}
    while True:
        try:
            x, y = next(raw) if raw is not None else (None, None)
            mine = {m: next(it) for m, it in own.items()}
        except StopIteration:
            return
        yield x, y, mine


def _steppers(members: list[Member], ctx: TrainContext) -> list[Stepper]:
    """How the members step: the same-shaped ones that read the cohort's own batches as one
    batched computation where ``performance.batched`` asks for it and they can be, every
    other member one by one."""
    batched = [s for s in (BatchedMembers.of([m for m in members if m.feed == "raw"], ctx),) if s is not None]
    rest = [m for m in members if not any(m in s.members for s in batched)]
    return [*batched, SoloSteppers(rest)]


def _train_step(c: _Cohort, x: torch.Tensor | None, y: torch.Tensor | None, mine: dict[Member, tuple]) -> None:
    """One step of every member on the cohort's batch (transformed once) or its own."""
    device, arch = c.ctx.device, c.ctx.components.architecture
    inputs: dict[Member, tuple[torch.Tensor, torch.Tensor]] = {}
    if x is not None and y is not None:
        x = c.lead.setup.data.transform(x.to(device, non_blocking=True), train=True, generator=c.generator)
        y = y.to(device, non_blocking=True)
        for m in c.shared():
            if m.setup.data.input_std is None:
                m.setup.data.input_std = float(x.detach().float().std())
            inputs[m] = (x, y)
        for g in c.groups:
            with c.steps.amp:
                inputs.update({m: (out, y) for m, out in g.outputs(arch, x).items()})
    for m, (mx, my) in mine.items():
        if m.alive:
            inputs[m] = (m.setup.data.transform(mx.to(device), train=True), my.to(device))
    _step(c, inputs)


def _step(c: _Cohort, inputs: Inputs) -> None:
    """Every stepper takes the step; one that breaks hands its members to its fallback,
    which takes the step instead (and the next ones)."""
    for i, stepper in enumerate(c.steppers):
        try:
            stepper.step(inputs, c.steps, c.step)
        except Exception as exc:  # e.g. batching is a speed-up: without it, the same training
            instead = stepper.fallback(exc)
            if instead is None:
                raise
            c.steppers[i] = instead
            instead.step(inputs, c.steps, c.step)


@torch.no_grad()
def _evaluate(c: _Cohort) -> dict[Member, tuple[float, float]]:
    """Every member's top-1 and top-5; the cohort's evaluation batches are read once for all."""
    ctx, arch = c.ctx, c.ctx.components.architecture
    eval_batch = ctx.config.eval.batch_size or ctx.config.train.batch_size
    out: dict[Member, tuple[float, float]] = {}
    with c.steps.amp:
        for m in c.alive("cached"):
            out[m] = evaluate(m.net, m.setup.data.eval, m.setup.data.transform, ctx.device, eval_batch)
        shared = c.shared()
        if shared:
            for model in [m.model for m in shared] + [g.target.model for g in c.groups]:
                model.eval()
            counts = {m: [0, 0, 0] for m in shared}
            data = c.lead.setup.data
            for x, y in data.eval.batches(eval_batch, shuffle=False):
                x = data.transform(x.to(ctx.device, non_blocking=True), train=False)
                y = y.to(ctx.device)
                inputs = {m: x for m in shared}
                for g in c.groups:
                    inputs.update(g.outputs(arch, x))
                logits: dict[Member, torch.Tensor] = {}
                for stepper in c.steppers:
                    logits.update(stepper.eval_logits(inputs))
                for m in shared:
                    count_correct(counts[m], logits[m], y, m.job.num_classes)
            out.update({m: (k[0] / k[2], k[1] / k[2]) for m, k in counts.items()})
    c.train_mode()
    return out


def _after_step(c: _Cohort) -> None:
    """Evaluate when due; report progress."""
    length = c.steps.length
    if c.steps.due(c.step):
        for m, (top1, top5) in _evaluate(c).items():
            c.steps.record(m.course, c.step, top1, top5)
    for m in c.alive():
        if m.progress is not None:
            m.progress(c.step, length.total, m.course.info())


def _loop(c: _Cohort, checkpoint: Callable[[_Cohort], None]) -> None:
    """Train every member to the end (or its failure), in lockstep."""
    length = c.steps.length
    c.train_mode()
    while c.step < length.total and c.alive():
        for x, y, mine in _batches(c):
            _train_step(c, x, y, mine)
            c.step += 1
            _after_step(c)
            if c.step >= length.total or not c.alive():
                break
        else:
            checkpoint(c)  # an epoch ended: the next starts from the generators' state alone


def train_cohort(jobs: Sequence[Job], ctx: TrainContext,
                 sources: Mapping[str, Mapping[str, torch.Tensor] | None],
                 progress: Callable[[Job], ProgressFn | None] = lambda job: None,
                 checkpoint_dir: Path | None = None, checkpoint_minutes: float = 10.0,
                 identity: Mapping[str, Any] | None = None,
                 written: Callable[[list[CohortResult]], None] | None = None) -> list[CohortResult]:
    """Train the members of one cohort in lockstep (see the module's docstring).

    Args:
        jobs: the members: jobs with the same training set, length and ``stream_seed``.
        ctx: the run's training context.
        sources: job id -> the weights of its source network (None for none).
        progress: job -> its progress callback.
        checkpoint_dir: where joint checkpoints go (None: none); one found there for these
            members is resumed from.
        checkpoint_minutes: least time between two checkpoints (taken at epoch ends).
        identity: job id -> what else a checkpoint must match to be resumed from (the code
            fingerprint and the source checkpoint's SHA-256); default: the fingerprints.
        written: called with the results once the cohort finished, before its joint
            checkpoint is removed: the runner writes the records (and kept checkpoints) there,
            so a process killed between the two loses nothing.

    Returns:
        One result per job, in order.
    """
    started, t0 = utc_now(), time.perf_counter()
    seeds = {job.stream_seed for job in jobs}
    if len(seeds) != 1:
        raise TrainingFailed(f"a cohort's members must share one data order; these have {len(seeds)}")
    members = _members(jobs, ctx, sources, progress)
    groups = _prefix_groups(members, ctx)
    steps = TrainingSteps(ctx.config, members[0].setup.length, ctx.device)  # one training set: one length
    generator = torch.Generator().manual_seed(jobs[0].stream_seed)
    c = _Cohort(ctx, members, groups, _steppers(members, ctx), steps, generator)
    identity = dict(identity or {job.id: job.fingerprint for job in jobs})
    saver = _Checkpoints(checkpoint_dir, jobs, checkpoint_minutes, identity)
    saver.resume(c)
    _loop(c, saver.save)
    c.sync()
    seconds = time.perf_counter() - t0
    results = [CohortResult(m.job, None, None, m.course.error) if m.course.error else
               CohortResult(m.job, job_record(m.job, ctx, m.setup, m.course.history, started, seconds), m.model)
               for m in members]
    if written is not None:
        written(results)  # the records first: the joint checkpoint goes only once they are on disk
    saver.done()
    return results


def joint_checkpoint(folder: Path, jobs: Sequence[Job]) -> Path:
    """Where the joint checkpoint of exactly these members lies under ``folder``."""
    return folder / f"{content_hash(sorted(j.id for j in jobs))[:16]}.pt"


# --------------------------------------------------------------------------- joint checkpoints


class _Checkpoints:
    """A cohort's joint checkpoint: every member's weights, optimizer, dropout stream and
    history, and the data-order generators, at the end of an epoch."""

    def __init__(self, folder: Path | None, jobs: Sequence[Job], minutes: float, identity: dict[str, Any]) -> None:
        self.identity = identity
        self.path = None if folder is None else joint_checkpoint(folder, jobs)
        self.minutes = minutes
        self.last = time.monotonic()

    def resume(self, c: _Cohort) -> None:
        """Continue from the checkpoint of exactly these members, if there is one.

        A checkpoint of other code (another identity) is ignored and later overwritten. A
        damaged one is moved under the run's ``damaged/`` and the cohort starts over; if it
        breaks while being applied (the members half loaded), the cohort fails, saying so,
        and a rerun starts over.

        Raises:
            TrainingFailed: the checkpoint broke while being applied.
        """
        saved = self._read()
        if saved is None:
            return
        try:
            self._apply(c, saved)
        except Exception as exc:  # noqa: BLE001 - named, moved aside, and the rerun starts over
            where = self._damaged()
            raise TrainingFailed(f"the cohort's checkpoint could not be applied ({type(exc).__name__}: {exc}); "
                                 f"it was moved to {where}: rerun to train the cohort from the start") from None

    def _read(self) -> dict[str, Any] | None:
        """The checkpoint of these members, checked for shape; None when there is none to use."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint costs only the time it saved
            log.warning("the cohort's checkpoint %s is damaged (%s); moved to %s, the cohort starts over",
                        self.path, type(exc).__name__, self._damaged())
            return None
        if isinstance(saved, dict) and saved.get("identity") != self.identity:
            return None  # other code or other sources: start over, overwrite it at the next save
        problem = _checkpoint_problem(saved, set(self.identity))
        if problem is not None:
            log.warning("the cohort's checkpoint %s is damaged (%s); moved to %s, the cohort starts over",
                        self.path, problem, self._damaged())
            return None
        return saved

    def _damaged(self) -> Path:
        assert self.path is not None
        # the checkpoint lies at RUN/cohorts/<cohort>/<members>.pt: damaged files go under RUN/damaged/
        return quarantine(self.path, self.path.parent.parent.parent)

    @staticmethod
    def _apply(c: _Cohort, saved: dict[str, Any]) -> None:
        c.step = saved["step"]
        c.generator.set_state(saved["generator"])
        for m in c.members:
            s = saved["members"][m.job.id]
            if s.get("error"):
                m.course.error = s["error"]
                continue
            m.model.load_state_dict(s["model"])
            m.optimizer.load_state_dict(s["optimizer"])
            m.rng.load(s["rng"])
            m.course.history = [HistoryPoint(**h) for h in s["history"]]
            m.course.running, m.setup.data.input_std = s["running"], s["input_std"]
            if m.generator is not None:
                m.generator.set_state(s["generator"])
        for stepper in c.steppers:
            stepper.reload()

    def save(self, c: _Cohort) -> None:
        if self.path is None or time.monotonic() - self.last < self.minutes * 60:
            return
        c.sync()
        members = {}
        for m in c.members:
            members[m.job.id] = {"error": m.course.error} if m.course.error else {
                "model": m.model.state_dict(), "optimizer": m.optimizer.state_dict(),
                "rng": m.rng.state(), "history": [h.model_dump() for h in m.course.history],
                "running": m.course.running,
                "input_std": m.setup.data.input_std,
                "generator": m.generator.get_state() if m.generator is not None else None}
        state = {"format": CHECKPOINT_FORMAT, "step": c.step, "generator": c.generator.get_state(),
                 "identity": self.identity, "members": members}
        with atomic_target(self.path) as tmp:
            torch.save(state, tmp)
        self.last = time.monotonic()

    def done(self) -> None:
        """The cohort finished: its checkpoint is no longer needed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


_MEMBER_KEYS = {"model", "optimizer", "rng", "history", "running", "input_std", "generator"}


def _checkpoint_problem(saved: Any, job_ids: set[str]) -> str | None:
    """What is wrong with a loaded joint checkpoint's shape, or None."""
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        return "not a cohort checkpoint of this format"
    if not isinstance(saved.get("step"), int) or saved["step"] < 0 or not torch.is_tensor(saved.get("generator")):
        return "no step or data-order state"
    members = saved.get("members")
    if not isinstance(members, dict) or set(members) != job_ids:
        return "not the members of this cohort"
    for jid, state in members.items():
        if not isinstance(state, dict) or not (state.get("error") or _MEMBER_KEYS <= set(state)):
            return f"member {jid} incomplete"
    return None
