"""The runner an executor calls for every job: train it, write its record and checkpoint."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from .config import Config
from .context import TrainContext, resolve_device
from .errors import TrainingFailed
from .estimation import estimate_job
from .executor import ProgressFn
from .hashing import content_hash
from .plan import Job, Plan
from .records import JobRecord, utc_now
from .resolve import Components
from .store import JobCache, RunStore
from .trainer import train_job

__all__ = ["TrainingRunner"]

# One training context per process and config: a worker that runs many jobs reads the data once.
_CONTEXTS: dict[str, TrainContext] = {}


class TrainingRunner:
    """Trains one job and writes its record: the :class:`~transferbench.JobRunner` of a run.

    Picklable: it carries the resolved config, plugins and plan, and builds its training
    context (device, data in memory) lazily in whichever process runs it, so a process pool
    or a cluster worker runs jobs with the same code as the local loop.
    """

    def __init__(self, config: Config, components: Components, plan: Plan, run_dir: Path) -> None:
        self.config, self.components, self.plan = config, components, plan
        # absolute: a worker on another machine (Ray) need not share the driver's directory
        self.run_dir = Path(run_dir).absolute()
        keep = config.output.checkpoints
        self.keep_checkpoint = {
            jid: keep == "all" or (keep == "sources" and bool(plan.dependents(jid))) for jid in plan.jobs
        }
        self._ctx: TrainContext | None = None

    @property
    def device(self) -> str:
        """The config's device setting."""
        return self.config.device

    @property
    def threads(self) -> int | None:
        """The config's torch thread count, if set."""
        return self.config.threads

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ctx"] = None  # data in memory and the device stay in the process that made them
        return state

    @property
    def store(self) -> RunStore:
        return RunStore(self.run_dir)

    @property
    def ctx(self) -> TrainContext:
        if self._ctx is None:
            key = content_hash(self.config.model_dump(mode="json"))
            if key not in _CONTEXTS:
                _CONTEXTS[key] = TrainContext(self.config, self.components, resolve_device(self.config.device))
            self._ctx = _CONTEXTS[key]
        return self._ctx

    def __call__(self, job: Job, progress: ProgressFn | None = None) -> JobRecord:
        store = self.store
        started = utc_now()
        try:
            for dep in job.dependencies:
                source = store.read_record(dep)
                if source is None or not source.ok:
                    why = source.error if source else "did not run"
                    raise TrainingFailed(f"source network {dep} failed: {why}")
            if job.kind == "estimate":
                record = estimate_job(job, self.ctx, lambda jid: (self.plan.jobs[jid].num_classes,
                                                                  store.load_checkpoint(jid)))
            else:
                source_state = store.load_checkpoint(job.depends_on) if job.depends_on is not None else None
                record, model = train_job(job, self.ctx, source_state, progress)
                if self.keep_checkpoint.get(job.id, False):
                    store.save_checkpoint(job.id, model.state_dict())
        except TrainingFailed as exc:
            record = self._failed(job, str(exc), started)
        except Exception as exc:  # noqa: BLE001 - one broken job must not stop the grid
            record = self._failed(job, f"{type(exc).__name__}: {exc}", started, traceback.format_exc())
        store.write_record(record)
        if record.ok and self.config.output.shared_cache:
            JobCache(Path(self.config.output.shared_cache)).publish(job.id, store)
        return record

    def finished(self, job: Job) -> JobRecord | None:
        store = self.store
        record = store.read_record(job.id)
        if record is None or not record.ok:
            return None
        if self.keep_checkpoint.get(job.id, False) and not store.has_checkpoint(job.id):
            return None
        return record

    def record_failure(self, job: Job, error: str) -> JobRecord:
        record = self._failed(job, error, utc_now())
        self.store.write_record(record)
        return record

    @staticmethod
    def _failed(job: Job, error: str, started: str, tb: str | None = None) -> JobRecord:
        return JobRecord.failed(job.id, error, started_at=started, seed=job.seed,
                                num_classes=job.num_classes, traceback=tb)
