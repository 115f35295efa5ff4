"""The files of a report, written from a computed :class:`~transferbench.runreport.RunReport`.

:func:`write_report` is the only function that writes a report's files: the tables
(``results_<metric>.csv``, ``results_summary_<metric>.csv``, ``results_metrics_<metric>.csv``),
the tidy export (``results_long.*``), the estimators' tables, the validity checks, the
scorecard and, when asked, the figures. Nothing here computes a statistic: every number
comes from the report. Each file is written atomically; the metric is in every name of a
metric's table, so reports of two metrics never overwrite each other. docs/results.md
describes every column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .analysis import CANONICAL, Difference, Grid
from .estimator_report import write_estimator_figure
from .findings import FindingResult
from .plots import write_plots
from .ranking import Interval
from .results import LONG_COLUMNS, EstimateRow, RunResults, rows_to_csv, write_atomic
from .runreport import EstimatorSection, ExperimentReport, RunReport
from .scorecard import PAPER_ALIAS
from .validity import CheckResult

__all__ = [
    "COST_COLUMNS",
    "ESTIMATE_COLUMNS",
    "SCORECARD_COLUMNS",
    "SOURCE_RANKING_COLUMNS",
    "VALIDATION_COLUMNS",
    "write_long",
    "write_report",
]

#: Columns of ``results_estimators.csv``.
ESTIMATE_COLUMNS: tuple[str, ...] = ("experiment", "split_seed", "source", "target", "n", "estimator", "value",
                                     "seconds", "split", "estimate_s", "features_s", "status", "job_id")

#: Columns of ``results_estimator_validation.csv``.
VALIDATION_COLUMNS: tuple[str, ...] = (
    "experiment", "estimator", "reference", "comparison", "spearman", "spearman_low", "spearman_high",
    "kendall", "kendall_low", "kendall_high", "points", "seeds", "per_group_spearman", "per_group_low",
    "per_group_high", "depth_spearman", "depth_kendall", "metric", "ground_truth", "units", "weighted_tau",
    "weighted_tau_low", "weighted_tau_high", "regret", "regret_low", "regret_high", "strongest_baseline",
    "strongest_baseline_spearman", "difference_low", "difference_high", "beats_strongest_baseline",
    "ceiling", "ceiling_low", "ceiling_high", "within_unit_spearman", "fraction_of_ceiling", "fraction_low",
    "fraction_high",
)

#: Columns of ``results_source_ranking.csv``.
SOURCE_RANKING_COLUMNS: tuple[str, ...] = (
    "experiment", "target", "n", "ground_truth", "metric", "estimator", "sources", "units", "picks_right",
    "picks_units", "picks_low", "picks_high", "spearman", "spearman_low", "spearman_high", "kendall",
    "weighted_tau", "weighted_tau_low", "weighted_tau_high", "regret", "regret_low", "regret_high",
    "strongest_baseline", "strongest_picks_right", "strongest_spearman", "difference_low", "difference_high",
    "beats_strongest_baseline", "ceiling", "ceiling_low", "ceiling_high",
)

#: Columns of ``results_estimator_cost.csv``.
COST_COLUMNS: tuple[str, ...] = ("estimator", "jobs", "seconds", "retraining_seconds", "finetune_seconds",
                                 "transfer_networks", "retraining_per_estimator_second")


# --------------------------------------------------------------------------- tables


def _results_csv(results: RunResults, metric: str) -> str:
    """``results_<metric>.csv``: one row per experiment, split seed and n; one column per treatment
    (not pooled), holding that seed's network's accuracy."""
    names = list(dict.fromkeys(r.treatment for r in results.rows))
    names = [t for t in CANONICAL if t in names] + [t for t in names if t not in CANONICAL]
    cells: dict[tuple[str, str, int, int], dict[str, list[float]]] = {}
    for r in results.rows:
        bucket = cells.setdefault((r.experiment, r.split, r.split_seed, r.n), {})
        value = r.value(metric)
        if value is not None:
            bucket.setdefault(r.treatment, []).append(value)
    rows = []
    for (exp, split, seed, n), bucket in cells.items():
        values = [sum(bucket[t]) / len(bucket[t]) if t in bucket else None for t in names]
        rows.append([exp, split, seed, n, metric, *values])
    order = {name: i for i, name in enumerate(results.experiments)}
    rows.sort(key=lambda row: (order[str(row[0])], int(row[2] or 0), int(row[3] or 0)))
    return rows_to_csv(["experiment", "split", "split_seed", "n", "metric", *names], rows)


def _summary_csv(grids: Sequence[Grid]) -> str:
    rows = []
    for g in grids:
        for t in g.treatments:
            for n in g.layers:
                s = g.get(t, n)
                if s is not None:
                    rows.append([g.experiment, t, n, g.metric, g.pooled, s.count, s.mean, s.std, s.ci_low, s.ci_high])
    head = ["experiment", "treatment", "n", "metric", "pooled", "count", "mean", "std", "ci95_low", "ci95_high"]
    return rows_to_csv(head, rows)


def _metrics_csv(experiments: Sequence[ExperimentReport]) -> str:
    rows: list[list[object]] = []

    def add(g: Grid, quantity: str, layers: str, est: Difference | float | None) -> None:
        if isinstance(est, Difference):
            rows.append([g.experiment, g.metric, quantity, layers, est.value, est.ci_low, est.ci_high])
        elif est is not None:
            rows.append([g.experiment, g.metric, quantity, layers, est, None, None])

    for e in experiments:
        g = e.grid
        for m in e.metrics:
            for q in ("coadaptation", "specificity", "boost_base", "boost_selffer", "drop",
                      "relative_drop", "generality"):
                add(g, q, str(m.n), getattr(m, q))
        for r in e.table1:
            add(g, "table1_boost_base", f"{r.lo}-{r.hi}", r.boost_base)
            add(g, "table1_boost_selffer", f"{r.lo}-{r.hi}", r.boost_selffer)
        for name, series in e.drops.items():
            for n, (d, rel) in series.items():
                add(g, f"drop:{name}", str(n), d)
                add(g, f"relative_drop:{name}", str(n), rel)
        if e.specific is not None and e.specific.n is not None:
            add(g, "specific_layer", str(e.specific.n), float(e.specific.n))
    return rows_to_csv(["experiment", "metric", "quantity", "layers", "value", "ci95_low", "ci95_high"], rows)


def _write(out_dir: Path, files: dict[str, str | bytes]) -> list[Path]:
    for name, data in files.items():
        write_atomic(out_dir / name, data)
    return [out_dir / name for name in files]


def write_long(results: RunResults, out_dir: Path) -> list[Path]:
    """``results_long.csv``, ``results_long.jsonl`` and, when pyarrow is importable,
    ``results_long.parquet``: one row per plan cell (see docs/results.md)."""
    dicts = [r.to_dict() for r in results.rows]
    files: dict[str, str | bytes] = {
        "results_long.csv": rows_to_csv(LONG_COLUMNS, ([d[c] for c in LONG_COLUMNS] for d in dicts)),
        "results_long.jsonl": "".join(json.dumps(d, sort_keys=False) + "\n" for d in dicts),
    }
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return _write(out_dir, files)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(dicts, schema=_arrow_schema(pa)), buf)
    files["results_long.parquet"] = buf.getvalue().to_pybytes()
    return _write(out_dir, files)


def _arrow_schema(pa: Any) -> Any:
    # An explicit schema keeps column types stable when every value of a column is None
    # (a run with all jobs pending would otherwise give null-typed columns).
    types = {
        "split_seed": pa.int64(), "n": pa.int64(), "best_k": pa.int64(), "num_classes": pa.int64(),
        "seed": pa.int64(), "top1": pa.float64(), "top5": pa.float64(), "top1_best_k": pa.float64(),
        "train_time_s": pa.float64(), "input_std": pa.float64(), "ood_top1": pa.float64(),
    }
    return pa.schema([(c, types.get(c, pa.string())) for c in LONG_COLUMNS])


# --------------------------------------------------------------------------- estimators, checks, scorecard


def _estimates_csv(rows: Iterable[EstimateRow]) -> str:
    return rows_to_csv(ESTIMATE_COLUMNS, ([getattr(e, c) for c in ESTIMATE_COLUMNS] for e in rows))


def _three(i: Interval | Difference | None) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of an interval, Nones where there is none."""
    return (None, None, None) if i is None else (i.value, i.ci_low, i.ci_high)


