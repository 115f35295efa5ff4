"""Run a plan: skip finished jobs, train the rest through the executor, record everything.

:func:`run_plan` is what ``transferbench run`` and :func:`transferbench.run` call once the
config is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from .config import Config, dump_config
from .context import resolve_device
from .plan import Job, Plan
from .progress import Reporter
from .resolve import Components
from .runner import TrainingRunner
from .store import JobCache, RunStore

__all__ = ["RunSummary", "pending_jobs", "run_plan"]


@dataclass
class RunSummary:
    """What a run did."""

    run_dir: Path
    total: int
    skipped: int
    trained: int
    failed: int


def pending_jobs(plan: Plan, store: RunStore, shared: JobCache | None = None) -> list[Job]:
    """Jobs to (re)train: no record, a failed record, or a source whose checkpoint is gone
    while a job that copies from it still has to run. Jobs found in ``shared`` are copied
    into the run instead."""
    todo: dict[str, Job] = {}
    for job in plan.jobs.values():
        rec = store.read_record(job.id)
        if rec is None or not rec.ok:
            need_ckpt = bool(plan.dependents(job.id))
            if shared is not None and shared.fetch(job.id, store, need_ckpt) is not None:
                continue
            todo[job.id] = job
    for job in list(todo.values()):
        for src in job.dependencies:
            if src not in todo and not store.has_checkpoint(src):
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
        before = sum(1 for j in plan.jobs if (rec := store.read_record(j)) is not None and rec.ok)
        shared = JobCache(Path(config.output.shared_cache)) if config.output.shared_cache else None
        todo = pending_jobs(plan, store, shared)
        skipped = len(plan.jobs) - len(todo)
        if before:
            console.print(f"resuming {run_dir}: {before} of {len(plan.jobs)} networks already trained")
        if shared is not None and skipped > before:
            console.print(f"reusing {skipped - before} networks from the shared cache {shared.root}")
        console.print(f"training {len(todo)} networks on {device} into {run_dir}")
        runner = TrainingRunner(config, components, plan, run_dir)
        with Reporter(console, plan, total=len(plan.jobs), done=skipped) as reporter:
            components.executor.run(todo, runner, reporter)
        failed = sum(1 for j in plan.jobs if (rec := store.read_record(j)) is None or not rec.ok)
    return RunSummary(run_dir, len(plan.jobs), skipped, len(todo), failed)
