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
* same-shaped members that train every layer can run as one batched computation
  (:mod:`transferbench.batched`, ``performance.batched``), equal within float tolerance.

A member whose loss becomes NaN fails alone; the others train on. The cohort saves a joint
checkpoint at epoch ends (``output.cohort_checkpoint_minutes``), from which an interrupted
cohort resumes to the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batched import BatchedMembers
from .context import TrainContext
from .devices import autocast
from .errors import TrainingFailed
from .executor import ProgressFn
from .files import atomic_target, quarantine
from .hashing import content_hash
from .jobs import Job
from .network import Target
from .records import HistoryPoint, JobRecord, utc_now
from .schedule import lr_factor
from .trainer import JobSetup, count_correct, evaluate, job_record, prepare_job

__all__ = ["CohortResult", "Member", "RngState", "joint_checkpoint", "train_cohort"]

log = logging.getLogger("transferbench")

#: Format of the joint checkpoint files (``cohorts/<cohort>/<members>.pt`` in the run directory).
CHECKPOINT_FORMAT = 1


class RngState:
    """A member's own stream of torch's global RNG (CPU, and its CUDA device's), which only
    dropout draws from while a network trains; swapped in while the member runs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)

    def state(self) -> dict[str, torch.Tensor | None]:
        return {"cpu": self.cpu, "cuda": self.cuda}

    def load(self, state: Mapping[str, torch.Tensor | None]) -> None:
        self.cpu = state["cpu"]
        if self.cuda is not None and state.get("cuda") is not None:
            self.cuda = state["cuda"]


@dataclass(eq=False)
class Member:
    """One network of a cohort while it trains.

    Attributes:
        job: its job.
        setup: its network, data, optimizer and length (as :func:`prepare_job` made them).
        rng: its dropout stream.
        progress: its progress callback.
        net: what it runs on its input: the whole network (or the suffix above its cache),
            or the suffix above a shared prefix.
        feed: ``raw`` (the cohort's batches), ``cached`` (its own frozen-prefix features) or
            ``prefix`` (a shared prefix's output at its cut).
        generator: the data-order generator of a ``cached`` member (seeded as the cohort's).
        history, running, error: its evaluations, running loss, and why it failed.
    """

    job: Job
    setup: JobSetup
    rng: RngState
    progress: ProgressFn | None
    net: nn.Module
    feed: str = "raw"
    generator: torch.Generator | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    running: float = 0.0
    error: str | None = None
    base_lrs: list[float] = field(default_factory=list)

    @property
    def model(self) -> nn.Module:
        return self.setup.target.model

    @property
    def alive(self) -> bool:
        return self.error is None


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
            out = arch.prefix_outputs(self.target.model, x, sorted({m.job.n for m in alive}))
        readers: dict[int, int] = {}
        for m in alive:
            readers[id(out[m.job.n])] = readers.get(id(out[m.job.n]), 0) + 1
        fed = {}
        for m in alive:  # a suffix may write into its input: each reader but the last gets a copy
            t = out[m.job.n]
            readers[id(t)] -= 1
            fed[m] = t.clone() if readers[id(t)] else t
        return fed


@dataclass(eq=False)
class _Cohort:
    """The members and how they are fed."""

    ctx: TrainContext
    members: list[Member]
    groups: list[_PrefixGroup]
    batched: BatchedMembers | None
    generator: torch.Generator
    step: int = 0
    batched_eval: bool = True  # False once a batched evaluation failed: members are evaluated one by one

    @property
    def lead(self) -> Member:
        """The member whose data (raw examples, transform, length) the cohort's stream uses."""
        return next((m for m in self.members if m.feed != "cached"), self.members[0])

    def alive(self, feed: str | None = None) -> list[Member]:
        return [m for m in self.members if m.alive and (feed is None or m.feed == feed)]

    def shared(self) -> list[Member]:
        """Members that read the cohort's own batches (raw or through a shared prefix)."""
        return [m for m in self.alive() if m.feed != "cached"]


def _members(jobs: Sequence[Job], ctx: TrainContext, sources: Mapping[str, Mapping[str, torch.Tensor] | None],
             progress: Callable[[Job], ProgressFn | None]) -> list[Member]:
    """Every member built and prepared exactly as :func:`train_job` prepares it alone."""
    members: list[Member] = []
    raw = None
    for job in jobs:
        setup = prepare_job(job, ctx, sources.get(job.id))
        member = Member(job, setup, RngState(ctx.device), progress(job), setup.data.net,
                        base_lrs=[g["lr"] for g in setup.optimizer.param_groups])
        if setup.data.cached:
            member.feed = "cached"
            member.generator = torch.Generator().manual_seed(job.stream_seed)
        elif raw is None:
            raw = setup.data
        else:  # the same examples: one copy in memory for the whole cohort
            setup.data.train, setup.data.eval = raw.train, raw.eval
        members.append(member)
    return members


def _prefix_groups(members: list[Member], ctx: TrainContext) -> list[_PrefixGroup]:
    """Group the members whose frozen layers 1..n are copies of one source network."""
    arch = ctx.components.architecture
    if ctx.config.performance.compile:
        return []  # the compiled whole network is what a member runs alone
    by_source: dict[str, list[Member]] = {}
    for m in members:
        t, n = m.setup.target, m.job.n
        if m.feed == "raw" and m.job.depends_on and n > 0 and all(a.copy and not a.train for a in t.actions[:n]) \
                and arch.split_at(t.model, n) is not None:
            by_source.setdefault(m.job.depends_on, []).append(m)
    groups = []
    for ms in by_source.values():
        if len(ms) < 2:
            continue
        for m in ms:
            m.net, m.feed = arch.split_at(m.model, m.job.n)[1], "prefix"
        groups.append(_PrefixGroup(max(ms, key=lambda m: m.job.n).setup.target, ms))
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


def _step_member(m: Member, x: torch.Tensor, y: torch.Tensor, factor: float, loss_fn: nn.Module,
                 amp: contextlib.AbstractContextManager, step: int) -> None:
    """One optimizer step of one member, in its own dropout stream (as train_loop does it)."""
    for group, lr in zip(m.setup.optimizer.param_groups, m.base_lrs):
        group["lr"] = lr * factor
    with m.rng.active(), amp:
        loss = loss_fn(m.net(x), y)
    value = loss.item()
    if not math.isfinite(value):
        m.error = f"loss became {value} at step {step + 1}"
        return
    m.setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    m.setup.optimizer.step()
    m.running = value if step == 0 else 0.9 * m.running + 0.1 * value


def _train_step(c: _Cohort, x: torch.Tensor | None, y: torch.Tensor | None, mine: dict[Member, tuple],
                factor: float, loss_fn: nn.Module) -> None:
    """One step of every member on the cohort's batch (transformed once) or its own."""
    ctx, arch = c.ctx, c.ctx.components.architecture
    device, amp = ctx.device, autocast(ctx.config.performance.amp, ctx.device)
    inputs: dict[Member, torch.Tensor] = {}
    if x is not None:
        x = c.lead.setup.data.transform(x.to(device, non_blocking=True), train=True, generator=c.generator)
        y = y.to(device, non_blocking=True)
        for m in c.shared():
            if m.setup.data.input_std is None:
                m.setup.data.input_std = float(x.detach().float().std())
            inputs[m] = x
        for g in c.groups:
            with amp:
                inputs.update(g.outputs(arch, x))
    if c.batched is not None and c.batched.members:
        try:
            c.batched.train_step(x, y, factor, loss_fn, amp, c.step)
        except Exception as exc:  # batching is a speed-up: without it, the same training
            if not c.batched.abandon():
                raise
            log.warning("batched training failed (%s: %s); its members train one by one", type(exc).__name__, exc)
            c.batched = None
    for m in c.alive():
        if c.batched is not None and m in c.batched.members:
            continue
        if m.feed == "cached":
            mx, my = mine[m]
            _step_member(m, m.setup.data.transform(mx.to(device), train=True), my.to(device), factor, loss_fn,
                         amp, c.step)
        else:
            _step_member(m, inputs[m], y, factor, loss_fn, amp, c.step)


@torch.no_grad()
def _evaluate(c: _Cohort) -> dict[Member, tuple[float, float]]:
    """Every member's top-1 and top-5; the cohort's evaluation batches are read once for all."""
    ctx, arch = c.ctx, c.ctx.components.architecture
    amp = autocast(ctx.config.performance.amp, ctx.device)
    eval_batch = ctx.config.eval.batch_size or ctx.config.train.batch_size
    out: dict[Member, tuple[float, float]] = {}
    with amp:
        for m in c.alive("cached"):
            out[m] = evaluate(m.net, m.setup.data.eval, m.setup.data.transform, ctx.device, eval_batch)
        shared = c.shared()
        if shared:
            for m in shared:
                m.model.eval()
            for g in c.groups:
                g.target.model.eval()
            if c.batched is not None and not c.batched_eval:
                _unbatch_for_eval(c)
            counts = {m: [0, 0, 0] for m in shared}
            data = c.lead.setup.data
            for x, y in data.eval.batches(eval_batch, shuffle=False):
                x = data.transform(x.to(ctx.device, non_blocking=True), train=False)
                y = y.to(ctx.device)
                inputs = {m: x for m in shared}
                for g in c.groups:
                    inputs.update(g.outputs(arch, x))
                logits = _batched_logits(c, x)
                for m in shared:
                    count_correct(counts[m], logits[m] if m in logits else m.net(inputs[m]), y, m.job.num_classes)
            out.update({m: (k[0] / k[2], k[1] / k[2]) for m, k in counts.items()})
    for target in [m.setup.target for m in c.alive()] + [g.target for g in c.groups]:
        target.train_mode()
    return out


def _batched_logits(c: _Cohort, x: torch.Tensor) -> dict[Member, torch.Tensor]:
    """The batched members' evaluation logits; on a failure they are evaluated one by one."""
    if c.batched is None:
        return {}
    if not c.batched_eval:
        return {}
    try:
        return c.batched.logits(x)
    except Exception as exc:  # noqa: BLE001 - batching is a speed-up: without it, the same evaluation
        log.warning("batched evaluation failed (%s: %s); its members are evaluated one by one",
                    type(exc).__name__, exc)
        c.batched_eval = False
        _unbatch_for_eval(c)
        return {}


def _unbatch_for_eval(c: _Cohort) -> None:
    """Write the batched members' trained values into their own networks, set to evaluate
    (training stays batched)."""
    c.batched.sync()
    for m in c.batched.members:
        m.model.eval()


def _after_step(c: _Cohort, factor: float) -> None:
    """Drop failed members; evaluate when due (``factor``: the schedule's at the step just
    taken, recorded as train_loop records it); report progress."""
    if c.batched is not None:
        c.batched.drop_failed()
    length = c.lead.setup.length
    if c.step % length.eval_every == 0 or c.step == length.total:
        for m, (top1, top5) in _evaluate(c).items():
            m.history.append(HistoryPoint(step=c.step, epoch=round(c.step / length.steps_per_epoch, 4),
                                          top1=top1, top5=top5, train_loss=m.running, lr_factor=factor))
    for m in c.alive():
        if m.progress is not None:
            m.progress(c.step, length.total, {"loss": m.running, "top1": m.history[-1].top1 if m.history else math.nan})


def _loop(c: _Cohort, checkpoint: Callable[[_Cohort], None]) -> None:
    """Train every member to the end (or its failure), in lockstep."""
    config = c.ctx.config
    length = c.lead.setup.length
    factor = lr_factor(config.train.schedule, length)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    for target in [m.setup.target for m in c.alive()] + [g.target for g in c.groups]:
        target.train_mode()
    while c.step < length.total and c.alive():
        for x, y, mine in _batches(c):
            _train_step(c, x, y, mine, factor(c.step), loss_fn)
            c.step += 1
            _after_step(c, factor(c.step - 1))
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
    c = _Cohort(ctx, members, groups, BatchedMembers.of([m for m in members if m.feed == "raw"], ctx),
                torch.Generator().manual_seed(jobs[0].stream_seed))
    identity = dict(identity or {job.id: job.fingerprint for job in jobs})
    saver = _Checkpoints(checkpoint_dir, jobs, checkpoint_minutes, identity)
    saver.resume(c)
    _loop(c, saver.save)
    if c.batched is not None:  # (None again if batching failed and was given up)
        c.batched.sync()
    seconds = time.perf_counter() - t0
    results = [CohortResult(m.job, None, None, m.error) if m.error else
               CohortResult(m.job, job_record(m.job, ctx, m.setup, m.history, started, seconds), m.model)
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
                m.error = s["error"]
                continue
            m.model.load_state_dict(s["model"])
            m.setup.optimizer.load_state_dict(s["optimizer"])
            m.rng.load(s["rng"])
            m.history = [HistoryPoint(**h) for h in s["history"]]
            m.running, m.setup.data.input_std = s["running"], s["input_std"]
            if m.generator is not None:
                m.generator.set_state(s["generator"])
        if c.batched is not None:
            c.batched.reload()

    def save(self, c: _Cohort) -> None:
        if self.path is None or time.monotonic() - self.last < self.minutes * 60:
            return
        if c.batched is not None:
            c.batched.sync()
        members = {}
        for m in c.members:
            members[m.job.id] = {"error": m.error} if m.error else {
                "model": m.model.state_dict(), "optimizer": m.setup.optimizer.state_dict(), "rng": m.rng.state(),
                "history": [h.model_dump() for h in m.history], "running": m.running,
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
