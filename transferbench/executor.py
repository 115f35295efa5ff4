"""The executor contract: how a plan's jobs get run, here or on a cluster.

An :class:`Executor` plugin receives the jobs to run in dependency order, a picklable
:class:`JobRunner` that trains one job and writes its record, and an :class:`Events` object
to report to (the progress display). It must start a job only after the job it
``depends_on`` has finished, when that job is among those it runs. Everything an executor
needs is here and in the top-level package; the built-in ``local`` and ``ray`` executors
use nothing else.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from .interfaces import Plugin

if TYPE_CHECKING:
    from .plan import Job
    from .records import JobRecord

__all__ = ["Events", "Executor", "JobRunner", "ProgressFn"]

log = logging.getLogger("transferbench")

#: ``progress(step, total_steps, info)``: called by a running job after every step; ``info``
#: holds ``loss`` (a running mean) and ``top1`` (the last evaluation, NaN before the first).
ProgressFn = Callable[[int, int, "dict[str, float]"], None]


class JobRunner(Protocol):
    """Trains one job (or records why it failed). Picklable: ship it to worker processes.

    Attributes:
        device: the config's device setting (``auto``, ``cpu``, ``cuda``, ...), so an
            executor can decide whether jobs need GPUs.
        threads: torch CPU threads a job should use, or None for the executor's choice.
    """

    device: str
    threads: int | None

    def __call__(self, job: Job, progress: ProgressFn | None = None) -> JobRecord:
        """Train ``job``, write its record (and checkpoint) into the run, return the record.

        Never raises for a job's own failure: that is recorded with ``status="failed"``.
        """
        ...

    def finished(self, job: Job) -> JobRecord | None:
        """The job's record if it already finished well (with the checkpoint its dependents
        need), else None: an executor that may start a job twice (a retry after a crash)
        returns that instead of training again."""
        ...

    def record_failure(self, job: Job, error: str) -> JobRecord:
        """Write and return a failed record for a job that could not run at all (its worker
        died, say), where ``runner(job)`` itself could not record anything."""
        ...


class Events:
    """What an executor reports while it works. The default logs messages and ignores the rest."""

    def job_started(self, job: Job) -> None:
        """A job began."""

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        """A running job finished ``step`` of ``total`` steps (see :data:`ProgressFn`)."""

    def job_finished(self, job: Job, record: JobRecord) -> None:
        """A job ended, well or not (``record.status``)."""

    def message(self, text: str) -> None:
        """A line for the user (where the jobs run, a warning ...)."""
        log.info(text)


class Executor(Plugin, abc.ABC):
    """Runs jobs, respecting their dependencies.

    Attributes:
        runs_here: whether jobs run on this machine (the config's ``device`` is then checked
            against it before any work); a cluster executor sets False.
    """

    runs_here: ClassVar[bool] = True

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job], runner: JobRunner, events: Events | None = None) -> None:
        """Run every job of ``jobs`` (given in dependency order) through ``runner``.

        Each job's record is written by ``runner``; report each start and end to
        ``events``. Return when every job has a record (or raise ``KeyboardInterrupt`` after
        stopping the work, leaving a resumable run).
        """
