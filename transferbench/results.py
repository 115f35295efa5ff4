"""Read a run directory into tidy rows, one per table cell, and export them.

A run directory holds ``plan.json`` (the jobs and the cells they fill) and one
``records/<job_id>.json`` per finished job (see ``docs/run-directory.md``). This module
joins the two: every cell of the plan becomes a :class:`ResultRow` carrying the record's
accuracies, or ``status="pending"`` when its job has no record yet. Nothing here computes
a metric; :mod:`transferbench.analysis` does.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ResultsError, RunDirError
from .planfile import CellEntry, EstimateEntry, JobEntry, PlanFile
from .records import JobRecord, RecordError
from .store import RunStore, atomic_write_bytes

__all__ = [
    "EstimateRow",
    "LONG_COLUMNS",
    "METRICS",
    "OOD_METRIC",
    "ResultRow",
    "ResultsError",
    "RunResults",
    "check_metric",
    "read_results",
    "rows_to_csv",
    "write_atomic",
]

#: Accuracy fields a report can be based on: the final top-1, the paper's mean of the best k
#: periodic evaluations, or the final network's top-1 on the data source's out-of-distribution
#: evaluation split (``ood_top1``: only a source with one, e.g. synthetic's ``ood`` setting).
METRICS: tuple[str, ...] = ("top1", "top1_best_k", "ood_top1")

#: The out-of-distribution metric: a grid of another metric carries it beside (``Grid.ood``).
OOD_METRIC = "ood_top1"


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of :data:`METRICS`, else raise :class:`ResultsError`."""
    if metric not in METRICS:
        raise ResultsError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    return metric


