"""Run observers: plugins that watch a run as it goes (experiment trackers, loggers).

An :class:`Observer` is a plugin kind like the others (hook ``register_observers``, config
key ``observers:``). The engine calls every observer of the config alongside the progress
display: once when the run starts (:class:`RunInfo`), for every job the executor starts,
advances and finishes (with its :class:`~transferbench.JobRecord`), once when the run's
results table is written (:class:`ReportInfo`) and finally :meth:`Observer.close`.

An observer never fails a run: one that raises after the run started is switched off with
a warning and the run goes on. One that raises in :meth:`Observer.run_started` stops the
run before anything trains (a tracker that cannot be reached is better found then).
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .executor import Events
from .interfaces import Plugin

if TYPE_CHECKING:
    from .jobs import Job
    from .plan import Plan
    from .records import JobRecord

__all__ = ["ObservedEvents", "Observer", "ReportInfo", "RunInfo", "observing", "report_info", "run_info"]

log = logging.getLogger("transferbench")

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class RunInfo:
    """What an observer learns when a run starts.

    Attributes:
        name: the config's ``name``.
        run_dir: the run directory.
        config: the resolved config as plain data (what ``config.yaml`` in the run holds).
        config_hash: the hash of the config's result-determining part.
        layer_names: the architecture's layers 1..L.
        jobs: every network of the plan, in dependency order.
        todo: ids of the jobs this run trains (the others are already done).
        networks: per job id, a description with scalar values: ``label`` (a short human
            name such as ``AnB n=3 (random, seed 0)``), ``experiment``, ``treatment``,
            ``split_seed``, ``n``, ``kind``, ``target``, ``source``, ``protocol``,
            ``num_classes``, ``seed``, ``depends_on`` and ``cells`` (table cells it fills).
    """

    name: str
    run_dir: Path
    config: dict[str, Any]
    config_hash: str
    layer_names: tuple[str, ...]
    jobs: tuple[Job, ...]
    todo: tuple[str, ...]
    networks: dict[str, dict[str, Scalar]] = field(default_factory=dict)

    def label(self, job: Job | str) -> str:
        """The job's short human name (its id when the plan does not know it)."""
        jid = job if isinstance(job, str) else job.id
        return str(self.networks.get(jid, {}).get("label", jid))

    def params(self, job: Job | str) -> dict[str, Scalar]:
        """Flat parameters of a job for a tracker: its description plus the config's
        ``data``, ``architecture``, ``train`` and ``eval`` keys (dotted, lists as text)."""
        jid = job if isinstance(job, str) else job.id
        out: dict[str, Scalar] = {k: v for k, v in self.networks.get(jid, {}).items() if k != "label"}
        out["job_id"] = jid
        for section in ("data", "architecture", "train", "eval"):
            out.update(_flatten(self.config.get(section), section))
        return out


@dataclass(frozen=True)
class ReportInfo:
    """What an observer learns when a run's results table has been written.

    Attributes:
        run_dir: the run directory.
        files: the files written (``results_<metric>.csv``).
        metric: the accuracy the cells hold (``top1``).
        cells: one mapping per (experiment, treatment, n) cell of the report's grids, with
            ``experiment``, ``treatment``, ``n``, ``layer`` (the name of layer n, or ``""``),
            ``count``, ``mean``, ``std``, ``ci95_low`` and ``ci95_high`` (as in
            ``results_summary.csv``; base networks are at n = 0).
    """

    run_dir: Path
    files: tuple[Path, ...]
    metric: str
    cells: tuple[dict[str, Scalar], ...]


class Observer(Plugin, abc.ABC):
    """Watches a run: the base of experiment trackers and loggers (config key ``observers``).

    Every method does nothing by default; override the events you need. The engine calls
    them from the main process, in this order: :meth:`run_started`, then per job
    :meth:`job_started`, :meth:`job_progress` (many times) and :meth:`job_finished` (jobs of
    parallel executors interleave), then :meth:`report_written` and :meth:`close`.
    """

    def run_started(self, run: RunInfo) -> None:
        """The run begins; ``run`` describes it and every network it holds."""

    def job_started(self, job: Job) -> None:
        """A network began training."""

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        """A network finished ``step`` of ``total`` steps; ``info`` holds ``loss`` (a running
        mean) and ``top1`` (the last evaluation, NaN before the first)."""

    def job_finished(self, job: Job, record: JobRecord) -> None:
        """A network ended, well or not (``record.status``); ``record.history`` holds its
        periodic evaluations."""

    def report_written(self, report: ReportInfo) -> None:
        """The run's results table was written; ``report.cells`` holds the final grids."""

    def close(self) -> None:
        """The run ended (finished, failed or interrupted): flush and release everything."""


def _flatten(value: Any, prefix: str) -> dict[str, Scalar]:
    if isinstance(value, dict):
        out: dict[str, Scalar] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, (list, tuple)):
        return {prefix: ", ".join(str(v) for v in value)}
    return {prefix: value}


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


def report_info(run_dir: Path, metric: str = "top1") -> ReportInfo:
    """Write ``results_<metric>.csv`` of a run directory and describe its grids for the observers."""
    from .analysis import build_grids, results_csv
    from .results import read_results, write_atomic

    results = read_results(run_dir)
    path = Path(run_dir) / f"results_{metric}.csv"
    write_atomic(path, results_csv(results, metric))
    names = list(results.layer_names)
    cells = []
    for grid in build_grids(results, metric):
        for treatment in grid.treatments:
            for n in grid.layers:
                s = grid.get(treatment, n)
                if s is not None:
                    cells.append({"experiment": grid.experiment, "treatment": treatment, "n": n,
                                  "layer": names[n - 1] if 0 < n <= len(names) else "", "count": s.count,
                                  "mean": s.mean, "std": s.std, "ci95_low": s.ci_low, "ci95_high": s.ci_high})
    return ReportInfo(Path(run_dir), (path,), metric, tuple(cells))


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

    def report_written(self, run_dir: Path) -> None:
        """Write the results table and tell the observers (nothing when there are none)."""
        if self.observers:
            self._each("report_written", report_info(run_dir))

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
