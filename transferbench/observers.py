"""Run observers: plugins that watch a run as it goes (experiment trackers, loggers).

An :class:`Observer` is a plugin kind like the others (hook ``register_observers``, config
key ``observers:``). The engine calls every observer of the config alongside the progress
display: once when the run starts (:class:`RunInfo`), for every job the executor starts,
advances and finishes (with its :class:`~transferbench.JobRecord`), once when the run's
report is computed and its files written (:class:`ReportInfo`) and finally :meth:`Observer.close`.

An observer never fails a run: one that raises after the run started is switched off with
a warning and the run goes on. One that raises in :meth:`Observer.run_started` stops the
run before anything trains (a tracker that cannot be reached is better found then).

This module is the contract only; :mod:`transferbench.observing` wires observers into a run.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .interfaces import P, Plugin

if TYPE_CHECKING:
    from .jobs import Job
    from .records import JobRecord

__all__ = ["Observer", "ReportInfo", "RunInfo", "Scalar"]

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
    """What an observer learns when a run's report has been computed and its files written.

    Attributes:
        run_dir: the run directory.
        files: the files written from the report (``results_<metric>.csv`` first, then the
            summary, metrics, validity checks and tidy exports).
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


class Observer(Plugin[P], abc.ABC):
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
        """The run's report was computed and its files written; ``report.cells`` holds the final grids."""

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
