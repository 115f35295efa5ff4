"""Run a plan: skip finished jobs, train the rest through the executor, record everything.

:func:`run_plan` is what ``transferbench run`` calls once the config is resolved.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import __version__
from .config import Config, dump_config
from .plan import Job, Plan, content_hash
from .resolve import Components
from .store import JobCache, RunStore
from .trainer import ProgressFn, TrainContext, TrainingFailed, resolve_device, train_job


@dataclass
class RunSummary:
    """What a run did."""

    run_dir: Path
    total: int
    skipped: int
    trained: int
    failed: int


def job_label(plan: Plan, job: Job) -> str:
    """A short human name for a job, from the first cell that uses it."""
    cells = plan.cells_of(job.id)
    if not cells:
        return job.id
    c = cells[0]
    n = f" n={c.n}" if c.n else ""
    return f"{c.treatment}{n} ({c.experiment}, seed {c.split_seed})"


class Reporter:
    """Progress bars: jobs overall and the current job's steps, with time left.

    On a terminal the bars redraw in place; when output is piped, one line per finished job.
    """

    def __init__(self, console: Console, plan: Plan, total: int, done: int) -> None:
        self.console, self.plan = console, plan
        self.step_tasks: dict[str, Any] = {}
        self.live = console.is_terminal
        self.total, self.done = total, done
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.jobs_task = self.progress.add_task("jobs", total=total, completed=done, info="")

    def __enter__(self) -> "Reporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def job_started(self, job: Job) -> None:
        """A job began (one step bar per running job)."""
        self.step_tasks[job.id] = self.progress.add_task(f"  {job_label(self.plan, job)}", total=None, info="")

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        task = self.step_tasks.get(job.id)
        if task is not None and (step == total or step % 5 == 0):
            top1 = info.get("top1", float("nan"))
            text = f"loss {info['loss']:.3f}" + (f" top1 {top1:.3f}" if top1 == top1 else "")
            self.progress.update(task, completed=step, total=total, info=text)

    def job_finished(self, job: Job, record: dict[str, Any]) -> None:
        task = self.step_tasks.pop(job.id, None)
        if task is not None:
            self.progress.remove_task(task)
        label = job_label(self.plan, job)
        self.done += 1
        self.progress.update(self.jobs_task, completed=self.done)
        if record["status"] == "ok":
            msg = f"top1 {record['top1']:.3f} in {record['train_time_s']:.1f} s"
        else:
            msg = f"[red]FAILED[/red]: {escape(str(record['error']))}"
        self.console.print(f"\\[{self.done}/{self.total}] {escape(label)}: {msg}", highlight=False)


_CONTEXTS: dict[str, TrainContext] = {}


class JobRunner:
    """Trains one job and writes its record: what an executor calls for every job.

    Picklable: it carries the resolved config, plugins and plan, and builds its training
    context (device, in-memory data) lazily in whichever process runs it, so a process pool
    or a cluster worker can run jobs with the same code as the local loop.
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

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ctx"] = None  # in-memory data and device stay in the process that made them
        return state

    @property
    def store(self) -> RunStore:
        return RunStore(self.run_dir)

    @property
    def ctx(self) -> TrainContext:
        if self._ctx is None:
            # one context per process and experiment: a worker that runs many jobs reads the
            # data once, not once per job
            key = content_hash(self.config.model_dump(mode="json"))
            if key not in _CONTEXTS:
                _CONTEXTS[key] = TrainContext(self.config, self.components, resolve_device(self.config.device))
            self._ctx = _CONTEXTS[key]
        return self._ctx

    def __call__(self, job: Job, progress: ProgressFn | None = None) -> dict[str, Any]:
        store = self.store
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            source_state = None
            if job.depends_on is not None:
                source = store.read_record(job.depends_on)
                if source is None or source["status"] != "ok":
                    why = source["error"] if source else "did not run"
                    raise TrainingFailed(f"source network {job.depends_on} failed: {why}")
                source_state = store.load_checkpoint(job.depends_on)
            record, model = train_job(job, self.ctx, source_state, progress)
            if self.keep_checkpoint.get(job.id, False):
                store.save_checkpoint(job.id, model.state_dict())
        except TrainingFailed as exc:
            record = _failed(job, str(exc), started)
        except Exception as exc:  # noqa: BLE001 - one broken job must not stop the grid
            record = _failed(job, f"{type(exc).__name__}: {exc}", started)
            record["traceback"] = traceback.format_exc()
        store.write_record(record)
        if record["status"] == "ok" and self.config.output.shared_cache:
            JobCache(Path(self.config.output.shared_cache)).publish(job.id, store)
        return record

    def finished(self, job: Job) -> dict[str, Any] | None:
        """The job's record if it already finished well (with its checkpoint, where one is
        kept), else None: lets an executor that may start a job twice (a retry after a
        crash) return the first result instead of training again."""
        store = self.store
        record = store.read_record(job.id)
        if record is None or record.get("status") != "ok":
            return None
        if self.keep_checkpoint.get(job.id, False) and not store.has_checkpoint(job.id):
            return None
        return record

    def record_failure(self, job: Job, error: str) -> dict[str, Any]:
        """Write and return a failed record for a job that could not run at all (its worker
        died, say), where ``runner(job)`` itself could not record anything."""
        record = _failed(job, error, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.store.write_record(record)
        return record


def _failed(job: Job, error: str, started: str) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": "failed",
        "error": error,
        "top1": None,
        "top5": None,
        "top1_best_k": None,
        "seed": job.seed,
        "num_classes": job.num_classes,
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "transferbench_version": __version__,
        "torch_version": torch.__version__,
    }