def _validation_csv(section: EstimatorSection, metric: str) -> str:
    out = []
    for a in section.agreements:
        sl, sh = a.spearman_ci or (None, None)
        kl, kh = a.kendall_ci or (None, None)
        g = a.per_group
        gl = None if g is None or g.ci_low is None else max(-1.0, g.ci_low)  # a correlation stays in [-1, 1]
        gh = None if g is None or g.ci_high is None else min(1.0, g.ci_high)
        best = next((b for b in a.baselines if b.name == a.strongest), None)
        c = a.ceiling
        out.append([a.experiment, a.estimator, a.reference, a.comparison, a.spearman, sl, sh, a.kendall, kl, kh,
                    a.points, a.seeds, g.mean if g else None, gl, gh, a.depth_spearman, a.depth_kendall, metric,
                    a.ground_truth, a.units, *_three(a.weighted_tau), *_three(a.regret), a.strongest,
                    best.spearman.value if best and best.spearman else None,
                    *_three(best.difference if best else None)[1:], a.beats,
                    *_three(c.seed_to_seed if c else None), (c.within_unit.value if c and c.within_unit else None),
                    *_three(c.fraction if c else None)])
    return rows_to_csv(VALIDATION_COLUMNS, out)


def _source_csv(section: EstimatorSection) -> str:
    out = []
    for r in section.sources:
        best = next((b for b in r.baselines if b.name == r.strongest), None)
        out.append([r.experiment, r.target, r.n, r.ground_truth, r.metric, r.estimator, " ".join(r.sources), r.units,
                    r.picks.right, r.picks.units, r.picks.ci_low, r.picks.ci_high, *_three(r.spearman),
                    r.kendall.value if r.kendall else None, *_three(r.weighted_tau), *_three(r.regret), r.strongest,
                    best.picks.right if best and best.picks else None,
                    best.spearman.value if best and best.spearman else None,
                    *_three(best.difference if best else None)[1:], r.beats, *_three(r.ceiling)])
    return rows_to_csv(SOURCE_RANKING_COLUMNS, out)


