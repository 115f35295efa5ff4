"""Run a plan: skip finished jobs, train the rest through the executor, record everything.

:func:`run_plan` is what ``transferbench run`` and :func:`transferbench.run` call once the
config is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from .audit import Audit, audit_run
from .components import Components
from .config import Config, dump_config
from .devices import resolve_device
from .errors import ConfigError, DataError, RunDirError
from .evaluation import EvaluationsDone, run_evaluations
from .observing import observing, run_info
from .plan import PLAN_FORMAT, Plan, merge_plan_json
from .planfile import PlanFile
from .preflight import check_data, environment_problems
from .progress import ProgressDisplay
from .report_files import write_report
from .runner import TrainingRunner
from .runreport import RunReport, read_report
from .store import JobCache, RunStore
from .taskdata import bad_data_error

__all__ = ["RunSummary", "run_plan"]


@dataclass
class RunSummary:
    """What a run did, and its report (computed once, its files written)."""

    run_dir: Path
    total: int
    skipped: int
    trained: int
    failed: int
    report: RunReport | None = None
    files: tuple[Path, ...] = ()


def _previous_plan(store: RunStore, plan: Plan, console: Console) -> PlanFile | None:
    """The plan.json already in the run directory (a damaged one is moved aside and rebuilt)."""
    try:
        old = store.read_plan()
    except RunDirError as exc:
        where = store.quarantine(store.plan_path)
        console.print(f"warning: {exc}; moved to {where} and rebuilt from the config "
                      "(experiments only it named are no longer listed)")
        return None
    if old is not None and old.format != PLAN_FORMAT:
        raise RunDirError(
            f"{store.root} was written by another version of transferbench (plan format "
            f"{old.format}, this one writes {PLAN_FORMAT}); its networks cannot "
            "be resumed by this version, but `transferbench report` still reads them: use another --out"
        )
    store.check_compatible(plan.config_hash, old)
    return old


def _say_audit(console: Console, audit: Audit, run_dir: Path, total: int, kept_experiments: list[str]) -> None:
    for path, why in audit.damaged:
        console.print(f"warning: {path}: {why}; moved under {run_dir / 'damaged'} and recomputed")
    if kept_experiments:
        console.print(f"keeping the cells of experiments no longer in the config ({', '.join(kept_experiments)}): "
                      "they stay in the report; their unfinished networks stay pending")
    if audit.kept:
        console.print(f"resuming {run_dir}: {audit.kept} of {total} networks already trained")
    if audit.reused:
        console.print(f"reusing {audit.reused} networks from the shared cache")
    lost = sum(1 for why in audit.reasons.values() if why.startswith("checkpoint missing"))
    if lost:
        console.print(f"retraining {lost} networks whose kept checkpoint is missing (output.checkpoints keeps it; "
                      "training is deterministic, so their dependents are kept when the weights come out the same)")
    other = sum(1 for why in audit.reasons.values() if why.startswith("trained by other code"))
    if other:
        console.print(f"retraining {other} networks trained by other code (records kept under superseded/; "
                      "set output.reuse_across_code: true to keep using them)")


def _say_evaluations(console: Console, done: EvaluationsDone) -> None:
    console.print(f"evaluations: {done.computed} computed, {done.reused} already done, {len(done.waiting)} waiting "
                  f"for their networks, {len(done.failed)} failed")
    for why in done.failed + done.waiting[:5]:
        console.print(f"  {why}")


def run_plan(
    config: Config, components: Components, plan: Plan, run_dir: Path, console: Console
) -> RunSummary:
    """Train every unfinished job of ``plan`` into ``run_dir`` (resuming what is there)."""
    problems = environment_problems(config, components, run_dir)
    if problems:
        raise ConfigError(problems)
    check_data(config, components)
    store = RunStore(run_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    with store.lock():
        old = _previous_plan(store, plan, console)
        plan_json, kept_experiments = merge_plan_json(old, plan, store.has_result)
        store.write_start(dump_config(config), plan_json)
        shared = JobCache(Path(config.output.shared_cache)) if config.output.shared_cache else None
        audit = audit_run(plan, store, reuse_across_code=config.output.reuse_across_code, fix=True, shared=shared,
                          checkpoints=config.output.checkpoints)
        _say_audit(console, audit, run_dir, len(plan.jobs), kept_experiments)
        todo = audit.todo
        skipped = len(plan.jobs) - len(todo)
        console.print(f"training {len(todo)} networks on {device} into {run_dir}")
        runner = TrainingRunner(config, components, plan, run_dir)
        watching = [(f"observers.{i}", o) for i, o in enumerate(components.observers)]
        info = run_info(config.name, config.model_dump(mode="json"), plan, run_dir, todo)
        try:
            with ProgressDisplay(console, plan, total=len(plan.jobs), done=skipped) as reporter, \
                    observing(reporter, watching, info) as events:
                components.executor.run(todo, runner, events)
                if plan.evaluations:
                    _say_evaluations(console, run_evaluations(config, components, plan, run_dir, device))
                report = read_report(run_dir)
                files = write_report(report, run_dir)
                events.report_written(report, files)
        except DataError as exc:
            raise bad_data_error(components.data, exc, console, config.loader.workers) from None
        failed = sum(1 for j in plan.jobs.values() if runner.finished(j) is None)
    return RunSummary(run_dir, len(plan.jobs), skipped, len(todo), failed, report, tuple(files))
