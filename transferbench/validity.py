"""Validity checks: does a run support the claims its report makes?

A report is only worth what its comparisons are worth. Each :class:`ValidityCheck` plugin
reads a finished (or unfinished) run through a :class:`RunView` and returns one or more
:class:`CheckResult`: ``pass`` or ``warn``, a one-line finding and, for a warning, a one-line
remedy. The built-in checks (plugins/checks.py) ask whether the base networks converged
(and the BnB+ control holds), whether there are enough networks for intervals, whether a
cell sits at chance, whether cells are missing, whether one code trained every network and
whether the inputs had the scale the initialisation expects. Third-party packages add
checks through the ``register_checks`` hook. ``run`` and ``report`` print every result in a
"Validity checks" section and write ``validity_checks_<metric>.csv`` / ``.json``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from .analysis import Grid, build_grids
from .interfaces import Plugin
from .records import JobRecord, RecordError
from .results import RunResults, rows_to_csv, write_atomic
from .store import RunStore

__all__ = ["CheckResult", "RunView", "ValidityCheck", "checks_json", "run_checks", "write_checks"]

Status = Literal["pass", "warn"]


@dataclass(frozen=True)
class CheckResult:
    """One finding of a validity check.

    Attributes:
        check: the check's registered name.
        status: ``pass`` (the claim it guards is supported) or ``warn``.
        message: what was found, in one line, with the numbers behind it.
        remedy: for a warning, what to do about it, in one line.
        experiment: the experiment it concerns (None: the whole run).
    """

    check: str
    status: Status
    message: str
    remedy: str = ""
    experiment: str | None = None


class RunView:
    """What a check reads: the run's rows, its grids (as the report builds them) and records.

    Attributes:
        results: every cell of the plan with its network's numbers.
        metric: the accuracy the report is based on.
        pool: the report's pooling choice (None: per experiment, see the analysis module).
    """

    def __init__(self, results: RunResults, metric: str = "top1", pool: bool | None = None) -> None:
        self.results, self.metric, self.pool = results, metric, pool
        self._grids: list[Grid] | None = None
        self._store = RunStore(results.run_dir) if results.run_dir is not None else None

    def grids(self) -> list[Grid]:
        """One grid per experiment (built once)."""
        if self._grids is None:
            self._grids = build_grids(self.results, self.metric, self.pool)
        return self._grids

    def record(self, job_id: str) -> JobRecord | None:
        """A network's record (its evaluation history, ...), or None (none, or unreadable)."""
        if self._store is None:
            return None
        try:
            return self._store.read_record(job_id)
        except RecordError:
            return None

    def chance(self, experiment: str, treatment: str) -> float | None:
        """Chance accuracy (1 / classes) of a treatment's task, when known."""
        for row in self.results.rows:
            if row.experiment == experiment and row.treatment == treatment and row.num_classes:
                return 1.0 / row.num_classes
        for row in self.results.rows:  # a pooled name (baseB holding baseA): any row of the grid
            if row.experiment == experiment and row.num_classes:
                return 1.0 / row.num_classes
        return None


class ValidityCheck(Plugin, abc.ABC):
    """Reads a run and says whether a claim of its report holds (the ``check`` plugin kind)."""

    @abc.abstractmethod
    def check(self, run: RunView) -> list[CheckResult]:
        """The findings of this check on ``run``; each result names the check's own name
        (``self.name``, set by :func:`run_checks`)."""

    name: str = ""


def run_checks(view: RunView, checks: Mapping[str, ValidityCheck]) -> list[CheckResult]:
    """Every check on ``view``, in name order; a check that raises becomes a warning about itself."""
    out: list[CheckResult] = []
    for name in sorted(checks):
        check = checks[name]
        check.name = name
        try:
            results = list(check.check(view))
        except Exception as exc:  # noqa: BLE001 - a broken third-party check must not hide the others
            results = [CheckResult(name, "warn", f"the check itself failed: {type(exc).__name__}: {exc}",
                                   "report it to the plugin's authors")]
        out += [r if r.check else CheckResult(name, r.status, r.message, r.remedy, r.experiment) for r in results]
    return out


def checks_json(results: Sequence[CheckResult]) -> list[dict[str, str | None]]:
    """The results as plain data (the ``validity_checks_<metric>.json`` export)."""
    return [asdict(r) for r in results]


def write_checks(results: Sequence[CheckResult], out_dir: Path, metric: str = "top1") -> list[Path]:
    """Write ``validity_checks_<metric>.csv`` and ``.json`` into ``out_dir``."""
    fields = ("check", "status", "experiment", "message", "remedy")
    stem = Path(out_dir) / f"validity_checks_{metric}"
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    write_atomic(csv_path, rows_to_csv(fields, ([getattr(r, f) for f in fields] for r in results)))
    write_atomic(json_path, json.dumps(checks_json(results), indent=2) + "\n")
    return [csv_path, json_path]