def _cost_csv(section: EstimatorSection) -> str:
    cost = section.cost
    rows = [[name, cost.estimator_jobs[name], s, cost.retraining_s, cost.finetune_s, cost.transfer_networks,
             cost.ratio(name)] for name, s in cost.estimator_s.items()]
    rows.append(["all", sum(cost.estimator_jobs.values()), cost.total_estimator_s, cost.retraining_s,
                 cost.finetune_s, cost.transfer_networks, cost.ratio()])
    return rows_to_csv(COST_COLUMNS, rows)


def _checks_files(checks: Sequence[CheckResult], metric: str) -> dict[str, str | bytes]:
    fields = ("check", "status", "experiment", "message", "remedy")
    return {f"validity_checks_{metric}.csv": rows_to_csv(fields, ([getattr(r, f) for f in fields] for r in checks)),
            f"validity_checks_{metric}.json": json.dumps([asdict(r) for r in checks], indent=2) + "\n"}


#: Columns of ``scorecard_<metric>.csv`` (estimates a fraction of the row's ``scale``: headroom, the
#: distance from chance of the row's ``headroom_of`` network, or e.g. the training run).
SCORECARD_COLUMNS: tuple[str, ...] = (
    "paper", "name", "part_of", "verdict", "experiment", "run", "estimate", "ci95_low", "ci95_high", "units",
    "networks", "points", "points_ci95_low", "points_ci95_high", "paper_effect", "paper_effect_points",
    "equivalence", "margin", "units_needed", "size", "stability", "resamples", "caveats", "invalidated_by", "claim",
    "source", "scale", "headroom_of",
)


