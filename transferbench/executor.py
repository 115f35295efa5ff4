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

from .interfaces import P, Plugin

if TYPE_CHECKING:
    from .jobs import Job
    from .records import JobRecord

__all__ = ["CohortProgressFn", "Events", "Executor", "JobRunner", "ProgressFn", "cohort_units"]

log = logging.getLogger("transferbench")

#: ``progress(step, total_steps, info)``: called by a running job after every step; ``info``
#: holds ``loss`` (a running mean) and ``top1`` (the last evaluation, NaN before the first).
ProgressFn = Callable[[int, int, "dict[str, float]"], None]

#: ``progress(job, step, total_steps, info)``: a cohort's progress, per member job.
CohortProgressFn = Callable[["Job", int, int, "dict[str, float]"], None]


class JobRunner(Protocol):
    """Trains one job (or records why it failed). Picklable: ship it to worker processes.

    Attributes:
        device: the config's device setting (``auto``, ``cpu``, ``cuda``, ...), so an
            executor can decide whether jobs need GPUs.
        threads: torch CPU threads a job should use, or None for the executor's choice.
    """

    @property
    def device(self) -> str:
        """The config's device setting."""
        ...

    @property
    def threads(self) -> int | None:
        """Torch CPU threads a job uses, or None for the executor's choice."""
        ...

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

    def run_cohort(self, jobs: Sequence[Job], progress: CohortProgressFn | None = None) -> list[JobRecord]:
        """Train the members of one cohort (jobs with the same ``job.cohort``) in lockstep
        on one stream of batches; write and return one record per job, in order.

        Each member gets the record ``runner(job)`` would give it. One member's failure
        (a NaN loss) is its own: the others train on. Members that already finished are
        returned as they are; a cohort interrupted part-way resumes from its last joint
        checkpoint.
        """
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


class Executor(Plugin[P], abc.ABC):
    """Runs jobs, respecting their dependencies.

    Attributes:
        runs_here: whether jobs run on this machine (the config's ``device`` is then checked
            against it before any work); a cluster executor sets False.
    """

    runs_here: ClassVar[bool] = True

    @property
    def cohorts(self) -> bool:
        """Whether this executor trains cohorts: then the plan gives the transferred networks
        that share a training set one data order (it enters their ids), and :meth:`run`
        hands each cohort's members to ``runner.run_cohort`` together (:func:`cohort_units`).
        Read from the executor's ``cohorts`` setting when it has one; False otherwise."""
        return bool(getattr(self.params, "cohorts", False))

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job], runner: JobRunner, events: Events | None = None) -> None:
        """Run every job of ``jobs`` (given in dependency order) through ``runner``.

        Each job's record is written by ``runner``; report each start and end to
        ``events``. Return when every job has a record (or raise ``KeyboardInterrupt`` after
        stopping the work, leaving a resumable run).
        """


def cohort_units(jobs: Sequence[Job], size: int | None = None) -> list[list[Job]]:
    """The units an executor runs: each cohort's members together (in chunks of at most
    ``size``), every other job alone; in the order of each unit's first job.

    A unit may start once every job its members depend on, outside the unit, has finished.
    Chunking a cohort changes no number: the data order belongs to each job.
    """
    units: list[list[Job]] = []
    open_unit: dict[str, list[Job]] = {}
    for job in jobs:
        key = getattr(job, "cohort", None)
        if key is None:
            units.append([job])
            continue
        unit = open_unit.get(key)
        if unit is None or (size is not None and len(unit) >= size):
            unit = open_unit[key] = []
            units.append(unit)
        unit.append(job)
    return units
