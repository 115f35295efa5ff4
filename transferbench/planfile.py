"""``plan.json``, typed: what a run directory's plan holds, validated on every read.

:class:`PlanFile` is the one reading of ``plan.json`` (pydantic, like
:class:`~transferbench.JobRecord` for records): the planner writes it
(:meth:`transferbench.plan.Plan.to_file`), the engine merges a new plan into an old one
(:func:`merge_plans`), and results, ``check`` and ``export`` read its fields by name. A cell
with a field of the wrong type (``split_seed: "zero"``) is a :class:`~transferbench.RunDirError`
naming the file, the field and what was found, never a traceback. The JSON is the format
older versions wrote (format 1 and 2 files load unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RunDirError

__all__ = ["CellEntry", "EstimateEntry", "JobEntry", "PlanFile", "merge_plans"]


class _Entry(BaseModel):
    # later versions may add keys: they are kept (and written back), never refused
    model_config = ConfigDict(extra="allow")


class JobEntry(_Entry):
    """One job as plan.json describes it (what it is, not how it ran)."""

    kind: Literal["base", "transfer", "estimate"] | None = None
    target: str | None = None
    source: str | None = None
    n: int = Field(0, ge=0)
    protocol: str | None = None
    depends_on: str | None = None
    num_classes: int | None = Field(None, ge=1)
    seed: int | None = None
    fingerprint: str | None = None
    cohort: str | None = None
    data_seed: int | None = None
    source_checkpoint: dict[str, Any] | None = None
    estimator: str | None = None
    after: list[str] = Field(default_factory=list)


class CellEntry(_Entry):
    """A place in the paper's tables and the job that fills it."""

    experiment: str
    split: str = ""
    split_seed: int = 0
    treatment: str
    n: int = Field(ge=0)
    job_id: str

    def key(self) -> tuple[str, int, str, int]:
        """(experiment, split seed, treatment, n): where the cell stands in the tables."""
        return self.experiment, self.split_seed, self.treatment, self.n


class EstimateEntry(_Entry):
    """A point of an estimator's curve and the job that computes it."""

    experiment: str
    split: str = ""
    split_seed: int
    source: str
    target: str
    n: int = Field(ge=0)
    estimator: str
    job_id: str

    def key(self) -> tuple[str, int, str, str, int, str]:
        return self.experiment, self.split_seed, self.source, self.target, self.n, self.estimator


class PlanFile(_Entry):
    """The contents of ``plan.json``.

    Attributes:
        format: 1 (transferbench 0.1) or 2 (job ids from content, fingerprints per job).
        name, config_hash: the config's name and the hash of its result-determining part.
        num_layers, layer_names: the architecture's layers 1..L.
        expected_input_std: the input std the architecture's initialisation expects.
        exchangeable: experiment -> whether its split draws its halves alike.
        jobs: job id -> the job; cells, estimates: the tables' places and their jobs.
        estimate_only: written by ``run --estimate-only`` (the transfers left out).
        ood_id: the data source's OOD split (None: none), which a record's ``ood_top1`` must
            have been measured on to be read.
    """

    format: int = 1
    name: str = ""
    config_hash: str = ""
    num_layers: int | None = None
    layer_names: list[str] = Field(default_factory=list)
    expected_input_std: float | None = None
    exchangeable: dict[str, bool] = Field(default_factory=dict)
    jobs: dict[str, JobEntry] = Field(default_factory=dict)
    cells: list[CellEntry]
    estimates: list[EstimateEntry] = Field(default_factory=list)
    estimate_only: bool = False
    ood_id: str | None = None

    @property
    def layers(self) -> int:
        """L, from ``num_layers`` or the layer names."""
        return self.num_layers if self.num_layers is not None else len(self.layer_names)

    @classmethod
    def from_json(cls, data: bytes | str, path: Path | str = "plan.json") -> PlanFile:
        """Parse and validate ``plan.json``.

        Raises:
            RunDirError: not JSON, or not shaped like a plan: the file, the field and the value.
        """
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{path} is damaged (not valid JSON: {exc})") from None
        if not isinstance(raw, dict):
            raise RunDirError(f"{path} is damaged (not a plan: a {type(raw).__name__}, not a mapping)")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise RunDirError(f"{path} is damaged (not a plan: {where}: {first['msg']}, found "
                              f"{first.get('input')!r}{more})") from None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (only the keys that were set: the shape older versions wrote;
        ``estimate_only`` only when true)."""
        doc = self.model_dump(mode="json", exclude_unset=True)
        if not self.estimate_only:
            doc.pop("estimate_only", None)
        return doc

    def cells_of(self, job_id: str) -> list[CellEntry]:
        """The cells a job fills."""
        return [c for c in self.cells if c.job_id == job_id]


def merge_plans(old: PlanFile | None, new: PlanFile, finished: Callable[[str], bool] | None = None,
                refuse: Callable[[CellEntry, JobEntry | None, JobEntry | None], str] | None = None
                ) -> tuple[PlanFile, list[str]]:
    """The plan.json of a run directory that ``new`` continues: every cell ever planned there.

    Cells of the old plan that the new one does not have (an experiment, a seed or an n
    dropped from the config) are kept, with their jobs, so their results stay reported. A
    cell that the new plan fills with another network is the new plan's when the old network
    has no result here (``finished`` says which have one): nothing is hidden then.

    Args:
        refuse: the reason to give when a finished cell would be refilled (``refuse(cell,
            old job, new job)``); the planner names a changed weights file with it.

    Returns:
        The merged plan and the names of experiments kept from the old plan only.

    Raises:
        RunDirError: a cell of both plans is filled by different jobs and the old one
            finished: that would hide its result.
    """
    if old is None:
        return new, []
    merged = new.model_copy(deep=True)
    have = {c.key(): c.job_id for c in merged.cells}
    kept: list[CellEntry] = []
    for cell in old.cells:
        at = cell.key()
        if at not in have:
            kept.append(cell)
        elif have[at] != cell.job_id and (finished is None or finished(cell.job_id)):
            why = refuse(cell, old.jobs.get(cell.job_id), merged.jobs.get(have[at])) if refuse else ""
            raise RunDirError(
                f"experiment {at[0]!r}, treatment {at[2]!r} at n={at[3]} (split seed {at[1]}) now names a "
                "different network than the one this run directory holds for it (" + (why or (
                    "a changed protocol or experiment definition under the same names, or executor cohorts "
                    "switched on or off: a cohort's networks share another data order); rename the experiment "
                    "or treatment, or use another --out")))
    merged.cells += kept
    merged.exchangeable = {**old.exchangeable, **merged.exchangeable}
    have_estimates = {e.key() for e in merged.estimates}
    kept_estimates = [e for e in old.estimates if e.key() not in have_estimates]
    if kept_estimates:
        merged.estimates = merged.estimates + kept_estimates
    for job_id in [c.job_id for c in kept] + [e.job_id for e in kept_estimates]:
        if job_id not in merged.jobs and job_id in old.jobs:
            merged.jobs[job_id] = old.jobs[job_id]
    if any(merged.jobs.get(c.job_id, JobEntry()).kind == "transfer" for c in kept):
        merged.estimate_only = False  # retrained networks of an earlier run stay reported
    only_old = sorted({c.experiment for c in kept} - {c.experiment for c in new.cells})
    return merged, only_old