def _scorecard_rows(findings: Sequence[FindingResult], part_of: str = "") -> list[list[object]]:
    rows: list[list[object]] = []
    for f in findings:
        e, pt = f.estimate, f.points
        rows.append([f.paper, f.name, part_of, f.verdict, f.experiment, f.run, e and e.value, e and e.ci_low,
                     e and e.ci_high, e and e.units, e and e.networks, pt and pt.value, pt and pt.ci_low,
                     pt and pt.ci_high, f.effect, f.effect_points, f.equivalence, f.margin, f.units_needed, f.size,
                     f.stability.fraction if f.stability else None, f.stability.resamples if f.stability else None,
                     "; ".join(f.caveats), "; ".join(f.invalidated), f.claim, f.source, f.scale,
                     f.headroom_of or ("the base network" if f.scale == "headroom" else "")])
        rows += _scorecard_rows(f.parts, f.name)
    return rows


def _scorecard_files(findings: Sequence[FindingResult], metric: str) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        f"scorecard_{metric}.csv": rows_to_csv(SCORECARD_COLUMNS, _scorecard_rows(findings)),
        f"scorecard_{metric}.json": json.dumps([asdict(f) for f in findings], indent=2) + "\n"}
    followups = [f for f in findings if f.paper != PAPER_ALIAS]
    if followups:  # the papers after Yosinski et al.: their rows, and the verdicts counted per paper
        counts: dict[str, dict[str, int]] = {}
        for f in followups:
            counts.setdefault(f.paper, {}).setdefault(f.verdict, 0)
            counts[f.paper][f.verdict] += 1
        files[f"scorecard_followups_{metric}.csv"] = rows_to_csv(SCORECARD_COLUMNS, _scorecard_rows(followups))
        files[f"scorecard_followups_{metric}.json"] = json.dumps(
            {"counts": counts, "findings": [asdict(f) for f in followups]}, indent=2) + "\n"
    return files


# --------------------------------------------------------------------------- entry point


def write_report(report: RunReport, out_dir: Path, *, plots: bool = False, plot_dir: Path | None = None) -> list[Path]:
    """Write every file of ``report`` into ``out_dir`` (figures into ``plot_dir``, default the
    same folder, when ``plots``); return the paths written, in order.

    A run's report writes its tables, the tidy export, the validity checks and, where it has
    them, the estimators' tables and the scorecard; the paper's own report writes its tables.
    """
    out_dir = Path(out_dir)
    metric = report.metric
    files: dict[str, str | bytes] = {
        f"results_{metric}.csv": _results_csv(report.results, metric),
        f"results_summary_{metric}.csv": _summary_csv(report.grids),
        f"results_metrics_{metric}.csv": _metrics_csv(report.experiments),
    }
    if report.estimators is not None:
        files.update({"results_estimators.csv": _estimates_csv(report.estimators.rows),
                      "results_estimator_validation.csv": _validation_csv(report.estimators, metric),
                      "results_estimator_cost.csv": _cost_csv(report.estimators)})
        if report.estimators.sources:
            files["results_source_ranking.csv"] = _source_csv(report.estimators)
    if report.run_dir is not None:
        files.update(_checks_files(report.checks, metric))
    if report.scorecard is not None:
        files.update(_scorecard_files(report.scorecard, metric))
    written = _write(out_dir, files)
    if report.run_dir is not None:
        written += write_long(report.results, out_dir)
    if plots:
        target = Path(plot_dir) if plot_dir is not None else out_dir
        written += write_plots(report.grids, target, report.half_names)
        if report.estimators is not None:
            written += write_estimator_figure(report.results, report.estimators.rows, metric, target)
    return written
