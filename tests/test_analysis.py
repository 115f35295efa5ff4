"""Metrics on a hand-made run directory with known answers, and on the paper's own data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from transferbench.analysis import (
    Stat,
    build_grids,
    diff,
    drops,
    layer_metrics,
    specific_layer,
    t_quantile,
    table1,
    table1_ranges,
)
from transferbench.errors import ResultsError, RunDirError, TransferbenchError
from transferbench.paperdata import load_paper, reduced_data
from transferbench.report_files import write_long
from transferbench.results import LONG_COLUMNS
from transferbench.results import read_results as load_run

# Known accuracies (top1) for split seeds 0 and 1; layers n = 1..3 of a 4-layer network.
KNOWN: dict[tuple[str, int], tuple[float, float]] = {
    ("baseA", 0): (0.78, 0.80),
    ("baseB", 0): (0.80, 0.82),
    ("BnB", 1): (0.81, 0.81), ("BnB", 2): (0.78, 0.80), ("BnB", 3): (0.80, 0.80),
    ("AnB", 1): (0.80, 0.82), ("AnB", 2): (0.77, 0.79), ("AnB", 3): (0.70, 0.72),
    ("BnB+", 1): (0.81, 0.81), ("BnB+", 2): (0.81, 0.83), ("BnB+", 3): (0.82, 0.82),
    ("AnB+", 1): (0.83, 0.83), ("AnB+", 2): (0.83, 0.85), ("AnB+", 3): (0.84, 0.84),
}


def _job(treatment: str, n: int, seed: int, num_classes: dict[str, int]) -> dict:
    if treatment.startswith("base"):
        target, source, kind, protocol = treatment[4:], None, "base", None
    else:
        source, target = treatment[0], treatment[2]
        kind, protocol = "transfer", "finetune" if treatment.endswith("+") else "frozen"
    return {"kind": kind, "target": target, "source": source, "n": n, "protocol": protocol,
            "depends_on": None, "num_classes": num_classes[target], "seed": 1000 + seed}


def write_run(root: Path, *, seeds: tuple[int, ...] = (0, 1), extra: bool = True,
              sizes: tuple[int, int] = (5, 5), duplicate: bool = False) -> Path:
    """A run directory in the documented format (docs/run-directory.md) with :data:`KNOWN`.

    With ``extra``: one pending cell (BnA n=1, seed 0: no record) and one failed job
    (AnA n=1, seed 1). ``top1_best_k`` is always ``top1 + 0.01``.
    """
    num_classes = {"A": sizes[0], "B": sizes[1]}
    jobs, cells, records = {}, [], {}
    entries = [(t, n, s, KNOWN[(t, n)][i]) for (t, n) in KNOWN for i, s in enumerate((0, 1)) if s in seeds]
    if extra:
        entries += [("BnA", 1, 0, None), ("AnA", 1, 1, "failed")]
    for treatment, n, seed, value in entries:
        job_id = f"{treatment.replace('+', 'p')}-{n}-s{seed}"
        jobs[job_id] = _job(treatment, n, seed, num_classes)
        cells.append({"experiment": "main", "split": "random", "split_seed": seed,
                      "treatment": treatment, "n": n, "job_id": job_id})
        if value == "failed":
            records[job_id] = {"job_id": job_id, "status": "failed", "error": "NaN loss", "top1": None}
        elif value is not None:
            records[job_id] = {"job_id": job_id, "status": "ok", "error": None, "top1": value,
                               "top5": min(1.0, value + 0.1), "top1_best_k": value + 0.01, "best_k": 10,
                               "history": [], "train_time_s": 1.5, "steps": 10, "num_classes": 5,
                               "seed": 1000 + seed}
    if duplicate:  # the same network named twice in one cell (must count once)
        cells.append(dict(cells[0]))
    plan = {"name": "fake", "config_hash": "abc123", "num_layers": 4,
            "layer_names": ["l1", "l2", "l3", "l4"], "jobs": jobs, "cells": cells}
    (root / "records").mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps(plan))
    for job_id, rec in records.items():
        (root / "records" / f"{job_id}.json").write_text(json.dumps(rec))
    return root


def _grid(run_dir: Path, metric: str = "top1", pool: bool | None = False):
    (grid,) = build_grids(load_run(run_dir), metric, pool)
    return grid


# --------------------------------------------------------------------------- loading


def test_load_run_marks_pending_and_failed(tmp_path: Path) -> None:
    results = load_run(write_run(tmp_path))
    assert len(results.rows) == 2 * len(KNOWN) + 2
    assert results.count("ok") == 2 * len(KNOWN)
    assert results.count("pending") == 1 and results.count("failed") == 1
    failed = next(r for r in results.rows if r.status == "failed")
    assert failed.error == "NaN loss" and failed.value("top1") is None
    assert {r.config_hash for r in results.rows} == {"abc123"}
    grid = _grid(tmp_path)
    assert (grid.pending, grid.failed) == (1, 1)
    assert "BnA" not in {t for t, _ in grid.cells}  # pending: no statistics


def test_missing_run_dir_or_plan_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not found"):
        load_run(tmp_path / "nope")
    with pytest.raises(TransferbenchError, match="no plan.json"):
        load_run(tmp_path)
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(RunDirError, match="plan.json is damaged"):
        load_run(tmp_path)


def test_unknown_metric_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="top1_best_k"):
        build_grids(load_run(write_run(tmp_path)), "top3")


# --------------------------------------------------------------------------- statistics


def test_t_quantile_matches_the_t_distribution() -> None:
    def coverage(df: float, t: float, steps: int = 20000) -> float:
        # Integrate Student's t density over [-t, t] (midpoint rule).
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        h = 2 * t / steps
        return sum(c * (1 + ((-t + (i + 0.5) * h) ** 2) / df) ** (-(df + 1) / 2) for i in range(steps)) * h

    for df in (1, 2, 3, 7, 30, 45, 200):
        assert coverage(df, t_quantile(df)) == pytest.approx(0.95, abs=5e-4)
    assert t_quantile(1e9) == pytest.approx(1.96, abs=1e-3)


def test_stat_mean_std_and_interval(tmp_path: Path) -> None:
    base = _grid(write_run(tmp_path)).get("baseB", 0)
    assert base.values == (0.80, 0.82)
    assert base.mean == pytest.approx(0.81)
    assert base.std == pytest.approx(math.sqrt(2) * 0.01)
    # two networks: a std, but no interval (t = 12.7 would make it meaningless)
    assert base.ci_low is None and base.ci_high is None
    three = Stat.of([0.80, 0.82, 0.84])
    # t(0.975, 2) * s / sqrt(3) = 4.303 * 0.02 / sqrt(3)
    assert (three.ci_low, three.ci_high) == pytest.approx((0.82 - 4.303 * 0.02 / math.sqrt(3),
                                                           0.82 + 4.303 * 0.02 / math.sqrt(3)))
    single = Stat.of([0.5])
    assert single.std is None and single.ci_low is None


def test_welch_difference() -> None:
    a, b = Stat.of([1.0, 2.0, 3.0]), Stat.of([0.0, 0.0, 1.0, 1.0])
    d = diff(a, b)
    va, vb = 1.0 / 3, (1 / 3) / 4
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    assert d.value == pytest.approx(1.5)
    assert d.half_width == pytest.approx(t_quantile(df) * math.sqrt(va + vb))
    assert diff(a, Stat.of([1.0])).half_width is None  # noise of one network unknown
    assert diff(a, Stat.of([1.0, 2.0])).half_width is None  # two networks: no interval


# --------------------------------------------------------------------------- metrics


def test_layer_metrics_known_answers(tmp_path: Path) -> None:
    metrics = {m.n: m for m in layer_metrics(_grid(write_run(tmp_path)))}
    assert sorted(metrics) == [1, 2, 3]
    expect = {  # n: (co-adaptation, specificity, AnB+ - baseB, AnB+ - BnB+)
        1: (0.00, 0.00, 0.02, 0.02),
        2: (0.02, 0.01, 0.03, 0.02),
        3: (0.01, 0.09, 0.03, 0.02),
    }
    for n, (coad, spec, boost, boost_sf) in expect.items():
        m = metrics[n]
        assert m.coadaptation.value == pytest.approx(coad, abs=1e-9)
        assert m.specificity.value == pytest.approx(spec, abs=1e-9)
        assert m.boost_base.value == pytest.approx(boost, abs=1e-9)
        assert m.boost_selffer.value == pytest.approx(boost_sf, abs=1e-9)
    assert metrics[3].drop.value == pytest.approx(0.10)
    assert metrics[3].relative_drop == pytest.approx(0.10 / 0.81)
    assert metrics[3].generality == pytest.approx(0.71 / 0.81)
    # baseB and BnB have two networks each: no interval (it would be +-12.7 points)
    assert metrics[1].coadaptation.half_width is None


def test_table1_known_answers(tmp_path: Path) -> None:
    rows = table1(_grid(write_run(tmp_path)))
    assert [(r.lo, r.hi, r.networks) for r in rows] == [(1, 3, 6), (2, 3, 4), (3, 3, 2)]
    # mean over the AnB+ networks in the range minus mean baseB (0.81)
    assert rows[0].boost_base.value == pytest.approx((0.83 + 0.83 + 0.83 + 0.85 + 0.84 + 0.84) / 6 - 0.81)
    assert rows[1].boost_base.value == pytest.approx(0.03)
    assert rows[2].boost_selffer.value == pytest.approx(0.02)
    assert rows[0].boost_base.ci_low is None  # baseB has two networks: no interval, not +-45 points


def test_table1_ranges_generalise_the_papers() -> None:
    assert table1_ranges(range(1, 8)) == [(1, 7), (3, 7), (5, 7)]
    assert table1_ranges([2, 4, 6]) == [(2, 6), (4, 6), (6, 6)]
    assert table1_ranges([1]) == [(1, 1)]


def test_specific_layer_uses_the_noise_between_seeds(tmp_path: Path) -> None:
    spec = specific_layer(_grid(write_run(tmp_path)))
    # variances 0.0002 in four of six cells, each with 1 df: pooled sd = sqrt(0.0008 / 6)
    assert spec.noise_sd == pytest.approx(math.sqrt(0.0008 / 6))
    assert spec.threshold == pytest.approx(2 * math.sqrt(0.0008 / 6))
    assert spec.n == 3  # the 1-point gap at n=2 is within the noise
    assert spec.gap == pytest.approx(0.09)


def test_specific_layer_with_one_seed_falls_back_to_a_threshold(tmp_path: Path) -> None:
    grid = _grid(write_run(tmp_path, seeds=(0,), extra=False))
    spec = specific_layer(grid, fallback=0.02)
    assert spec.noise_sd is None and "noise unknown" in spec.rule
    assert spec.n == 3 and spec.threshold == 0.02  # seed-0 gaps are 0.01, 0.01, 0.10
    assert specific_layer(grid, fallback=0.005).n == 1


def test_pooling_merges_mirror_treatments(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    pooled = _grid(run, pool=True)
    assert sorted(pooled.get("baseB", 0).values) == [0.78, 0.80, 0.80, 0.82]
    assert pooled.merged == {"baseA", "AnA", "BnA"}
    assert "baseA" not in pooled.treatments
    assert _grid(run, pool=None).pooled  # equal halves: pooled by default
    unequal = write_run(tmp_path / "unequal", sizes=(4, 6))
    assert not _grid(unequal, pool=None).pooled
    assert _grid(run, pool=False).get("baseB", 0).count == 2


def test_a_network_in_two_cells_counts_once(tmp_path: Path) -> None:
    grid = _grid(write_run(tmp_path, duplicate=True))
    assert grid.get("baseA", 0).count == 2


def test_metric_choice(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    assert _grid(run, "top1_best_k").get("AnB", 3).mean == pytest.approx(0.72)
    assert _grid(run, "top1").get("AnB", 3).mean == pytest.approx(0.71)


# --------------------------------------------------------------------------- exports


def test_export_long_writes_csv_jsonl_parquet(tmp_path: Path) -> None:
    results = load_run(write_run(tmp_path))
    paths = write_long(results, results.run_dir)
    assert {p.name for p in paths} >= {"results_long.csv", "results_long.jsonl"}
    lines = (tmp_path / "results_long.csv").read_text().splitlines()
    assert lines[0].split(",") == list(LONG_COLUMNS)
    assert len(lines) == 1 + len(results.rows)
    rows = [json.loads(x) for x in (tmp_path / "results_long.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"ok", "pending", "failed"}
    assert all(r["config_hash"] == "abc123" for r in rows)
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(tmp_path / "results_long.parquet")
    assert table.num_rows == len(results.rows) and table.schema.field("top1").type == "double"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


# --------------------------------------------------------------------------- the paper

# PAPER.md's n = 1..7 table: BnB, BnB+, AnB, AnB+ (published numbers, rounded to 3 places).
PAPER_TABLE = {
    1: (0.627, 0.618, 0.628, 0.637), 2: (0.624, 0.622, 0.624, 0.636),
    3: (0.621, 0.631, 0.619, 0.643), 4: (0.605, 0.629, 0.600, 0.640),
    5: (0.594, 0.630, 0.578, 0.645), 6: (0.619, 0.628, 0.581, 0.646),
    7: (0.623, 0.627, 0.543, 0.647),
}


def _paper_grids(metric: str = "top1_best_k"):
    return {g.experiment: g for g in build_grids(load_paper(), metric)}


def test_paper_main_table() -> None:
    grid = _paper_grids()["random"]
    base = grid.get("baseB", 0)
    assert base.count == 8 and round(base.mean, 3) == 0.625
    assert (min(base.values), max(base.values)) == pytest.approx((0.615, 0.634), abs=5e-4)
    for n, expected in PAPER_TABLE.items():
        got = [grid.get(t, n).mean for t in ("BnB", "BnB+", "AnB", "AnB+")]
        # 6e-4: PAPER.md rounds BnB at n=5 (0.59349) to .594
        assert got == pytest.approx(expected, abs=6e-4), n
    assert grid.get("BnB", 3).count == 4 and grid.get("AnB", 7).count == 8


@pytest.mark.parametrize("metric", ["top1_best_k", "top1"])
def test_paper_table1(metric: str) -> None:
    rows = table1(_paper_grids(metric)["random"])
    assert [(r.lo, r.hi) for r in rows] == [(1, 7), (3, 7), (5, 7)]
    assert [round(100 * r.boost_base.value, 1) for r in rows] == [1.6, 1.8, 2.1]
    assert [round(100 * r.boost_selffer.value, 1) for r in rows] == [1.4, 1.4, 1.7]


def test_paper_dissimilar_split_and_random_weights() -> None:
    grids = _paper_grids()
    natman = grids["manmade_natural"]
    assert not natman.pooled
    manmade = [natman.get("baseB", 0).mean] + [natman.get("AnB", n).mean for n in range(1, 8)]
    assert manmade == pytest.approx([0.537, 0.539, 0.521, 0.501, 0.462, 0.410, 0.374, 0.291], abs=5e-4)
    natural = [natman.get("baseA", 0).mean] + [natman.get("BnA", n).mean for n in range(1, 8)]
    assert natural == pytest.approx([0.653, 0.657, 0.651, 0.625, 0.582, 0.522, 0.485, 0.399], abs=5e-4)
    # PAPER.md: "the drop at n=7 is about 25% ... against about 8% for random halves".
    # Those are points of top-1 (Figure 3 subtracts the base), not fractions of the base.
    d = drops(natman)
    dissimilar = (d["AnB"][7][0].value + d["BnA"][7][0].value) / 2
    random_halves = drops(grids["random"])["AnB"][7][0].value
    assert round(dissimilar, 2) == 0.25 and round(random_halves, 2) == 0.08
    assert d["AnB"][7][1] == pytest.approx(0.458, abs=1e-3)  # relative to the man-made base
    rw = grids["random_weights"]
    assert rw.get("baseall", 0).mean == pytest.approx(0.576, abs=5e-4)
    assert [rw.get("random", n).mean for n in (1, 2)] == pytest.approx([0.492, 0.403], abs=5e-4)
    assert all(0.001 <= rw.get("random", n).mean <= 0.050 for n in range(3, 8))


def test_paper_specific_layer_and_reduced_data() -> None:
    spec = specific_layer(_paper_grids()["random"])
    assert spec.n == 5 and spec.noise_sd == pytest.approx(0.006, abs=1e-3)
    reduced = reduced_data()
    assert reduced[1300] == pytest.approx(0.5518, abs=1e-4) and len(reduced) == 12
