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
    fisher_interval,
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


def test_fisher_interval():
    low, high = fisher_interval(0.9, 10)
    assert low == pytest.approx(math.tanh(math.atanh(0.9) - 1.96 * math.sqrt(1.06 / 7)))
    assert high == pytest.approx(math.tanh(math.atanh(0.9) + 1.96 * math.sqrt(1.06 / 7)))
    assert low < 0.9 < high
    assert fisher_interval(0.9, 3) is None and fisher_interval(0.5, 4, "kendall") is None
    assert fisher_interval(None, 30) is None
    assert fisher_interval(1.0, 20)[1] <= 1.0


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
    assert (oracle.spearman, oracle.kendall, oracle.points, oracle.seeds) == (pytest.approx(1.0), 1.0, 8, 2)
    assert oracle.depth_spearman == pytest.approx(40 / math.sqrt(40 * 42))  # why depth is the yardstick
    assert oracle.per_group.values == (pytest.approx(1.0), pytest.approx(1.0))
    assert oracle.spearman_ci[1] <= 1.0
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
    found = {s.estimator: s for s in specific_layers(*handmade)}
    oracle = next(s for s in specific_layers(*handmade) if s.experiment == "random" and s.estimator == "oracle")
    assert oracle.retraining.n is not None and oracle.estimate.n == oracle.retraining.n
    assert found["upside_down"].estimate.n is None or found["upside_down"].estimate.n != oracle.retraining.n


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
