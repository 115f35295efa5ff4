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
from .plan import Job, Plan
from .resolve import Components
from .store import RunStore
from .trainer import TrainContext, TrainingFailed, resolve_device, train_job


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

    def __init__(self, console: Console, total: int, done: int) -> None:
        self.console = console
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
        self.step_task = None

    def __enter__(self) -> "Reporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, label: str) -> None:
        if self.step_task is not None:
            self.progress.remove_task(self.step_task)
        self.step_task = self.progress.add_task(f"  {label}", total=None, info="")

    def step(self, step: int, total: int, info: dict[str, float]) -> None:
        if self.step_task is not None and (step == total or step % 5 == 0):
            top1 = info.get("top1")
            text = f"loss {info['loss']:.3f}" + (f" top1 {top1:.3f}" if top1 == top1 else "")
            self.progress.update(self.step_task, completed=step, total=total, info=text)

    def finish(self, label: str, record: dict[str, Any]) -> None:
        self.done += 1
        self.progress.update(self.jobs_task, completed=self.done)
        if record["status"] == "ok":
            msg = f"top1 {record['top1']:.3f} in {record['train_time_s']:.1f} s"
        else:
            msg = f"[red]FAILED[/red]: {escape(str(record['error']))}"
        self.console.print(f"\\[{self.done}/{self.total}] {escape(label)}: {msg}", highlight=False)


class LocalJobRunner:
    """Trains one job in this process and writes its record (the executor's callback)."""

    def __init__(self, ctx: TrainContext, store: RunStore, plan: Plan, reporter: Reporter) -> None:
        self.ctx, self.store, self.plan, self.reporter = ctx, store, plan, reporter
        keep = ctx.config.output.checkpoints
        self.keep_checkpoint = {
            jid: keep == "all" or (keep == "sources" and bool(plan.dependents(jid)))
            for jid in plan.jobs
        }

    def __call__(self, job: Job) -> dict[str, Any]:
        label = job_label(self.plan, job)
        self.reporter.start(label)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            source_state = None
            if job.depends_on is not None:
                source = self.store.read_record(job.depends_on)
                if source is None or source["status"] != "ok":
                    why = source["error"] if source else "did not run"
                    raise TrainingFailed(f"source network {job.depends_on} failed: {why}")
                source_state = self.store.load_checkpoint(job.depends_on)
            record, model = train_job(job, self.ctx, source_state, self.reporter.step)
            if self.keep_checkpoint[job.id]:
                self.store.save_checkpoint(job.id, model.state_dict())
        except TrainingFailed as exc:
            record = _failed(job, str(exc), started)
        except Exception as exc:  # noqa: BLE001 - one broken job must not stop the grid
            record = _failed(job, f"{type(exc).__name__}: {exc}", started)
            record["traceback"] = traceback.format_exc()
        self.store.write_record(record)
        self.reporter.finish(label, record)
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


def pending_jobs(plan: Plan, store: RunStore) -> list[Job]:
    """Jobs to (re)train: no record, a failed record, or a source whose checkpoint is gone
    while a job that copies from it still has to run."""
    todo: dict[str, Job] = {}
    for job in plan.jobs.values():
        rec = store.read_record(job.id)
        if rec is None or rec.get("status") != "ok":
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
        todo = pending_jobs(plan, store)
        skipped = len(plan.jobs) - len(todo)
        if skipped:
            console.print(f"resuming {run_dir}: {skipped} of {len(plan.jobs)} networks already trained")
        console.print(f"training {len(todo)} networks on {device} into {run_dir}")
        ctx = TrainContext(config, components, device)
        with Reporter(console, total=len(plan.jobs), done=skipped) as reporter:
            runner = LocalJobRunner(ctx, store, plan, reporter)
            components.executor.run(todo, runner)
        failed = sum(
            1 for j in plan.jobs.values() if (store.read_record(j.id) or {}).get("status") != "ok"
        )
    return RunSummary(run_dir, len(plan.jobs), skipped, len(todo), failed)
