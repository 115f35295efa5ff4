"""What a run directory holds, and what a (re)run must train: one pass shared by ``run`` and ``check``.

For every job of the plan, in dependency order, the audit decides whether its record can be
kept or the job must train (again), and why: no record yet, a failed one, a damaged record,
a network trained by other code (its fingerprint), a checkpoint that ``output.checkpoints``
keeps and that is missing or damaged (whether or not a dependent still has to train: a
finished run is repaired too), or a dependent whose source's weights changed.
``run`` audits with ``fix=True``: damaged files are moved aside under ``damaged/``, records of
other code under ``superseded/``, and the shared cache is consulted; ``check`` only reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .jobs import Job
from .plan import Plan
from .records import JobRecord, RecordError
from .store import JobCache, RunStore

__all__ = ["Audit", "audit_run"]


@dataclass
class Audit:
    """The state of a run directory against its plan.

    Attributes:
        todo: jobs to train, in dependency order.
        reasons: job id -> why it trains.
        damaged: (file, what is wrong) for every damaged file found (moved aside when fixing).
        kept: jobs whose records are kept.
        reused: jobs copied from the shared cache.
    """

    todo: list[Job] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    kept: int = 0
    reused: int = 0

    def counts(self) -> dict[str, int]:
        """How many jobs train for each kind of reason."""
        out: dict[str, int] = {}
        for why in self.reasons.values():
            key = why.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return out


class _Auditor:
    def __init__(self, plan: Plan, store: RunStore, reuse_across_code: bool, fix: bool,
                 shared: JobCache | None, checkpoints: str) -> None:
        self.plan, self.store, self.fix, self.shared = plan, store, fix, shared
        self.reuse_across_code, self.checkpoints = reuse_across_code, checkpoints
        self.result = Audit()
        self.records: dict[str, JobRecord | None] = {}

    def damaged(self, path: Path, why: str) -> None:
        self.result.damaged.append((path, why))
        if self.fix and path.exists():
            self.store.quarantine(path)

    def record(self, job: Job) -> JobRecord | None:
        """The job's usable record, or None (with the reason noted) when it must train."""
        try:
            rec = self.store.read_record(job.id)
        except RecordError as exc:
            self.damaged(self.store.record_path(job.id), f"damaged record: {exc}")
            return self.train(job, "damaged record")
        if rec is None:
            return self.train(job, "not trained yet")
        if not rec.ok:
            return self.train(job, f"failed before: {rec.error}")
        if not self.reuse_across_code and rec.fingerprint_id != job.fingerprint:
            if self.fix:
                self.store.supersede(job.id)
            other = rec.fingerprint_id or f"transferbench {rec.transferbench_version or '0.1'}"
            return self.train(job, f"trained by other code: {other}")
        if rec.seed is not None and rec.seed != job.seed:  # the planner's seeds are not in the fingerprint
            if self.fix:
                self.store.supersede(job.id)
            return self.train(job, f"trained with another seed: {rec.seed}, the plan now gives {job.seed}")
        if self.plan.keeps_checkpoint(job.id, self.checkpoints):
            problem = self.store.checkpoint_problem(job.id, rec.checkpoint_sha256)
            if problem == "missing" and rec.checkpoint_sha256 is None:
                return self.train(job, "weights not kept before: output.checkpoints keeps them now")
            if problem is not None:
                if problem != "missing":
                    self.damaged(self.store.checkpoint_path(job.id), f"checkpoint {problem}")
                return self.train(job, f"checkpoint {problem.split(' (')[0]}: its network retrains (to the "
                                  "same weights on this machine)")
        return rec

    def train(self, job: Job, why: str) -> JobRecord | None:
        """Note why ``job`` must train; its usable record is therefore none."""
        self.result.reasons.setdefault(job.id, why)
        return None

    def source_state(self, job: Job) -> None:
        """A job whose source (or any network it reads) retrains, or whose source weights
        changed, trains too."""
        src = job.depends_on
        if src is None or job.id in self.result.reasons:
            return
        if any(dep in self.result.reasons for dep in job.dependencies):
            self.train(job, "source retrains: kept if its new weights are identical")
            return
        mine, theirs = self.records.get(job.id), self.records.get(src)
        if mine and theirs and mine.source_sha256 and theirs.checkpoint_sha256 \
                and mine.source_sha256 != theirs.checkpoint_sha256:
            if self.fix:
                self.store.supersede(job.id)
            self.train(job, "stale: trained from earlier weights of its source")

    def run(self) -> Audit:
        for job in self.plan.jobs.values():
            self.records[job.id] = self.record(job)
            if job.id in self.result.reasons and self.fix and self.shared is not None:
                fp = None if self.reuse_across_code else job.fingerprint
                keep = self.plan.keeps_checkpoint(job.id, self.checkpoints)
                fetched = self.shared.fetch(job.id, self.store, keep, fp)
                if fetched is not None:
                    del self.result.reasons[job.id]
                    self.records[job.id] = fetched
                    self.result.reused += 1
        for job in self.plan.jobs.values():  # dependency order: sources are settled first
            self.source_state(job)
        self.result.todo = [j for j in self.plan.jobs.values() if j.id in self.result.reasons]
        self.result.kept = len(self.plan.jobs) - len(self.result.todo) - self.result.reused
        return self.result


def audit_run(plan: Plan, store: RunStore, *, reuse_across_code: bool = False, fix: bool = False,
              shared: JobCache | None = None, checkpoints: str = "sources") -> Audit:
    """Compare a run directory with its plan (see the module docstring).

    Args:
        plan: the plan of the run's config.
        store: the run directory.
        reuse_across_code: keep networks trained by other code (``output.reuse_across_code``).
        fix: move damaged and superseded files aside and consult ``shared`` (``run``), or
            only report (``check``).
        shared: the shared cache (``output.shared_cache``), if any.
        checkpoints: ``output.checkpoints``: whose weights the run keeps (and must find).
    """
    return _Auditor(plan, store, reuse_across_code, fix, shared, checkpoints).run()
