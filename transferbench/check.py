"""``transferbench check RUN_DIR``: verify a run directory and say what a rerun would redo.

Reads (never changes) the plan, every record and every checkpoint. With the run's own
``config.yaml`` resolvable here, it audits the run exactly as ``run`` would (same code:
:func:`transferbench.audit.audit_run`), so its answer is what a rerun does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import RunDirError, TransferbenchError
from .planfile import PlanFile
from .records import RecordError
from .store import RunStore

__all__ = ["CheckReport", "check_run_dir"]


@dataclass
class CheckReport:
    """What ``check`` found.

    Attributes:
        damaged: (file, what is wrong) for every damaged file.
        redo: reason -> number of networks a rerun trains for it.
        notes: anything else worth saying (config not resolvable here, an older format, ...).
        networks: networks in the plan; ok: how many have a usable record.
        refused: why a rerun of the run's config here is refused (what ``run`` would say), if it is.
    """

    damaged: list[tuple[str, str]] = field(default_factory=list)
    redo: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    networks: int = 0
    ok: int = 0
    refused: str | None = None


def _files_only(store: RunStore, plan: PlanFile | None, report: CheckReport) -> None:
    """Without the config: validate every record and checkpoint the plan names."""
    for job_id in plan.jobs if plan is not None else ():
        try:
            rec = store.read_record(job_id)
        except RecordError as exc:
            report.damaged.append((str(store.record_path(job_id)), f"damaged record: {exc}"))
            continue
        if rec is not None and rec.ok:
            report.ok += 1
            if store.has_checkpoint(job_id) or rec.checkpoint_sha256 is not None:  # kept: it must be there
                problem = store.checkpoint_problem(job_id, rec.checkpoint_sha256)
                if problem == "missing":
                    report.redo["checkpoint missing"] = report.redo.get("checkpoint missing", 0) + 1
                elif problem:
                    report.damaged.append((str(store.checkpoint_path(job_id)), f"checkpoint {problem}"))


def _audit(store: RunStore, report: CheckReport) -> bool:
    """Audit against the run's own config, as ``run`` would; False when it cannot be resolved."""
    from .api import prepare
    from .audit import audit_run
    from .plan import PLAN_FORMAT, merge_plan_json

    try:
        prepared = prepare(store.root / "config.yaml")
    except TransferbenchError as exc:
        why = "; ".join(line.strip() for line in str(exc).splitlines()[1:3]) or str(exc)
        report.notes.append(f"the run's config.yaml cannot be resolved here ({why}): checked the files only; "
                            "a rerun of it fails the same way until that is fixed")
        return False
    old = store.read_plan()
    if old is not None and old.format != PLAN_FORMAT:
        report.notes.append(f"written by another transferbench (plan format {old.format}): `report` reads "
                            "it; `run` cannot resume it")
        return False
    try:  # exactly what `run` refuses: another config, or a cell that now means another network
        store.check_compatible(prepared.plan.config_hash, old)
        merge_plan_json(old, prepared.plan, store.has_result)
    except RunDirError as exc:
        report.refused = str(exc)
        return False
    output = prepared.config.output
    audit = audit_run(prepared.plan, store, reuse_across_code=output.reuse_across_code, checkpoints=output.checkpoints)
    report.damaged += [(str(p), why) for p, why in audit.damaged]
    report.redo = audit.counts()
    report.ok = audit.kept
    return True


def check_run_dir(run_dir: Path) -> CheckReport:
    """Verify ``run_dir`` (see the module docstring).

    Raises:
        RunDirError: the folder does not exist or is not a run directory.
    """
    store = RunStore(run_dir)
    if not store.root.is_dir() or not store.is_run_dir():
        raise RunDirError(f"{run_dir} is not a run directory (no plan.json)")
    report = CheckReport()
    try:
        plan = store.read_plan()
    except RunDirError as exc:
        report.damaged.append((str(store.plan_path), str(exc).split(" is damaged ")[-1]))
        report.notes.append("a rerun of the run's config moves plan.json aside and rebuilds it")
        plan = None
    report.networks = len(plan.jobs) if plan is not None else 0
    if plan is None or not _audit(store, report):
        _files_only(store, plan, report)
    planned = set(plan.jobs) if plan is not None else set()
    orphans = [p.stem for p in store.records_dir.glob("*.json") if p.stem not in planned] if planned else []
    if orphans:
        report.notes.append(f"{len(orphans)} records belong to no job of the plan (kept, not reported)")
    return report
