"""Estimators judged against retraining, on hand-made run directories with known answers:
the rank statistics, the comparisons beside the depth-only baseline, what depth cannot know
(the gap, the same n), where features turn specific, cost, the report and its files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from transferbench.estimator_report import estimator_figure, print_estimator_report
from transferbench.report_files import ESTIMATE_COLUMNS, VALIDATION_COLUMNS, write_report
from transferbench.results import read_results
from transferbench.runreport import build_report
from transferbench.validation import (
    agreements,
    cost_summary,
    kendall,
    ranks,
    spearman,
    specific_layers,
)


def read_estimates(run_dir):
    return read_results(run_dir).estimates

LAYERS = (1, 2, 3, 4)
# AnB falls with n (seed 0, seed 1); BnB stays; AnB+ rises; every base at .80
ANB = {0: (0.80, 0.78, 0.70, 0.60), 1: (0.82, 0.79, 0.72, 0.61)}
BNB = {0: (0.81, 0.81, 0.80, 0.81), 1: (0.81, 0.80, 0.81, 0.81)}
ANB_PLUS = {0: (0.83, 0.84, 0.85, 0.86), 1: (0.83, 0.85, 0.84, 0.86)}
# the dissimilar experiment (one seed): both directions, each against its own base (.80)
DIS = {"AnB": (0.79, 0.74, 0.66, 0.50), "BnA": (0.81, 0.77, 0.69, 0.58)}
TREATMENTS = {"BnB": ("B", "B", "frozen"), "AnB": ("A", "B", "frozen"), "AnB+": ("A", "B", "finetune"),
              "BnA": ("B", "A", "frozen")}


def _accuracies() -> dict[tuple[str, str, int, int], float]:
    acc = {}
    for seed in (0, 1):
        for i, n in enumerate(LAYERS):
            acc[("random", "AnB", seed, n)] = ANB[seed][i]
            acc[("random", "BnB", seed, n)] = BNB[seed][i]
            acc[("random", "AnB+", seed, n)] = ANB_PLUS[seed][i]
    for t, values in DIS.items():
        for i, n in enumerate(LAYERS):
            acc[("dissimilar", t, 0, n)] = values[i]
    return acc


def _oracle(acc, sign: float = 1.0, own: str = "selffer"):
    """An estimator that knows the answer: e(S->T) = the frozen transfer's accuracy, and
    e(T->T) = the selffer's (``own="selffer"``; the base's, .80, where there is none) or
    the base's (``own="base"``)."""
    est = {}
    for (exp, t, seed, n), value in acc.items():
        src, tgt, proto = TREATMENTS[t]
        if proto == "frozen" and (src != tgt or own == "selffer"):
            est[(exp, seed, src, tgt, n)] = sign * value
        if proto == "frozen":
            est.setdefault((exp, seed, tgt, tgt, n), sign * 0.80)
    return est


def write_run(root: Path, estimators: dict[str, dict], *, retrained: bool = True) -> Path:
    """A run directory in the documented format with the accuracies above and the given
    estimators' scores ({name: {(experiment, seed, source, target, n): value}})."""
    jobs, cells, estimates, records = {}, [], [], {}

    def add(job_id, job, record):
        jobs[job_id] = {"num_classes": 5, "seed": 1, "depends_on": None, **job}
        records[job_id] = {"job_id": job_id, "status": "ok", **record}

    for exp, seeds in (("random", (0, 1)), ("dissimilar", (0,))):
        for seed in seeds:
            for half in "AB":
                jid = f"{exp}-base{half}-{seed}"
                add(jid, {"kind": "base", "target": half, "source": None, "n": 0, "protocol": None},
                    {"top1": 0.80, "train_time_s": 10.0})
                cells.append({"experiment": exp, "split": exp, "split_seed": seed, "treatment": f"base{half}",
                              "n": 0, "job_id": jid})
    for (exp, t, seed, n), value in _accuracies().items() if retrained else ():
        src, tgt, proto = TREATMENTS[t]
        jid = f"{exp}-{t}-{seed}-{n}"
        add(jid, {"kind": "transfer", "target": tgt, "source": src, "n": n, "protocol": proto},
            {"top1": value, "train_time_s": 4.0 if proto == "finetune" else 1.0})
        cells.append({"experiment": exp, "split": exp, "split_seed": seed, "treatment": t, "n": n, "job_id": jid})
    for name, scores in estimators.items():
        for (exp, seed, src, tgt, n), value in scores.items():
            jid = f"{name}-{exp}-{seed}-{src}{tgt}-{n}"
            add(jid, {"kind": "estimate", "target": tgt, "source": src, "n": n, "estimator": name},
                {"estimator": name, "estimate": value, "train_time_s": 0.5, "estimate_s": 0.4, "features_s": 0.1})
            estimates.append({"experiment": exp, "split": exp, "split_seed": seed, "source": src, "target": tgt,
                              "n": n, "estimator": name, "job_id": jid})
    plan = {"name": "handmade", "config_hash": "abc", "num_layers": 5, "layer_names": ["l1", "l2", "l3", "l4", "l5"],
            "jobs": jobs, "cells": cells, "estimates": estimates}
    (root / "records").mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps(plan))
    for jid, rec in records.items():
        (root / "records" / f"{jid}.json").write_text(json.dumps(rec))
    return root