def pending_jobs(plan: Plan, store: RunStore, shared: JobCache | None = None) -> list[Job]:
    """Jobs to (re)train: no record, a failed record, or a source whose checkpoint is gone
    while a job that copies from it still has to run. Jobs found in ``shared`` are copied
    into the run instead."""
    todo: dict[str, Job] = {}
    for job in plan.jobs.values():
        rec = store.read_record(job.id)
        if rec is None or rec.get("status") != "ok":
            need_ckpt = bool(plan.dependents(job.id))
            if shared is not None and shared.fetch(job.id, store, need_ckpt) is not None:
                continue
            todo[job.id] = job
    for job in list(todo.values()):
        src = job.depends_on
        if src and src not in todo and not store.has_checkpoint(src):
            todo[src] = plan.jobs[src]
    return [j for j in plan.jobs.values() if j.id in todo]  # keep dependency order


def run_plan(
    config: Config, components: Components, plan: Plan, run_dir: Path, console: Console
) -> RunSummary:
    """Train every unfinished job of ``plan`` into ``run_dir`` (resuming what is there)."""
    store = RunStore(run_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    with store.lock():
        store.check_compatible(plan.config_hash)
        store.write_start(dump_config(config), plan.to_json())
        before = sum(1 for j in plan.jobs if (store.read_record(j) or {}).get("status") == "ok")
        shared = JobCache(Path(config.output.shared_cache)) if config.output.shared_cache else None
        todo = pending_jobs(plan, store, shared)
        skipped = len(plan.jobs) - len(todo)
        if before:
            console.print(f"resuming {run_dir}: {before} of {len(plan.jobs)} networks already trained")
        if skipped > before:
            console.print(f"reusing {skipped - before} networks from the shared cache {shared.root}")
        console.print(f"training {len(todo)} networks on {device} into {run_dir}")
        runner = JobRunner(config, components, plan, run_dir)
        with Reporter(console, plan, total=len(plan.jobs), done=skipped) as reporter:
            components.executor.run(todo, runner, reporter)
        failed = sum(
            1 for j in plan.jobs.values() if (store.read_record(j.id) or {}).get("status") != "ok"
        )
    return RunSummary(run_dir, len(plan.jobs), skipped, len(todo), failed)
