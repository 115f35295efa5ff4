"""The power planner: how many split seeds a decisive answer needs, and what they cost.

``transferbench report RUN_DIR --power`` takes a finished run as a pilot: for each of the
paper's findings, the scatter of its contrast across the run's units (on the shared scale,
:mod:`transferbench.findings`) and the paper's effect give the units a 95% interval needs to
exclude 0 with 80% power when the truth is the paper's effect (for the control: to lie within
its margin when the truth is 0). Units become split seeds by the run's own ratio (with random
halves one split seed gives one unit per direction a contrast uses), and split seeds become
networks, CPU-hours at the rate this run measured, and GPU-hours from ``plan``'s model.

A pilot's scatter is itself an estimate from few units: the planned numbers are a guide, and
the planner says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TransferbenchError
from .findings import FindingResult
from .runreport import RunReport

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["PowerRow", "gpu_hours_per_network", "plan_power"]


@dataclass(frozen=True)
class PowerRow:
    """What a decisive answer to one finding (or part) would take.

    Attributes:
        finding: the finding's name (``co-adaptation: dip`` for a part).
        experiments: the experiments it is judged on.
        kind: ``effect`` or ``equivalence`` (the control).
        units_now: the units the run has for it (for two sets of units, the smaller).
        sd: the scatter of its per-unit contrast (shared scale), None when not determined.
        target: the paper's effect (or the control's margin) on the shared scale.
        units: units (per set, for a comparison of two experiments) for 80% power.
        seeds: split seeds that give those units at this run's ratio.
        networks: networks those split seeds train (every network of the experiments).
        cpu_hours: at this run's measured seconds per network (wall time, this machine).
        gpu_hours: from ``plan``'s compute model (None when the run's config does not resolve here).
        verdict: the run's verdict now.
        scale: what ``sd`` and ``target`` are fractions of (the finding's scale: ``headroom``, or
            e.g. ``the training run`` for a convergence speed).
    """

    finding: str
    experiments: tuple[str, ...]
    kind: str
    units_now: int
    sd: float | None
    target: float | None
    units: int | None
    seeds: int | None
    networks: int | None
    cpu_hours: float | None
    gpu_hours: float | None
    verdict: str
    scale: str = "headroom"


def _per_seed(report: RunReport, experiment: str) -> tuple[float, float]:
    """(networks per split seed, mean seconds per network) of one experiment."""
    rows = [r for r in report.results.rows if r.experiment == experiment]
    jobs = {r.job_id: r.train_time_s for r in rows}
    seeds = {r.split_seed for r in rows} or {0}
    times = [t for t in jobs.values() if t]
    return len(jobs) / len(seeds), (math.fsum(times) / len(times) if times else 0.0)


def _seeds_now(report: RunReport, experiments: Sequence[str]) -> int:
    return min(len({r.split_seed for r in report.results.rows if r.experiment == e}) or 1 for e in experiments)


def _row(f: FindingResult, name: str, report: RunReport, gpu: dict[str, float] | None) -> PowerRow:
    experiments = tuple(e for e in f.experiment.split(" vs ") if e)
    est = f.estimate
    units_now = min(f.sizes) if f.sizes else 0
    target = f.margin if f.equivalence is not None else f.effect
    seeds = networks = None
    cpu = gpu_h = None
    if f.units_needed is not None and experiments and units_now:
        per_seed = units_now / _seeds_now(report, experiments)
        seeds = math.ceil(f.units_needed / per_seed)
        costs = [_per_seed(report, e) for e in experiments]
        networks = round(seeds * sum(n for n, _ in costs))
        cpu = seeds * sum(n * s for n, s in costs) / 3600
        if gpu is not None and all(e in gpu for e in experiments):
            gpu_h = seeds * sum(n * gpu[e] for (n, _), e in zip(costs, experiments))
    return PowerRow(name, experiments, "equivalence" if f.equivalence is not None else "effect", units_now,
                    est.sd if est is not None else None, target, f.units_needed, seeds, networks, cpu, gpu_h,
                    f.verdict, f.scale)


def plan_power(report: RunReport, gpu: dict[str, float] | None = None) -> list[PowerRow]:
    """One row per finding of the report's scorecard (per part, for a compound one).

    Args:
        report: a report computed with ``compare="paper"`` (the paper's effects come with it).
        gpu: experiment -> GPU-hours per network (:func:`gpu_hours_per_network`).

    Raises:
        TransferbenchError: the report has no scorecard.
    """
    if report.scorecard is None:
        raise TransferbenchError("the power planner needs the paper's effects: build the report with "
                                 "compare='paper'")
    rows = []
    for f in report.scorecard:
        if f.parts:
            rows += [_row(p, f"{f.name}: {p.name}", report, gpu) for p in f.parts]
        else:
            rows.append(_row(f, f.name, report, gpu))
    return rows


def gpu_hours_per_network(run_dir: Path | str, tflops: float = 20.0) -> dict[str, float] | None:
    """Per experiment, the GPU-hours of one of its networks by ``plan``'s compute model (at an
    effective ``tflops``), from the run's own ``config.yaml``; None when it does not resolve
    here (a plugin or the data missing)."""
    from .api import prepare
    from .compute import estimate_compute

    try:
        prepared = prepare(Path(run_dir) / "config.yaml")
        est = estimate_compute(prepared.config, prepared.components, prepared.plan, tflops)
    except (TransferbenchError, OSError):
        return None
    if est is None or not est.networks:
        return None
    per_network = est.gpu_hours / est.networks
    return {exp.name: per_network for exp in prepared.config.experiments}


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def print_power(console: Console, rows: Sequence[PowerRow]) -> None:
    """The planner's table, one row per finding (or part)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for head in ("finding", "now", "units", "seeds", "networks", "CPU-h", "GPU-h", "sd", "target"):
        table.add_column(head, justify="left" if head == "finding" else "right")
    other_scales = sorted({r.scale for r in rows if r.scale != "headroom"})
    for r in rows:
        # a finding on another scale (convergence speed: % of the training run) is marked, so its
        # sd is never read as % of headroom
        mark = "" if r.scale == "headroom" else "*" * (other_scales.index(r.scale) + 1)
        target = "" if r.target is None else (f"±{100 * r.target:.1f}%" if r.kind == "equivalence"
                                               else f"{100 * r.target:+.1f}%") + mark
        table.add_row(r.finding, f"{r.units_now} ({r.verdict})", _num(r.units, "d"), _num(r.seeds, "d"),
                      _num(r.networks, ",d"), _num(r.cpu_hours, ",.1f"), _num(r.gpu_hours, ",.2f"),
                      "" if r.sd is None else f"{100 * r.sd:.1f}%{mark}", target)
    console.print(Text("Power planner: split seeds for a decisive verdict", style="bold"))
    console.print(table)
    console.print(Text(
        "now: units the run has (a split seed and a direction; for a comparison of two experiments, per side) and "
        "the verdict they give; units: what a 95% interval needs to exclude 0 with 80% power if the truth is the "
        "paper's effect (target, % of headroom; the control: to lie within its margin if the truth is 0), per side "
        "for a comparison; seeds: split seeds giving those units at this run's ratio; networks: every network of "
        "the experiments at that many seeds; CPU-h: at this run's measured seconds per network on this machine; "
        "GPU-h: plan's model at 20 TFLOP/s; sd: the scatter of the per-unit contrast, estimated from this run "
        "(a pilot: few units make it rough). Blank: not determined (fewer than 3 units), or a finding judged on "
        "its direction (no effect to power for)."
        + "".join(f" {'*' * (i + 1)}: % of {scale}, not of headroom." for i, scale in enumerate(other_scales)),
        style="dim"))
    console.print()