def _by(rows, **keys):
    found = [r for r in rows if all(getattr(r, k) == v for k, v in keys.items())]
    assert len(found) == 1, (keys, found)
    return found[0]


# --------------------------------------------------------------------------- statistics


def test_ranks_share_ties():
    assert ranks([3.0, 1.0, 2.0, 1.0]) == [4.0, 1.5, 3.0, 1.5]


def test_spearman_and_kendall_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # depth alone on two seeds of a falling curve: tied n, untied accuracies (worked by hand)
    depth = [-1, -1, -2, -2, -3, -3, -4, -4]
    acc = [0.80, 0.82, 0.78, 0.79, 0.70, 0.72, 0.60, 0.61]
    assert spearman(depth, acc) == pytest.approx(40 / math.sqrt(40 * 42))
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4], strata=["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert kendall([1, 2, 3], [1, 1, 1]) == pytest.approx(0.0) or kendall([1, 2, 3], [1, 1, 1]) is None
    assert kendall([1, 2], [1, 2], strata=[0, 1]) is None
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------- comparisons


@pytest.fixture
def handmade(tmp_path):
    acc = _accuracies()
    depth_like = {k: -float(k[4]) for k in _oracle(acc)}  # knows the depth and nothing else
    run_dir = write_run(tmp_path / "run", {"oracle": _oracle(acc), "depth": depth_like,
                                            "relative": _oracle(acc, own="base"),
                                            "upside_down": _oracle(acc, sign=-1.0, own="base")})
    return read_results(run_dir), read_estimates(run_dir)


def test_read_estimates(handmade):
    _, estimates = handmade
    assert len(estimates) == 4 * (2 * 2 + 4) * 4  # random: 2 seeds x (A->B, B->B); dissimilar: 4 pairs
    row = _by(estimates, estimator="oracle", experiment="random", split_seed=1, source="A", target="B", n=3)
    assert row.value == pytest.approx(0.72) and row.status == "ok" and row.seconds == 0.5


def test_an_oracle_agrees_fully_and_depth_alone_nearly_as_well_across_layers(handmade):
    rows = agreements(*handmade)
    oracle = _by(rows, experiment="random", estimator="oracle", reference="AnB", comparison="layers")
    assert (oracle.spearman, oracle.kendall) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (oracle.points, oracle.seeds) == (8, 2)
    assert oracle.depth_spearman == pytest.approx(40 / math.sqrt(40 * 42))  # why depth is the yardstick
    assert oracle.per_group.values == (pytest.approx(1.0), pytest.approx(1.0))
    assert oracle.units == 2 and oracle.spearman_ci is None  # two split seeds: no interval over units
    depth = _by(rows, experiment="random", estimator="depth", reference="AnB", comparison="layers")
    assert depth.spearman == pytest.approx(depth.depth_spearman)
    plus = _by(rows, experiment="random", estimator="oracle", reference="AnB+", comparison="layers")
    assert plus.spearman < 0 and plus.depth_spearman < 0  # AnB+ rises with n; "deeper = worse" fails too


def test_the_gap_and_the_same_n_are_what_depth_cannot_know(handmade):
    rows = agreements(*handmade)
    gap = _by(rows, experiment="random", estimator="oracle", reference="BnB-AnB", comparison="gap")
    assert gap.spearman == pytest.approx(1.0) and gap.points == 8
    assert not [r for r in rows if r.estimator == "depth" and r.comparison == "gap" and r.spearman is not None]
    no_selffer = _by(rows, experiment="dissimilar", estimator="oracle", reference="baseA-BnA", comparison="gap")
    assert no_selffer.spearman == pytest.approx(1.0)  # each direction against its own base
    same = _by(rows, experiment="*", estimator="relative", reference="frozen", comparison="same_n")
    assert same.points == 16 and same.kendall == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    assert (same.depth_spearman, same.depth_kendall) == (0.0, 0.0)
    assert len(same.per_group.values) == 4  # one within-n correlation per layer
    upside = _by(rows, experiment="*", estimator="upside_down", reference="frozen", comparison="same_n")
    assert upside.kendall == pytest.approx(-1.0)
    depth = _by(rows, experiment="*", estimator="depth", reference="frozen", comparison="same_n")
    assert depth.spearman is None and depth.kendall is None  # ties within n: no information


def test_specific_layer_of_an_oracle_is_retrainings(handmade):
    oracle = next(s for s in specific_layers(*handmade) if s.experiment == "random" and s.estimator == "oracle")
    # two split seeds give two units: neither retraining nor the estimator has an interval
    assert not oracle.retraining.determined and not oracle.estimate.determined


def test_specific_layer_by_an_oracle_estimator_over_three_units(tmp_path):
    from transferbench.analysis import build_grids, specific_layer
    from transferbench.results import EstimateRow, ResultRow, RunResults

    rows, estimates = [], []
    for seed in range(4):
        rows.append(ResultRow("e", "random", seed, "baseB", 0, f"b{seed}", "ok", top1=0.8, kind="base", target="B"))
        for n, gap in ((1, 0.0), (2, 0.0), (3, 0.05 + 0.01 * seed), (4, 0.2)):
            for t, v in (("BnB", 0.8), ("AnB", 0.8 - gap)):
                rows.append(ResultRow("e", "random", seed, t, n, f"{t}{n}{seed}", "ok", top1=v, kind="transfer",
                                      source=t[0], target="B"))
                estimates.append(EstimateRow("e", "random", seed, t[0], "B", n, "oracle", f"o{t}{n}{seed}", "ok",
                                             v + 0.001 * seed))
    results = RunResults("r", "h", 5, ("a", "b", "c", "d", "e"), tuple(rows), estimates=tuple(estimates))
    (grid,) = build_grids(results, "top1", pool=False)
    (found,) = specific_layers(results, results.estimates)
    assert specific_layer(grid).n == 3 and found.retraining.n == 3 and found.estimate.n == 3


def test_cost_counts_each_network_once_and_the_finetuned_part(handmade):
    results, estimates = handmade
    cost = cost_summary(results, estimates)
    frozen = 2 * 2 * 4 + 2 * 4  # random AnB, BnB x 2 seeds; dissimilar AnB, BnA
    assert cost.transfer_networks == frozen + 2 * 4
    assert cost.retraining_s == pytest.approx(frozen * 1.0 + 8 * 4.0) and cost.finetune_s == pytest.approx(32.0)
    assert cost.estimator_jobs["oracle"] == 32 and cost.estimator_s["oracle"] == pytest.approx(16.0)
    assert cost.ratio("oracle") == pytest.approx(cost.retraining_s / 16.0)
    assert cost.ratio() == pytest.approx(cost.retraining_s / 64.0)
    assert cost.base_s == pytest.approx(60.0)


# --------------------------------------------------------------------------- report and files


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_report_files_and_figure(handmade, tmp_path):
    results, estimates = handmade
    report = build_report(results)
    paths = [p for p in write_report(report, tmp_path) if "estimator" in p.name]
    assert [p.name for p in paths] == ["results_estimators.csv", "results_estimator_validation.csv",
                                       "results_estimator_cost.csv"]
    rows = _csv(paths[0])
    assert tuple(rows[0]) == ESTIMATE_COLUMNS and len(rows) == len(estimates)
    validation = _csv(paths[1])
    assert tuple(validation[0]) == VALIDATION_COLUMNS
    oracle = next(r for r in validation if r["estimator"] == "oracle" and r["reference"] == "AnB"
                  and r["comparison"] == "layers" and r["experiment"] == "random")
    assert float(oracle["spearman"]) == pytest.approx(1.0) and oracle["points"] == "8"
    assert float(oracle["depth_spearman"]) == pytest.approx(0.9759, abs=1e-4)
    assert estimator_figure(results, estimates) is not None
    console = Console(record=True, width=80)
    print_estimator_report(console, results, report.estimators)
    text = console.export_text()
    assert "all experiments: estimators against retraining" in text and "frozen same n" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_an_estimate_only_run_is_reported_as_a_proxy(tmp_path):
    run_dir = write_run(tmp_path / "run", {"oracle": _oracle(_accuracies())}, retrained=False)
    results, estimates = read_results(run_dir), read_estimates(run_dir)
    assert agreements(results, estimates) == []
    console = Console(record=True, width=100)
    print_estimator_report(console, results, build_report(results).estimators)
    text = console.export_text()
    assert "a proxy, not a measurement" in text and "oracle: not validated by transferbench" in text
    assert "no network was retrained here" in text


# --------------------------------------------------------------------------- intervals over units, baselines, ceiling


def _four_seed_results():
    """One experiment, 4 split seeds (4 units), layers 1-4: AnB falls with n but not
    monotonically (n = 3 beats n = 2 in every seed, so depth is not perfect), shifted by seed;
    AnB+ rises; estimators that know AnB, know depth, or know AnB upside down."""
    from transferbench.results import EstimateRow, ResultRow, RunResults

    shape = {1: 0.80, 2: 0.70, 3: 0.72, 4: 0.60}
    rows, estimates = [], []
    for seed in range(4):
        for half in "AB":
            rows.append(ResultRow("e", "random", seed, f"base{half}", 0, f"b{half}{seed}", "ok", top1=0.85,
                                  kind="base", target=half))
        for n, value in shape.items():
            anb, plus = value + 0.02 * seed, 0.80 + 0.01 * n + 0.001 * seed
            for t, v, proto in (("AnB", anb, "frozen"), ("AnB+", plus, "finetune")):
                rows.append(ResultRow("e", "random", seed, t, n, f"{t}{n}{seed}", "ok", top1=v, kind="transfer",
                                      source="A", target="B", protocol=proto))
            for name, v in (("oracle", anb), ("depth", -float(n)), ("anti", -anb)):
                estimates.append(EstimateRow("e", "random", seed, "A", "B", n, name, f"{name}{n}{seed}", "ok", v))
    return RunResults("r", "h", 5, ("a", "b", "c", "d", "e"), tuple(rows), estimates=tuple(estimates))


def test_intervals_are_over_units_and_estimators_face_the_strongest_baseline():
    results = _four_seed_results()
    rows = agreements(results, results.estimates)
    oracle = _by(rows, estimator="oracle", reference="AnB", comparison="layers")
    assert oracle.units == 4 and oracle.ground_truth == "frozen"
    assert oracle.spearman_ci == (pytest.approx(1.0), pytest.approx(1.0))  # 1 on every resample of units
    assert oracle.weighted_tau.value == pytest.approx(1.0)
    assert oracle.regret.value == 0.0  # it picks n = 1, the best layer, in every unit
    names = [b.name for b in oracle.baselines]
    assert names == ["depth", "random"]  # one experiment: no static hierarchy; no sources to rank
    random = oracle.baselines[1].spearman
    assert random.ci_low < 0 < random.ci_high
    assert oracle.strongest == "depth" and oracle.beats == "yes"
    depth = _by(rows, estimator="depth", reference="AnB", comparison="layers")
    assert depth.beats == "not determined"  # equal to the baseline on every resample: never "beats"
    assert depth.regret.value == 0.0
    anti = _by(rows, estimator="anti", reference="AnB", comparison="layers")
    assert anti.beats == "no" and anti.regret.value == pytest.approx(0.20)  # picks n = 4: .60 against .80
    # every unit ranks the layers the same way: the ceiling is 1, and the oracle reaches all of it
    assert oracle.ceiling.seed_to_seed.value == pytest.approx(1.0)
    assert oracle.ceiling.fraction.value == pytest.approx(1.0)
    assert anti.ceiling.fraction.value == pytest.approx(-1.0)
    plus = _by(rows, estimator="oracle", reference="AnB+", comparison="layers")
    assert plus.ground_truth == "finetune" and plus.spearman_ci[1] < 0 and not plus.predicts()


def test_three_ground_truths_are_compared_with_each_other():
    from transferbench.validation import ground_truth_agreements

    (gt,) = ground_truth_agreements(_four_seed_results())
    assert (gt.first, gt.second, gt.points) == ("AnB", "AnB+", 16)
    assert gt.spearman.determined and gt.spearman.value < 0  # frozen falls with n, fine-tuned rises


def test_the_report_never_says_an_estimator_predicts_a_ground_truth_its_interval_does_not_support():
    from transferbench.estimator_report import print_estimator_report

    results = _four_seed_results()
    console = Console(record=True, width=200)
    print_estimator_report(console, results, build_report(results).estimators)
    text = console.export_text()
    assert "anti predicts the finetune ground truth (AnB+)" in text
    assert "oracle ranks the finetune ground truth (AnB+) the wrong way round" in text
    assert "oracle predicts" not in text and "depth predicts" not in text
    assert "e: AnB and AnB+ rank their 16 points" in text
