"""The progress display of ``transferbench run``: the executor's :class:`~transferbench.Events`."""

from __future__ import annotations

from typing import Any

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

from .executor import Events
from .jobs import Job
from .plan import Plan
from .records import JobRecord

__all__ = ["ProgressDisplay", "job_label"]


def job_label(plan: Plan, job: Job) -> str:
    """A short human name for a job, from the first cell that uses it."""
    if job.kind == "estimate" and job.estimator_spec is not None:
        return f"{job.estimator_spec['name']} on {job.source}n{job.target} n={job.n}"
    cells = plan.cells_of(job.id)
    if not cells:
        return job.id
    c = cells[0]
    n = f" n={c.n}" if c.n else ""
    return f"{c.treatment}{n} ({c.experiment}, seed {c.split_seed})"


class ProgressDisplay(Events):
    """Progress bars: jobs overall and each running job's steps, with time left.

    On a terminal the bars redraw in place; when output is piped, one line per finished job.
    """

    def __init__(self, console: Console, plan: Plan, total: int, done: int) -> None:
        self.console, self.plan = console, plan
        self.step_tasks: dict[str, Any] = {}
        self.total, self.done = total, done
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.jobs_task = self.progress.add_task("jobs", total=total, completed=done, info="")

    def __enter__(self) -> ProgressDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def job_started(self, job: Job) -> None:
        self.step_tasks[job.id] = self.progress.add_task(f"  {job_label(self.plan, job)}", total=None, info="")

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        task = self.step_tasks.get(job.id)
        if task is not None and (step == total or step % 5 == 0):
            top1 = info.get("top1", float("nan"))
            text = f"loss {info['loss']:.3f}" + (f" top1 {top1:.3f}" if top1 == top1 else "")
            self.progress.update(task, completed=step, total=total, info=text)

    def job_finished(self, job: Job, record: JobRecord) -> None:
        task = self.step_tasks.pop(job.id, None)
        if task is not None:
            self.progress.remove_task(task)
        self.done += 1
        self.progress.update(self.jobs_task, completed=self.done)
        if record.ok and record.estimate is not None:
            msg = f"{record.estimate:.4g} in {record.train_time_s or 0:.1f} s"
        elif record.ok:
            msg = f"top1 {record.top1:.3f} in {record.train_time_s or 0:.1f} s"
        else:
            msg = f"[red]FAILED[/red]: {escape(str(record.error))}"
        label = escape(job_label(self.plan, job))
        self.console.print(f"\\[{self.done}/{self.total}] {label}: {msg}", highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)
