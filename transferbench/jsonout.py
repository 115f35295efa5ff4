"""The ``--json`` output of ``plan``, ``validate``, ``layers`` and ``report`` (``plugins``:
:mod:`transferbench.catalog`): plain data with a ``format`` key, ``transferbench.<command>/1``,
that changes only when a field is removed or changes meaning. The shapes are documented in
docs/json-output.md and tested in tests/test_json_output.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import ConfigError, TransferbenchError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LayerTable", "dump", "error_json", "layer_table", "layers_json", "plan_json", "report_json",
           "validate_json"]


#: The version of each command's document: it changes when a field is removed or changes
#: meaning (report/2: intervals over units, the specific layer as a difference with its
#: stability, four-valued verdicts).
_VERSIONS = {"report": 2}


def _format(command: str) -> str:
    return f"transferbench.{command}/{_VERSIONS.get(command, 1)}"


def _clean(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dump(document: dict[str, Any], out: TextIO) -> None:
    """Write one JSON document (indented, NaN as null, a newline at the end)."""
    out.write(json.dumps(_clean(document), indent=2, default=str) + "\n")


def _problems(exc: BaseException) -> list[dict[str, str]]:
    if isinstance(exc, ConfigError):
        return [{"path": p, "message": m} for p, m in exc.problems]
    return [{"path": "", "message": str(exc)}]


def error_json(command: str, exc: BaseException, exit_code: int = 2) -> dict[str, Any]:
    """What a command prints with ``--json`` when it fails, whatever the failure: a user error
    or an argument error (exit code 2), a path the system refuses (2), an interruption (130),
    a bug (1). ``exit_code`` is the code the command exits with."""
    return {"format": _format("error"), "command": command, "error": type(exc).__name__,
            "message": str(exc) or type(exc).__name__, "problems": _problems(exc), "exit_code": exit_code}


# --------------------------------------------------------------------------- validate / plan


def validate_json(config_path: str, prepared: Any = None, exc: TransferbenchError | None = None) -> dict[str, Any]:
    """``validate --json``: ``ok`` and the problems (each with its key path), or the config's size."""
    doc: dict[str, Any] = {"format": _format("validate"), "config": str(config_path), "ok": exc is None,
                           "problems": [] if exc is None else _problems(exc)}
    if prepared is not None:
        plan = prepared.plan
        doc.update(name=prepared.config.name, experiments=len(prepared.config.experiments), networks=len(plan.jobs),
                   cells=len(plan.cells), layer_names=list(plan.layer_names), config_hash=plan.config_hash,
                   notes=list(plan.notes))
    return doc


def plan_json(prepared: Any, estimate: Any = None) -> dict[str, Any]:
    """``plan --json``: every network (job) with the table cells it fills, and the compute."""
    config, plan = prepared.config, prepared.plan
    jobs = []
    for job in plan.jobs.values():
        cells = plan.cells_of(job.id)
        jobs.append({"id": job.id, **job.summary(), "classes": list(job.classes),
                     "treatments": sorted({c.treatment for c in cells}),
                     "used_by": sorted({f"{c.experiment}/{c.split_seed}" for c in cells})})
    bases = sum(1 for j in plan.jobs.values() if j.kind == "base")
    compute = None
    if estimate is not None:
        compute = {"networks": estimate.networks, "train_images": estimate.train_images,
                   "eval_images": estimate.eval_images, "forward_gflop": estimate.forward_gflop,
                   "total_flop": estimate.total_flop, "tflops": estimate.tflops, "gpu_hours": estimate.gpu_hours}
    return {
        "format": _format("plan"), "name": config.name, "config_hash": plan.config_hash,
        "layer_names": list(plan.layer_names),
        "summary": {"networks": len(plan.jobs), "base": bases, "transferred": len(plan.jobs) - bases,
                    "cells": len(plan.cells)},
        "jobs": jobs,
        "cells": [dict(c.__dict__) for c in plan.cells],
        "compute": compute,
        "frozen_cache": bool(config.performance.cache_frozen and not config.train.augment.active),
    }


# --------------------------------------------------------------------------- layers


