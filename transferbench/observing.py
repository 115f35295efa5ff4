"""Observers wired into a run: the executor's events fanned out to every observer of the
config, the :class:`~transferbench.RunInfo` a run starts with and the
:class:`~transferbench.ReportInfo` its computed report ends with. The contract itself
(:class:`~transferbench.Observer` and what it receives) is :mod:`transferbench.observers`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .executor import Events
from .jobs import Job
from .observers import Observer, ReportInfo, RunInfo, Scalar

if TYPE_CHECKING:
    from .plan import Plan
    from .records import JobRecord
    from .runreport import RunReport

__all__ = ["ObservedEvents", "observing", "report_info", "run_info"]


def _describe(plan: Plan, job: Job) -> dict[str, Scalar]:
    cells = plan.cells_of(job.id)
    first = cells[0] if cells else None
    n = f" n={first.n}" if first and first.n else ""
    label = f"{first.treatment}{n} ({first.experiment}, seed {first.split_seed})" if first else job.id
    return {
        "label": label,
        "experiment": first.experiment if first else None,
        "treatment": first.treatment if first else None,
        "split_seed": first.split_seed if first else None,
        "n": job.n,
        "kind": job.kind,
        "target": job.target,
        "source": job.source,
        "protocol": job.protocol_spec["name"] if job.protocol_spec else None,
        "num_classes": job.num_classes,
        "seed": job.seed,
        "depends_on": job.depends_on,
        "cells": len(cells),
    }


def run_info(name: str, config: dict[str, Any], plan: Plan, run_dir: Path, todo: Sequence[Job]) -> RunInfo:
    """The :class:`RunInfo` of a plan about to run ``todo`` in ``run_dir``."""
    return RunInfo(
        name=name,
        run_dir=Path(run_dir),
        config=config,
        config_hash=plan.config_hash,
        layer_names=tuple(plan.layer_names),
        jobs=tuple(plan.jobs.values()),
        todo=tuple(j.id for j in todo),
        networks={jid: _describe(plan, job) for jid, job in plan.jobs.items()},
    )


def report_info(report: RunReport, files: Sequence[Path]) -> ReportInfo:
    """Describe a computed report's grids (and the files written from it) for the observers."""
    names = list(report.results.layer_names)
    cells: list[dict[str, Scalar]] = []
    for grid in report.grids:
        for treatment in grid.treatments:
            for n in grid.layers:
                s = grid.get(treatment, n)
                if s is not None:
                    cells.append({"experiment": grid.experiment, "treatment": treatment, "n": n,
                                  "layer": names[n - 1] if 0 < n <= len(names) else "", "count": s.count,
                                  "mean": s.mean, "std": s.std, "ci95_low": s.ci_low, "ci95_high": s.ci_high})
    return ReportInfo(Path(report.run_dir or "."), tuple(files), report.metric, tuple(cells))


class ObservedEvents(Events):
    """The executor's :class:`~transferbench.Events`, fanned out to the progress display
    (``inner``) and to every observer. An observer that raises is switched off with a
    warning; the run goes on."""

    def __init__(self, inner: Events, observers: Sequence[tuple[str, Observer]]) -> None:
        self.inner = inner
        self.observers = list(observers)  # (where it is configured, the observer)

    def _each(self, method: str, *args: Any) -> None:
        for where, obs in list(self.observers):
            try:
                getattr(obs, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must not stop the training
                self.observers.remove((where, obs))
                self.inner.message(f"warning: observer {where} failed in {method} ({type(exc).__name__}: "
                                   f"{exc}); it is switched off for the rest of this run")
                with contextlib.suppress(Exception):
                    obs.close()

    def job_started(self, job: Job) -> None:
        self.inner.job_started(job)
        self._each("job_started", job)

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        self.inner.job_progress(job, step, total, info)
        self._each("job_progress", job, step, total, dict(info))

    def job_finished(self, job: Job, record: JobRecord) -> None:
        self.inner.job_finished(job, record)
        self._each("job_finished", job, record)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def report_written(self, report: RunReport, files: Sequence[Path]) -> None:
        """Tell the observers that the run's report was computed and its files written."""
        if self.observers:
            self._each("report_written", report_info(report, files))

    def close(self) -> None:
        for where, obs in self.observers:
            try:
                obs.close()
            except Exception as exc:  # noqa: BLE001 - reported, the others still close
                self.inner.message(f"warning: observer {where} failed to close ({type(exc).__name__}: {exc})")
        self.observers = []


@contextlib.contextmanager
def observing(inner: Events, observers: Sequence[tuple[str, Observer]], run: RunInfo) -> Iterator[ObservedEvents]:
    """Start every observer (a failure to start is a :class:`~transferbench.ConfigError` at
    its config key), yield the fanned-out events, and close the observers however the run ends."""
    events = ObservedEvents(inner, [])
    try:
        for where, obs in observers:
            try:
                obs.run_started(run)
            except Exception as exc:
                raise ConfigError([(where, f"could not start: {type(exc).__name__}: {exc}")]) from exc
            events.observers.append((where, obs))
        yield events
    finally:
        events.close()
