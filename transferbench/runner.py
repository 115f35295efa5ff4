"""The runner an executor calls for every job: train it, write its record and checkpoint."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cohort import joint_checkpoint, train_cohort
from .components import Components
from .config import Config
from .context import TrainContext
from .devices import resolve_device, use_deterministic
from .errors import DataError, TrainingFailed
from .estimation import estimate_job, source_network
from .executor import CohortProgressFn, ProgressFn
from .files import sha256_file
from .fingerprint import ESTIMATION_ENTRY, code_fingerprint
from .hashing import content_hash
from .jobs import Job
from .network import build_meta, initial_state, overlay, under
from .records import JobRecord, RecordError, utc_now
from .sources import SourceFileError, load_state
from .store import JobCache, RunStore
from .trainer import train_job

if TYPE_CHECKING:
    from .plan import Plan

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
        self.keep_checkpoint = {jid: plan.keeps_checkpoint(jid, config.output.checkpoints) for jid in plan.jobs}
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
                use_deterministic(self.config.performance.deterministic)  # before the device's first kernel
                _CONTEXTS[key] = TrainContext(self.config, self.components, resolve_device(self.config.device))
            self._ctx = _CONTEXTS[key]
        return self._ctx

    def __call__(self, job: Job, progress: ProgressFn | None = None) -> JobRecord:
        done = self.finished(job)
        if done is not None:  # a retry, or a dependent whose source retrained to the same weights
            return done
        started = utc_now()
        try:
            if job.kind == "estimate":
                record = self._estimate(job)
            else:
                source_state, source_sha = self._source(job)
                record, model = train_job(job, self.ctx, source_state, progress, init_state=self._init_state(job))
                record = self._trained(job, record, model, source_sha)
        except DataError:
            raise  # the data, not this network, is broken: the run stops and says why
        except TrainingFailed as exc:
            record = self._failed(job, str(exc), started)
        except Exception as exc:  # noqa: BLE001 - one broken job must not stop the grid
            record = self._failed(job, f"{type(exc).__name__}: {exc}", started, traceback.format_exc())
        return self._write(record)

    def _trained(self, job: Job, record: JobRecord, model: Any, source_sha: str | None) -> JobRecord:
        """A trained network's record with its code and source, and its checkpoint kept."""
        updates = {"fingerprint": self._fingerprint(job), "source_sha256": source_sha}
        if self.keep_checkpoint.get(job.id, False):
            updates["checkpoint_sha256"] = self.store.save_checkpoint(job.id, model.state_dict())
        return record.model_copy(update=updates)

    def _write(self, record: JobRecord) -> JobRecord:
        self.store.write_record(record)
        if record.ok and self.config.output.shared_cache:
            JobCache(Path(self.config.output.shared_cache)).publish(record.job_id, self.store)
        return record

    def run_cohort(self, jobs: Sequence[Job], progress: CohortProgressFn | None = None) -> list[JobRecord]:
        """Train the members of one cohort in lockstep (:func:`transferbench.cohort.train_cohort`);
        write and return their records, in order. A member whose source failed, or that fails
        itself, gets a failed record; the others train on.

        A cohort killed while its records were being written left some members finished and
        its joint checkpoint in place: the finished members then resume with the others from
        that checkpoint (keeping their records), so the rest lose nothing; a checkpoint left
        by a cohort whose members all finished is removed."""
        records: dict[str, JobRecord] = {}
        todo, sources, shas = [], {}, {}
        started = utc_now()
        saved = joint_checkpoint(self._cohort_folder(jobs), jobs)
        whole = saved.is_file()
        for job in jobs:
            done = self.finished(job)
            if done is not None:
                records[job.id] = done
                if not whole:
                    continue
            try:
                sources[job.id], shas[job.id] = self._source(job)
            except TrainingFailed as exc:
                if done is None:
                    records[job.id] = self._write(self._failed(job, str(exc), started))
                continue
            todo.append(job)
        if any(job.id not in records for job in todo):
            records.update(self._train_cohort(todo, sources, shas, progress, started, set(records)))
        elif whole:
            saved.unlink(missing_ok=True)
        return [records[job.id] for job in jobs]

    def _cohort_folder(self, jobs: Sequence[Job]) -> Path:
        return self.run_dir / "cohorts" / (jobs[0].cohort or "solo")

    def _train_cohort(self, jobs: list[Job], sources: dict, shas: dict, progress: CohortProgressFn | None,
                      started: str, finished: set[str]) -> dict[str, JobRecord]:
        """Train ``jobs`` as one cohort and write their records, except those of the members in
        ``finished`` (which ride along to resume the others from the joint checkpoint)."""
        def progress_of(job: Job) -> ProgressFn | None:
            return None if progress is None else lambda s, t, i: progress(job, s, t, i)

        def fail_all(why: str, tb: str | None = None) -> dict[str, JobRecord]:
            return {job.id: self._write(self._failed(job, why, started, tb)) for job in jobs if job.id not in finished}

        out: dict[str, JobRecord] = {}

        def write(results: list) -> None:  # before the joint checkpoint is removed: a kill loses nothing
            for r in results:
                if r.job.id in finished:
                    continue
                record = self._failed(r.job, r.error, started) if r.error else \
                    self._trained(r.job, r.record, r.model, shas[r.job.id])
                out[r.job.id] = self._write(record)

        identity = {job.id: {"fingerprint": job.fingerprint, "source": shas[job.id]} for job in jobs}
        try:
            train_cohort(jobs, self.ctx, sources, progress_of, self._cohort_folder(jobs),
                         self.config.output.cohort_checkpoint_minutes, identity, written=write)
        except DataError:
            raise
        except TrainingFailed as exc:
            return fail_all(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken cohort must not stop the grid
            return fail_all(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return out

    def _fingerprint(self, job: Job) -> dict:
        c = self.components
        if job.kind == "estimate":  # the estimation code, not the training code, made its record
            return code_fingerprint([c.data, c.architecture, job.estimator], entry=ESTIMATION_ENTRY)
        return code_fingerprint([c.data, c.architecture] + ([job.protocol] if job.protocol else [])
                                + [t.transform for t in job.transforms])  # as the planner's (plan._Builder)

    def _source(self, job: Job) -> tuple[dict | None, str | None]:
        """The source network's weights and their SHA-256 (None, None for a job without one).

        Raises:
            TrainingFailed: see :meth:`_verified`.
        """
        if job.external is not None:  # a weights file: exactly the bytes the plan hashed
            try:
                return load_state(job.external.file), job.external.file.sha256
            except SourceFileError as exc:
                raise TrainingFailed(str(exc)) from None
        if job.depends_on is None:
            return None, None
        sha = self._verified(job.depends_on)
        return self.store.load_checkpoint(job.depends_on), sha

    def _init_state(self, job: Job) -> dict | None:
        """The source network's initial weights, when the job's protocol resets layers to them:
        recomputed exactly from the source job's seed, or read from a weights file's ``init``."""
        if not job.read_protocol(self.plan.num_layers).resets:
            return None
        if job.external is not None:
            if job.external.init is None:
                raise TrainingFailed("the protocol resets layers to the source's initial weights, and the "
                                     "source file has no init file")
            try:
                return load_state(job.external.init)
            except SourceFileError as exc:
                raise TrainingFailed(str(exc)) from None
        source = self.plan.jobs[job.depends_on] if job.depends_on else None
        if source is None:
            raise TrainingFailed("the protocol resets layers to the source's initial weights; the job has no source")
        return initial_state(self.components.architecture, source.num_classes, self.ctx.input_shape, source.seed)

    def _verified(self, src: str) -> str:
        """The SHA-256 of the checkpoint of network ``src``, after checking that it trained well.

        Raises:
            TrainingFailed: the network failed, or its record or checkpoint is damaged (moved
                aside, so that a rerun trains it again).
        """
        store = self.store
        try:
            source = store.read_record(src)
        except RecordError as exc:
            store.quarantine(store.record_path(src))
            raise TrainingFailed(f"the record of source network {src} is damaged ({exc}); it was moved "
                                 "under damaged/: rerun to train the source again") from None
        if source is None or not source.ok:
            raise TrainingFailed(f"source network {src} failed: {source.error if source else 'did not run'}")
        problem = store.checkpoint_problem(src, source.checkpoint_sha256)
        if problem is not None:
            if store.has_checkpoint(src):
                store.quarantine(store.checkpoint_path(src))
            store.supersede(src)
            raise TrainingFailed(f"the checkpoint of source network {src} is {problem}; it was moved aside: "
                                 "rerun to train the source again")
        return source.checkpoint_sha256 or sha256_file(store.checkpoint_path(src))

    def _estimate(self, job: Job) -> JobRecord:
        """An estimator job: every network it reads checked as a transfer's source is, then scored."""
        shas = [self._verified(dep) for dep in job.dependencies]
        store = self.store

        def load(jid: str) -> tuple[int, dict]:
            if job.external is not None and jid == source_network(job):
                # a weights file, with its own classifier where it has one (LEEP and NCE read it;
                # layer-n features never do), else a throwaway head for the target's classes
                state = self._source(job)[0] or {}
                classes = _file_classes(self.components.architecture, job.num_classes, self.ctx.input_shape, state)
                return classes, overlay(self.components.architecture, classes, self.ctx.input_shape, state)
            return self.plan.jobs[jid].num_classes, store.load_checkpoint(jid)

        record = estimate_job(job, self.ctx, load)
        sha = job.external.file.sha256 if job.external is not None else shas[0]
        return record.model_copy(update={"fingerprint": self._fingerprint(job), "source_sha256": sha})

    def finished(self, job: Job) -> JobRecord | None:
        store = self.store
        try:
            record = store.read_record(job.id)
            source = store.read_record(job.depends_on) if job.depends_on else None
        except RecordError:
            return None
        if record is None or not record.ok:
            return None
        if not self.config.output.reuse_across_code and record.fingerprint_id != job.fingerprint:
            return None
        if record.seed is not None and record.seed != job.seed:  # the planner's seeds are not in the fingerprint
            return None
        if self.keep_checkpoint.get(job.id, False) and store.checkpoint_problem(job.id, record.checkpoint_sha256):
            return None
        if source is not None and source.checkpoint_sha256 and record.source_sha256 \
                and source.checkpoint_sha256 != record.source_sha256:
            return None  # trained from earlier weights of its source
        return record

    def record_failure(self, job: Job, error: str) -> JobRecord:
        record = self._failed(job, error, utc_now())
        self.store.write_record(record)
        return record

    @staticmethod
    def _failed(job: Job, error: str, started: str, tb: str | None = None) -> JobRecord:
        return JobRecord.failed(job.id, error, started_at=started, seed=job.seed,
                                num_classes=job.num_classes, traceback=tb)


def _file_classes(arch: Any, num_classes: int, shape: Sequence[int], state: dict) -> int:
    """How many classes a weights file's own classifier has: the first dimension of its
    classifier's first tensor whose other dimensions fit the architecture (``num_classes``
    when the file has no such tensor)."""
    model = build_meta(arch, num_classes, shape)
    head = list(arch.layers(model))[-1]
    for key, value in model.state_dict().items():
        mine = state.get(key)
        if (under(key, head.modules) and mine is not None and mine.ndim == value.ndim >= 1
                and value.shape[0] == num_classes and tuple(mine.shape[1:]) == tuple(value.shape[1:])):
            return int(mine.shape[0])
    return num_classes