@dataclass
class LayerTable:
    """The layers of an architecture with the parameters each owns (``transferbench layers``)."""

    architecture: str
    input_shape: tuple[int, ...]
    classes: int
    layers: list[dict[str, Any]]  # n, name, modules, parameters, share
    parameters: int
    unowned: list[str]  # parameter tensors in no layer
    shared: list[str]  # parameter tensors in several layers

    def to_json(self) -> dict[str, Any]:
        return {"format": _format("layers"), "architecture": self.architecture, "input_shape": list(self.input_shape),
                "classes": self.classes, "layers": self.layers, "parameters": self.parameters,
                "transfer_n": list(range(1, len(self.layers))), "unowned": self.unowned, "shared": self.shared}


def layer_table(name: str, model: nn.Module, layers: Sequence[Any], shape: tuple[int, ...], classes: int) -> LayerTable:
    """Count each layer's parameters in ``model`` (built on the meta device)."""
    params = dict(model.named_parameters())
    owners = {n: 0 for n in params}
    total = sum(p.numel() for p in params.values())
    rows = []
    for i, layer in enumerate(layers, 1):
        mine = [n for n in params if any(n == m or n.startswith(m + ".") for m in layer.modules)]
        for n in mine:
            owners[n] += 1
        count = sum(params[n].numel() for n in mine)
        rows.append({"n": i, "name": layer.name, "modules": list(layer.modules), "parameters": count,
                     "share": count / total if total else None})
    return LayerTable(name, tuple(shape), classes, rows, total, [n for n, c in owners.items() if c == 0],
                      [n for n, c in owners.items() if c > 1])


def layers_json(table: LayerTable) -> dict[str, Any]:
    """``layers --json``."""
    return table.to_json()


# --------------------------------------------------------------------------- report


def _diff(d: Any) -> dict[str, Any] | None:
    return None if d is None else {"value": d.value, "ci95_low": d.ci_low, "ci95_high": d.ci_high, "units": d.units,
                                   "networks": d.networks}


def _experiment_json(e: Any, layer_names: Sequence[str]) -> dict[str, Any]:
    grid = e.grid
    cells = []
    for t in grid.treatments:
        for n in grid.layers:
            s = grid.get(t, n)
            if s is not None:
                cells.append({"treatment": t, "n": n, "layer": layer_names[n - 1] if 0 < n <= len(layer_names) else "",
                              "count": s.count, "mean": s.mean, "std": s.std, "ci95_low": s.ci_low,
                              "ci95_high": s.ci_high, "values": list(s.values)})
    metrics = [{"n": m.n, "quantity": q, **d} for m in e.metrics
               for q in ("coadaptation", "specificity", "boost_base", "boost_selffer", "drop")
               if (d := _diff(getattr(m, q))) is not None]
    spec, rec = e.specific, e.recommendation
    return {
        "experiment": grid.experiment, "split": grid.split, "metric": grid.metric, "pooled": grid.pooled,
        "treatments": list(grid.treatments), "cells": cells, "metrics": metrics,
        "table1": [{"layers": f"{r.lo}-{r.hi}", "networks": r.networks, "boost_base": _diff(r.boost_base),
                    "boost_selffer": _diff(r.boost_selffer)} for r in e.table1],
        "specific_layer": None if spec is None else {
            "n": spec.n, "determined": spec.determined, "gap": _diff(spec.gap), "rule": spec.rule,
            "stability": spec.stability.fraction if spec.stability else None,
            "n_resamples": spec.stability.resamples if spec.stability else None},
        "recommendation": None if rec is None else {
            "n": rec.n, "best_n": rec.best_n, "within": list(rec.within), "rule": rec.rule,
            "determined": rec.determined, "stability": rec.stability.fraction if rec.stability else None,
            "n_resamples": rec.stability.resamples if rec.stability else None,
            "lines": rec.lines(layer_names, list(e.warned))},
        "warned": list(e.warned),
        "pending": grid.pending, "failed": grid.failed,
    }


def _interval(i: Any) -> dict[str, Any] | None:
    """A ranking Interval or a stats Difference: its value and 95% interval (None if not determined)."""
    if i is None:
        return None
    ci = [i.ci_low, i.ci_high] if i.ci_low is not None and i.ci_high is not None else None
    return {"value": i.value, "ci": ci, "units": i.units}