@dataclass(frozen=True)
class ResultRow:
    """One cell of the plan with the result of the network that fills it.

    Attributes:
        experiment: experiment name from the config.
        split: the split the experiment uses (plugin name).
        split_seed: seed of the split (the replicate index in the paper's sense).
        treatment: ``baseB``, ``AnB+``, ... or a name the config gives.
        n: number of transferred layers (0 for base networks).
        job_id: the network that fills this cell (several cells may share one).
        status: ``ok``, ``failed`` or ``pending`` (no record yet).
        top1: final top-1 accuracy (fraction), None unless ok.
        top5: final top-5 accuracy.
        top1_best_k: mean of the best ``best_k`` evaluations (the paper's metric).
        best_k: k of ``top1_best_k``.
        train_time_s: training wall time of the job.
        config_hash: hash of the resolved config (from plan.json).
        kind: ``base`` or ``transfer`` (from the job).
        source: half the copied layers come from, or None.
        target: half the network is trained on (``A``, ``B`` or ``all``).
        protocol: transfer protocol name, or None for base networks.
        num_classes: classes of the target task.
        seed: torch seed of the job.
        error: why the job failed, when it did.
        fingerprint: id of the code that trained the network (None for 0.1 records).
        input_std: standard deviation of the network's inputs, measured on its first batch.
        ood_top1: final top-1 on the out-of-distribution evaluation split (None: not measured).
    """

    experiment: str
    split: str
    split_seed: int
    treatment: str
    n: int
    job_id: str
    status: str
    top1: float | None = None
    top5: float | None = None
    top1_best_k: float | None = None
    best_k: int | None = None
    train_time_s: float | None = None
    config_hash: str = ""
    kind: str | None = None
    source: str | None = None
    target: str | None = None
    protocol: str | None = None
    num_classes: int | None = None
    seed: int | None = None
    error: str | None = None
    fingerprint: str | None = None
    input_std: float | None = None
    ood_top1: float | None = None

    def value(self, metric: str) -> float | None:
        """The accuracy ``metric`` of this cell, or None when not ok or not measured."""
        if self.status != "ok":
            return None
        value = getattr(self, check_metric(metric))
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain mapping (column order as in :data:`LONG_COLUMNS`)."""
        return asdict(self)


#: Column order of ``results_long.*``.
LONG_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))


@dataclass(frozen=True)
class EstimateRow:
    """One estimator score: ``estimator`` on layer n of the ``source`` half's base network,
    on the ``target`` half's examples (a point of ``plan.json``'s ``estimates`` with its record).

    Attributes:
        seconds: wall time of the job (the first job on a network and layer computes the
            features, later ones in the same process reuse them).
        estimate_s, features_s: the estimator's own seconds and the features' seconds.
        input_std: standard deviation of the inputs the network saw while its features were
            computed (first batch): what the training records measure, for the input-scale check.
    """

    experiment: str
    split: str
    split_seed: int
    source: str
    target: str
    n: int
    estimator: str
    job_id: str
    status: str
    value: float | None = None
    seconds: float | None = None
    estimate_s: float | None = None
    features_s: float | None = None
    error: str | None = None
    input_std: float | None = None


@dataclass(frozen=True)
class EvaluationRow:
    """One evaluation of an evaluator (``experiments[].evaluators``) on the networks of one
    cell: ``label`` of ``experiment`` at split seed ``split_seed`` and layer ``n``.

    Attributes:
        values: the evaluator's numbers by quantity (``loss_barrier``, ...).
        job_ids: the networks it read, in the config's order.
    """

    experiment: str
    split_seed: int
    label: str
    n: int
    target: str
    evaluator: str
    values: dict[str, float]
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResults:
    """Everything a report needs from one run (or from the paper's reference data).

    Attributes:
        name: the config's name.
        config_hash: hash of the resolved config.
        num_layers: transferable layers of the architecture (L).
        layer_names: their names, layer 1 first.
        rows: one row per plan cell.
        run_dir: where it was read from (None for built-in data).
        unreadable: (file, why) of every damaged record; its cells count as pending.
        expected_input_std: the input std the architecture's initialisation expects, if known.
        code: fingerprint id -> the fingerprint (what code trained the networks).
        exchangeable: experiment -> whether its split's halves are drawn alike (random
            halves), which lets the report pool mirror-image treatments.
        records: job id -> its record, for every job with a readable one (histories included:
            the validity checks read them), read once with the rows.
        estimates: every estimator point of the plan with its score (``pending`` without one).
        ood_stale: networks whose ``ood_top1`` was measured on another OOD split than the
            plan's (another ``ood`` setting, or none): left out of every row, and said.
        evaluations: every evaluation of the run's evaluators whose networks are the plan's
            and whose checkpoints are the ones their records name.
    """

    name: str
    config_hash: str
    num_layers: int
    layer_names: tuple[str, ...]
    rows: tuple[ResultRow, ...]
    run_dir: Path | None = None
    unreadable: tuple[tuple[str, str], ...] = ()
    expected_input_std: float | None = None
    code: dict[str, dict[str, Any]] = field(default_factory=dict)
    exchangeable: dict[str, bool] = field(default_factory=dict)
    records: dict[str, JobRecord] = field(default_factory=dict, repr=False)
    estimates: tuple[EstimateRow, ...] = ()
    ood_stale: int = 0
    evaluations: tuple[EvaluationRow, ...] = ()

    def count(self, status: str) -> int:
        """Number of distinct networks (jobs) with this status."""
        return len({r.job_id for r in self.rows if r.status == status})

    def code_differences(self) -> list[str]:
        """How the code that trained the finished networks differs between them (empty: one code).

        Compares the parts of the fingerprints (transferbench, its training code, each plugin
        module, torch, timm, numpy, Python), not their ids: a base network and a transferred
        one use different plugins and so have different ids, with the same code.
        """
        jobs = {r.job_id: r.fingerprint for r in self.rows if r.status == "ok"}
        values: dict[str, set[str]] = {}
        for fp in {f for f in jobs.values() if f}:
            detail = self.code.get(fp, {})
            parts = {"transferbench": detail.get("transferbench"), "training code": detail.get("core"),
                     **{k: v for k, v in detail.get("versions", {}).items()},
                     **{f"plugin {m}": d for m, d in detail.get("plugins", {}).items()}}
            for key, value in parts.items():
                values.setdefault(key, set()).add(str(value))
        out = []
        for key, seen in values.items():
            if len(seen) > 1:
                digest = key in ("training code",) or key.startswith("plugin ")
                out.append(f"{key}: {len(seen)} versions" if digest else f"{key} {' / '.join(sorted(seen))}")
        unknown = sum(1 for f in jobs.values() if not f)
        known = len(jobs) - unknown
        if unknown and known:
            out.append(f"{unknown} networks by transferbench 0.1 (no fingerprint) beside {known} by later code")
        return out

    @property
    def experiments(self) -> list[str]:
        """Experiment names in plan order."""
        return list(dict.fromkeys(r.experiment for r in self.rows))


def _load_plan(run_dir: Path) -> PlanFile:
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    store = RunStore(run_dir)
    if not store.plan_path.is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory: it has no plan.json "
            "(run `transferbench run CONFIG` first, or check the path)"
        )
    try:
        plan = store.read_plan()
    except RunDirError as exc:
        raise RunDirError(f"{exc}; rerun `transferbench run` with the run's config.yaml and --out {run_dir} "
                          "to rebuild it (the damaged file is moved aside, the records are kept)") from None
    assert plan is not None
    return plan


def _load_record(store: RunStore, job_id: str, unreadable: list[tuple[str, str]]) -> JobRecord | None:
    try:
        return store.read_record(job_id)
    except RecordError as exc:  # damage: records are written atomically
        unreadable.append((str(store.record_path(job_id)), str(exc)))
        return None


def read_results(run_dir: Path | str) -> RunResults:
    """Read ``plan.json`` and every record of a run directory, once.

    Args:
        run_dir: the run directory.

    Returns:
        One row per plan cell (cells whose job has no record are ``pending``), one estimate
        row per estimator point, and the records themselves.

    Raises:
        RunDirError: the directory does not exist, has no ``plan.json`` or it is malformed.
    """
    run_dir = Path(run_dir)
    plan = _load_plan(run_dir)
    records: dict[str, JobRecord | None] = {}
    unreadable: list[tuple[str, str]] = []
    store = RunStore(run_dir)

    def record(job_id: str) -> JobRecord | None:
        if job_id not in records:
            records[job_id] = _load_record(store, job_id, unreadable)
        return records[job_id]

    rows = [_row(cell, record(cell.job_id), plan.jobs.get(cell.job_id), plan.config_hash, plan.ood_id)
            for cell in plan.cells]
    estimates = tuple(_estimate_row(cell, record(cell.job_id)) for cell in plan.estimates)
    kept = {jid: r for jid, r in records.items() if r is not None}
    evaluations = _evaluations(store, {c.job_id for c in plan.cells}, kept, unreadable)
    return RunResults(
        name=plan.name or run_dir.name,
        config_hash=plan.config_hash,
        num_layers=plan.layers,
        layer_names=tuple(plan.layer_names),
        rows=tuple(rows),
        run_dir=run_dir,
        unreadable=tuple(unreadable),
        expected_input_std=plan.expected_input_std,
        code={r.fingerprint_id: r.fingerprint for r in kept.values() if r.fingerprint and r.fingerprint_id},
        exchangeable=dict(plan.exchangeable),
        records=kept,
        estimates=estimates,
        ood_stale=sum(1 for r in kept.values() if r.ood_top1 is not None and r.ood_id != plan.ood_id),
        evaluations=evaluations,
    )


def _evaluations(store: RunStore, planned: set[str], records: dict[str, JobRecord],
                 unreadable: list[tuple[str, str]]) -> tuple[EvaluationRow, ...]:
    """The evaluation records of the run directory that read the plan's networks as they are
    now (the checkpoints their records name): one row per cell a record serves."""
    folder = store.evaluations_dir
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(path.read_text())
            values = {str(k): float(v) for k, v in data["values"].items()}
            name, shas, cells = str(data["evaluator"]["name"]), list(data["checkpoints"]), list(data["cells"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        for c in cells:
            ids = tuple(c.get("job_ids", ()))
            current = all(j in planned and j in records and records[j].checkpoint_sha256 == sha
                          for j, sha in zip(ids, shas)) and len(ids) == len(shas)
            if current:
                rows.append(EvaluationRow(str(c["experiment"]), int(c["split_seed"]), str(c["label"]), int(c["n"]),
                                          str(c["target"]), name, values, ids))
    return tuple(rows)


def _row(cell: CellEntry, rec: JobRecord | None, job: JobEntry | None, config_hash: str,
         ood_id: str | None = None) -> ResultRow:
    status = "pending" if rec is None else rec.status
    job = job or JobEntry()
    return ResultRow(
        experiment=cell.experiment,
        split=cell.split,
        split_seed=cell.split_seed,
        treatment=cell.treatment,
        n=cell.n,
        job_id=cell.job_id,
        status=status,
        top1=rec.value("top1") if rec else None,
        top5=rec.value("top5") if rec else None,
        top1_best_k=rec.value("top1_best_k") if rec else None,
        best_k=rec.best_k if rec else None,
        train_time_s=rec.train_time_s if rec else None,
        config_hash=config_hash,
        kind=job.kind,
        source=job.source,
        target=job.target,
        protocol=job.protocol,
        num_classes=job.num_classes if job.num_classes is not None else (rec.num_classes if rec else None),
        seed=job.seed if job.seed is not None else (rec.seed if rec else None),
        error=rec.error if rec and status == "failed" else None,
        fingerprint=rec.fingerprint_id if rec else None,
        input_std=rec.input_std if rec else None,
        ood_top1=rec.value("ood_top1") if rec and ood_id is not None and rec.ood_id == ood_id else None,
    )


def _estimate_row(cell: EstimateEntry, rec: JobRecord | None) -> EstimateRow:
    done = rec if rec is not None and rec.ok else None
    return EstimateRow(
        experiment=cell.experiment, split=cell.split, split_seed=cell.split_seed, source=cell.source,
        target=cell.target, n=cell.n, estimator=cell.estimator, job_id=cell.job_id,
        status="pending" if rec is None else rec.status,
        value=done.estimate if done else None, seconds=done.train_time_s if done else None,
        estimate_s=done.estimate_s if done else None, features_s=done.features_s if done else None,
        error=rec.error if rec is not None and not rec.ok else None,
        input_std=done.input_std if done else None,
    )


# --------------------------------------------------------------------------- writing


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new version, never half of one."""
    atomic_write_bytes(Path(path), data.encode("utf-8") if isinstance(data, str) else data)


def rows_to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (``None`` as an empty field, floats unrounded)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
