"""Executors run a plan's jobs; the local one, in this process, is the default.

An executor receives jobs in dependency order and a :class:`JobRunner` that trains one job,
writes its record and returns it. A distributed executor only has to respect
``job.depends_on`` and call the runner (or its equivalent) where the job runs.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol, Sequence

from .hookspecs import hookimpl
from .interfaces import Plugin


class JobRunner(Protocol):
    """Trains one job (or records why it failed) and returns its record."""

    def __call__(self, job: Any) -> dict[str, Any]: ...


class Executor(Plugin, abc.ABC):
    """Runs jobs, respecting their dependencies."""

    @abc.abstractmethod
    def run(self, jobs: Sequence[Any], runner: JobRunner) -> None:
        """Run every job of ``jobs`` (given in dependency order) through ``runner``."""


class LocalExecutor(Executor):
    """One job after another in this process, in dependency order."""

    description = "run jobs one after another in this process"

    def run(self, jobs: Sequence[Any], runner: JobRunner) -> None:
        for job in jobs:
            runner(job)


@hookimpl
def register_executors(register) -> None:
    register("local", LocalExecutor)
