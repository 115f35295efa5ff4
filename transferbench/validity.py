"""The validity-check contract: does a run support the claims its report makes?

A report is only worth what its comparisons are worth. Each :class:`ValidityCheck` plugin
reads a finished (or unfinished) run through a :class:`RunView` and returns one or more
:class:`CheckResult`: ``pass`` or ``warn``, a one-line finding and, for a warning, a one-line
remedy. The built-in checks (plugins/validity_checks.py) ask whether the base networks
converged (and the BnB+ control holds), whether there are enough units for intervals,
whether a cell sits at chance, whether cells are missing, whether one code trained every
network and whether the inputs had the scale the initialisation expects. Third-party
packages add checks through the ``register_checks`` hook.

This module is the contract only: it imports nothing that computes a report, so the plugin
host (and through it the training path) never depends on the reporting code. The report
(:mod:`transferbench.runreport`) builds the view, runs every registered check once and
hands the results to its renderers.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .interfaces import P, Plugin

if TYPE_CHECKING:
    from .analysis import Grid
    from .records import JobRecord
    from .results import RunResults

__all__ = ["CheckResult", "RunView", "Status", "ValidityCheck"]

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
    """What a check reads: the run's rows, its grids (as the report built them) and records.

    Attributes:
        results: every cell of the plan with its network's numbers.
        metric: the accuracy the report is based on.
        pool: the report's pooling choice (None: per experiment, see the analysis module).
        margins: experiment -> the control's equivalence margin in top-1 (a fraction: 0.008
            is 0.8 points): how close BnB+ must be shown to be to baseB (``report
            --control-margin``; by default half the paper's fine-tuning boost, scaled to the
            experiment's headroom).
    """

    def __init__(self, results: RunResults, grids: Sequence[Grid], metric: str = "top1", pool: bool | None = None,
                 records: Callable[[str], JobRecord | None] | None = None,
                 margins: Mapping[str, float] | None = None) -> None:
        self.results, self.metric, self.pool = results, metric, pool
        self._grids = list(grids)
        self._records = records
        self.margins = dict(margins or {})

    def margin(self, experiment: str, default: float = 0.01) -> float:
        """The control's margin for ``experiment`` (top-1 as a fraction; ``default`` when the
        report set none)."""
        return self.margins.get(experiment, default)

    def grids(self) -> list[Grid]:
        """One grid per experiment, as the report shows them."""
        return list(self._grids)

    def record(self, job_id: str) -> JobRecord | None:
        """A network's record (its evaluation history, ...), or None (none, or unreadable)."""
        return None if self._records is None else self._records(job_id)

    def chance(self, experiment: str, treatment: str) -> float | None:
        """Chance accuracy (1 / classes) of a treatment's task, when known."""
        for row in self.results.rows:
            if row.experiment == experiment and row.treatment == treatment and row.num_classes:
                return 1.0 / row.num_classes
        for row in self.results.rows:  # a pooled name (baseB holding baseA): any row of the grid
            if row.experiment == experiment and row.num_classes:
                return 1.0 / row.num_classes
        return None


class ValidityCheck(Plugin[P], abc.ABC):
    """Reads a run and says whether a claim of its report holds (the ``check`` plugin kind)."""

    @abc.abstractmethod
    def check(self, run: RunView) -> list[CheckResult]:
        """The findings of this check on ``run``; each result names the check's own name
        (``self.name``, set by the report before it runs the check)."""

    name: str = ""