def _estimators_json(section: Any) -> dict[str, Any] | None:
    if section is None:
        return None
    return {
        "points": len(section.rows), "ok": sum(1 for r in section.rows if r.status == "ok"),
        "agreements": [{"experiment": a.experiment, "estimator": a.estimator, "reference": a.reference,
                        "comparison": a.comparison, "ground_truth": a.ground_truth, "spearman": a.spearman,
                        "kendall": a.kendall, "spearman_ci": list(a.spearman_ci) if a.spearman_ci else None,
                        "kendall_ci": list(a.kendall_ci) if a.kendall_ci else None,
                        "weighted_tau": _interval(a.weighted_tau), "regret": _interval(a.regret),
                        "baselines": [{"name": b.name, "spearman": _interval(b.spearman),
                                       "difference": _interval(b.difference)} for b in a.baselines],
                        "strongest_baseline": a.strongest, "beats_strongest_baseline": a.beats,
                        "ceiling": None if a.ceiling is None else {
                            "seed_to_seed": _interval(a.ceiling.seed_to_seed),
                            "within_unit": _interval(a.ceiling.within_unit),
                            "fraction": _interval(a.ceiling.fraction)},
                        "depth_spearman": a.depth_spearman, "points": a.points, "seeds": a.seeds, "units": a.units}
                       for a in section.agreements],
        "ground_truths": [{"experiment": g.experiment, "first": g.first, "second": g.second,
                           "spearman": _interval(g.spearman), "weighted_tau": _interval(g.weighted_tau),
                           "points": g.points} for g in section.ground_truths],
        "sources": [{"experiment": r.experiment, "target": r.target, "n": r.n, "ground_truth": r.ground_truth,
                     "metric": r.metric, "estimator": r.estimator, "sources": list(r.sources), "units": r.units,
                     "picks": {"right": r.picks.right, "units": r.picks.units,
                               "ci": [r.picks.ci_low, r.picks.ci_high] if r.picks.ci_low is not None else None},
                     "spearman": _interval(r.spearman), "kendall": _interval(r.kendall),
                     "weighted_tau": _interval(r.weighted_tau), "regret": _interval(r.regret),
                     "strongest_baseline": r.strongest, "beats_strongest_baseline": r.beats,
                     "ceiling": _interval(r.ceiling)} for r in getattr(section, "sources", ())],
    }


def _finding_json(f: Any) -> dict[str, Any]:
    doc = asdict(f)
    doc["size"] = f.size
    doc["stability"] = f.stability.fraction if f.stability else None
    doc["n_resamples"] = f.stability.resamples if f.stability else None
    doc["parts"] = [_finding_json(p) for p in f.parts]
    return doc


def results_json(report: Any) -> dict[str, Any]:
    """One computed report (a run's or the paper's): counts, failures, every experiment, the
    validity checks, the estimators and the scorecard."""
    results = report.results
    failures: dict[str, dict[str, Any]] = {}
    for r in results.rows:
        if r.status == "failed" and r.job_id not in failures:
            failures[r.job_id] = {"job_id": r.job_id, "experiment": r.experiment, "treatment": r.treatment,
                                  "n": r.n, "error": r.error}
    names = list(results.layer_names)
    return {
        "name": results.name, "config_hash": results.config_hash,
        "run_dir": str(results.run_dir) if results.run_dir else None, "layer_names": names,
        "networks": {"total": len({r.job_id for r in results.rows}), "ok": results.count("ok"),
                     "pending": results.count("pending"), "failed": results.count("failed")},
        "failures": list(failures.values()),
        "unreadable": [{"file": path, "error": why} for path, why in results.unreadable],
        "experiments": [_experiment_json(e, names) for e in report.experiments],
        "checks": [asdict(c) for c in report.checks],
        "estimators": _estimators_json(report.estimators),
        "scorecard": None if report.scorecard is None else [_finding_json(f) for f in report.scorecard],
        "margins": dict(report.margins),
    }


def report_json(reports: Sequence[Any], files: Sequence[Path]) -> dict[str, Any]:
    """``report --json``: the computed reports (the run's, the paper's) and the files written from them."""
    run = next((r for r in reports if r.run_dir is not None), None)
    paper = next((r for r in reports if r.run_dir is None), None) or (run.reference if run is not None else None)
    either = run if run is not None else paper
    metric = either.metric if either is not None else None
    return {"format": _format("report"), "metric": metric,
            "run": None if run is None else results_json(run),
            "paper": None if paper is None else results_json(paper),
            "files": [str(f) for f in files]}


def power_json(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """``report --power --json``: the planner's rows (see :class:`transferbench.power.PowerRow`)."""
    return [asdict(r) for r in rows]
