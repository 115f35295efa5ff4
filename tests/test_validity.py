"""Validity checks and the reproduction scorecard on hand-made runs that should pass and fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferbench import RunView
from transferbench.analysis import build_grids
from transferbench.results import read_results
from transferbench_plugins.validity_checks import (
    Chance,
    Completeness,
    Convergence,
    InputScale,
    Power,
    Provenance,
    late_gain,
)

FLAT = [0.2, 0.5, 0.7, 0.8, 0.85, 0.88, 0.90, 0.90, 0.91, 0.90, 0.91, 0.90]
RISING = [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85]


def make_run(root: Path, cells: list[tuple], *, experiment: str = "exp", exchangeable: bool = True,
             expected_input_std: float | None = None) -> Path:
    """A run directory from (treatment, n, seed, top1 | "failed" | None, extras) tuples.

    ``extras`` (a dict, optional) goes into the record: ``history`` (top-1 values), ``input_std``,
    ``fingerprint``; ``num_classes`` defaults to 10.
    """
    jobs, plan_cells = {}, []
    (root / "records").mkdir(parents=True, exist_ok=True)
    for cell in cells:
        treatment, n, seed, value, extras = (*cell, {})[:5]
        job_id = f"{experiment}-{treatment.replace('+', 'p')}-{n}-{seed}"
        base = treatment.startswith("base")
        source = None if base or treatment == "random" else treatment[0]
        target = treatment[4:] if base else "all" if treatment == "random" else treatment.rstrip("+")[-1]
        jobs[job_id] = {"kind": "base" if base else "transfer", "target": target,
                        "source": source, "n": n, "protocol": None if base else "frozen", "depends_on": None,
                        "num_classes": extras.get("num_classes", 10), "seed": seed}
        plan_cells.append({"experiment": experiment, "split": "random", "split_seed": seed, "treatment": treatment,
                           "n": n, "job_id": job_id})
        if value is None:
            continue
        record = {"job_id": job_id, "status": "failed", "error": "NaN loss"} if value == "failed" else {
            "job_id": job_id, "status": "ok", "top1": value, "top5": 1.0, "top1_best_k": value, "best_k": 1,
            "history": [{"step": i + 1, "epoch": i + 1, "top1": v, "top5": 1.0, "train_loss": 1.0}
                        for i, v in enumerate(extras.get("history", [value]))],
            "num_classes": extras.get("num_classes", 10), "input_std": extras.get("input_std"),
            "fingerprint": extras.get("fingerprint")}
        (root / "records" / f"{job_id}.json").write_text(json.dumps(record))
    old = json.loads((root / "plan.json").read_text()) if (root / "plan.json").exists() else None
    plan = {"format": 2, "name": "hand-made", "config_hash": "h", "num_layers": 4, "layer_names": ["a", "b", "c", "d"],
            "expected_input_std": expected_input_std, "exchangeable": {experiment: exchangeable},
            "jobs": jobs, "cells": plan_cells}
    if old:  # a second experiment in the same run directory
        plan["jobs"] = {**old["jobs"], **jobs}
        plan["cells"] = old["cells"] + plan_cells
        plan["exchangeable"] = {**old["exchangeable"], **plan["exchangeable"]}
    (root / "plan.json").write_text(json.dumps(plan))
    return root


def view(root: Path) -> RunView:
    results = read_results(root)
    return RunView(results, build_grids(results), records=results.records.get)


def run_check(check_cls, root: Path):
    check = check_cls(check_cls.Params())
    check.name = check_cls.__name__.lower()
    return check.check(view(root))


def control(root: Path):
    """The convergence check's control results (one per experiment; the plateau has none)."""
    return [r for r in run_check(Convergence, root) if r.experiment]


def grid_cells(base: list[float], **treatments: dict[int, list[float]]) -> list[tuple]:
    cells = [("baseB", 0, s, v) for s, v in enumerate(base)]
    for name, by_n in treatments.items():
        for n, values in by_n.items():
            cells += [(name.replace("_plus", "+"), n, s, v) for s, v in enumerate(values)]
    return cells


# --------------------------------------------------------------------------- convergence


def test_control_passes_when_bnb_plus_is_shown_within_the_margin(tmp_path):
    root = make_run(tmp_path, grid_cells([0.80, 0.82, 0.81], BnB_plus={1: [0.801, 0.821, 0.809],
                                                                       2: [0.799, 0.819, 0.811]}))
    (result,) = control(root)
    assert result.status == "pass" and "the control holds" in result.message and "over 3 units" in result.message


def test_a_control_within_noise_but_wider_than_the_margin_is_not_shown(tmp_path):
    """Absence of evidence is not evidence: an interval holding 0 and the margin does not pass."""
    root = make_run(tmp_path, grid_cells([0.80, 0.82, 0.81], BnB_plus={1: [0.81, 0.80, 0.82], 2: [0.82, 0.80, 0.81]}))
    (result,) = control(root)
    assert result.status == "warn" and "the control is not shown" in result.message
    assert "--power" in result.remedy and "--control-margin" in result.remedy


def test_control_warns_when_bnb_plus_beats_baseb(tmp_path):
    root = make_run(tmp_path, grid_cells([0.70, 0.72, 0.71], BnB_plus={1: [0.85, 0.86, 0.84], 2: [0.86, 0.85, 0.87]}))
    (result,) = control(root)
    assert result.status == "warn" and "confounded with training length" in result.message
    assert "train longer" in result.remedy


def test_control_is_not_determined_with_too_few_networks(tmp_path):
    root = make_run(tmp_path, grid_cells([0.80], BnB_plus={1: [0.9]}))
    (result,) = control(root)
    assert result.status == "warn" and "not determined" in result.message


def test_fine_tuned_transfers_without_a_bnb_plus_control_are_flagged(tmp_path):
    root = make_run(tmp_path, grid_cells([0.80, 0.82, 0.81], AnB_plus={1: [0.85, 0.86, 0.84]}))
    (result,) = control(root)
    assert result.status == "warn" and "no BnB+ control beside AnB+" in result.message
    assert "add BnB+" in result.remedy


def test_bases_with_too_few_evaluations_leave_the_plateau_not_determined(tmp_path):
    root = make_run(tmp_path, grid_cells([0.80, 0.82, 0.81], BnB_plus={1: [0.81, 0.80, 0.82]}))  # no histories
    (result,) = [r for r in run_check(Convergence, root) if not r.experiment]
    assert result.status == "warn" and "not determined" in result.message and "eval.every" in result.remedy


def test_plateau_passes_for_flat_histories_and_warns_for_rising_ones(tmp_path):
    flat = make_run(tmp_path / "flat", [("baseB", 0, s, 0.9, {"history": FLAT}) for s in range(3)])
    assert [r.status for r in run_check(Convergence, flat)] == ["pass"]
    rising = make_run(tmp_path / "rising", [("baseB", 0, 0, 0.9, {"history": FLAT}),
                                            ("baseB", 0, 1, 0.85, {"history": RISING})])
    (result,) = run_check(Convergence, rising)
    assert result.status == "warn" and "1 of 2 base networks still improve" in result.message


def test_late_gain_measures_the_last_30_percent():
    gain, noise = late_gain(RISING)  # the last 4 of 12 evaluations: .70 .75 | .80 .85
    assert gain == pytest.approx((0.8 + 0.85) / 2 - (0.7 + 0.75) / 2)
    assert noise == pytest.approx(0.0, abs=1e-9)  # a steady rise is not noise
    assert late_gain(FLAT)[0] == pytest.approx(0.0, abs=0.01)


# --------------------------------------------------------------------------- power, chance, completeness


@pytest.mark.parametrize("seeds, status, words", [(1, "warn", "have one unit"), (2, "warn", "have 2 units"),
                                                   (3, "pass", "at least 3 units")])
def test_power_needs_three_units_per_cell(tmp_path, seeds, status, words):
    root = make_run(tmp_path, grid_cells([0.8] * seeds, AnB={1: [0.7] * seeds}))
    (result,) = run_check(Power, root)
    assert result.status == status and words in result.message
    if status == "warn":
        assert "split.seeds" in result.remedy


def test_chance_warns_for_broken_training_but_not_for_random_weights(tmp_path):
    broken = make_run(tmp_path / "broken", grid_cells([0.8, 0.8, 0.8], AnB={1: [0.10, 0.11, 0.09]}))
    (result,) = run_check(Chance, broken)
    assert result.status == "warn" and "AnB n=1" in result.message and "chance 0.100" in result.message
    floor = make_run(tmp_path / "floor", [("baseall", 0, s, 0.8) for s in range(3)]
                     + [("random", 5, s, 0.1) for s in range(3)])
    (result,) = run_check(Chance, floor)
    assert result.status == "pass" and "random weights" in result.message
    fine = make_run(tmp_path / "fine", grid_cells([0.8] * 3, AnB={1: [0.7] * 3}))
    assert run_check(Chance, fine)[0].status == "pass"


def test_completeness_lists_what_failed_and_pending_networks_leave_out(tmp_path):
    root = make_run(tmp_path, grid_cells([0.8, 0.8], AnB={1: [0.7, "failed"], 2: [0.6, None]}))
    (result,) = run_check(Completeness, root)
    assert result.status == "warn" and "1 failed and 1 pending" in result.message
    assert "AnB n=1" in result.message and "AnB n=2" in result.message
    done = make_run(tmp_path / "done", grid_cells([0.8], AnB={1: [0.7]}))
    assert run_check(Completeness, done)[0].status == "pass"


# --------------------------------------------------------------------------- provenance, input scale


def _fp(torch_version: str, core: str = "c1") -> dict:
    detail = {"transferbench": "0.1.0", "core": core, "plugins": {}, "versions": {"torch": torch_version}}
    return {"id": f"{torch_version}-{core}", **detail}


def test_provenance_warns_when_code_differs(tmp_path):
    same = make_run(tmp_path / "same", [("baseB", 0, s, 0.8, {"fingerprint": _fp("2.14")}) for s in range(2)])
    assert run_check(Provenance, same)[0].status == "pass"
    mixed = make_run(tmp_path / "mixed", [("baseB", 0, 0, 0.8, {"fingerprint": _fp("2.14")}),
                                          ("baseB", 0, 1, 0.8, {"fingerprint": _fp("2.13", "c2")})])
    (result,) = run_check(Provenance, mixed)
    assert result.status == "warn" and "torch 2.13 / 2.14" in result.message and "training code" in result.message


def test_input_scale_against_what_the_init_expects(tmp_path):
    ok = make_run(tmp_path / "ok", [("baseB", 0, 0, 0.8, {"input_std": 1.1})], expected_input_std=1.0)
    assert run_check(InputScale, ok)[0].status == "pass"
    off = make_run(tmp_path / "off", [("baseB", 0, 0, 0.8, {"input_std": 0.017})], expected_input_std=57.7)
    (result,) = run_check(InputScale, off)
    assert result.status == "warn" and "57.7" in result.message and "data.std" in result.remedy


def test_every_builtin_check_runs_in_the_report(tmp_path, capsys):
    from rich.console import Console

    from transferbench.report import run_report

    root = make_run(tmp_path, grid_cells([0.70, 0.72, 0.71], BnB_plus={1: [0.85, 0.86, 0.84]}, AnB={1: [0.6] * 3}))
    console = Console(record=True, width=100)
    run_report(root, console=console, plots=False)
    text = console.export_text()
    assert "Validity checks" in text and "WARN convergence (exp)" in text and "-> train longer" in text
    rows = (root / "validity_checks_top1.csv").read_text().splitlines()
    assert rows[0] == "check,status,experiment,message,remedy"
    assert {line.split(",")[0] for line in rows[1:]} >= {"chance", "completeness", "convergence", "power",
                                                        "provenance"}


# --------------------------------------------------------------------------- the scorecard


def paper_like(root: Path, *, control_holds: bool = True) -> Path:
    """Three experiments in miniature with the paper's shapes, three seeds each; the base
    networks end flat (the convergence check's plateau passes)."""
    plus = [0.80, 0.81, 0.79] if control_holds else [0.90, 0.91, 0.92]
    cells = grid_cells([0.80, 0.81, 0.79], BnB={1: [0.80, 0.81, 0.80], 2: [0.74, 0.75, 0.73], 3: [0.79, 0.80, 0.78]},
                       BnB_plus={1: plus, 3: plus}, AnB={1: [0.80, 0.79, 0.80], 2: [0.72, 0.73, 0.72],
                                                          3: [0.70, 0.71, 0.69]},
                       AnB_plus={1: [0.83, 0.84, 0.82], 3: [0.82, 0.83, 0.81]})
    cells = [(*c, {"history": FLAT}) if c[0] == "baseB" else c for c in cells]
    make_run(root, cells, experiment="random")
    dissimilar = [("baseA", 0, s, 0.8, {"history": FLAT}) for s in range(3)]
    dissimilar += [("baseB", 0, s, 0.8, {"history": FLAT}) for s in range(3)]
    dissimilar += [("AnB", 3, s, 0.5 + 0.01 * s) for s in range(3)] + [("BnA", 3, s, 0.52 + 0.01 * s) for s in range(3)]
    dissimilar += [("AnB", 1, s, 0.78) for s in range(3)] + [("BnA", 1, s, 0.79) for s in range(3)]
    make_run(root, dissimilar, experiment="dissimilar", exchangeable=False)
    weights = [("baseall", 0, s, 0.7 + 0.01 * s, {"history": FLAT}) for s in range(3)]
    weights += [("random", n, s, v + 0.01 * s) for n, v in ((1, 0.6), (2, 0.2), (3, 0.1)) for s in range(3)]
    make_run(root, weights, experiment="random_weights")
    return root


def _card(root: Path, **kwargs) -> dict:
    from transferbench.runreport import read_report

    return {f.name: f for f in read_report(root, compare="paper", **kwargs).scorecard}


def test_scorecard_reproduces_the_papers_shapes(tmp_path):
    card = _card(paper_like(tmp_path))
    assert {name: f.verdict for name, f in card.items()} == {
        "control": "reproduced", "co-adaptation": "reproduced", "specificity": "reproduced",
        "fine-tuning boost": "reproduced", "dissimilar split": "reproduced", "random weights": "reproduced"}
    assert "n=2" in card["co-adaptation"].parts[0].run and "n=3" in card["specificity"].run
    assert card["control"].claim.startswith("BnB+ matches baseB") and card["control"].equivalence == "holds"
    for f in card.values():  # units, interval, the paper's effect and the stability behind every verdict
        ests = [p.estimate for p in f.parts] if f.parts else [f.estimate]
        assert all(e.units >= 3 and e.determined for e in ests)
        assert f.stability is not None and f.stability.resamples == 200
    assert card["specificity"].effect > 0 and card["dissimilar split"].estimate.units == 9  # 6 + 3 units


def test_a_control_that_fails_is_contradicted_and_the_boost_is_not_determined(tmp_path):
    card = _card(paper_like(tmp_path, control_holds=False))
    assert card["control"].verdict == "contradicted" and card["control"].equivalence == "fails"
    boost = card["fine-tuning boost"]  # the convergence check warns: extra training may be the boost
    assert boost.verdict == "not determined" and "convergence" in boost.invalidated
    assert card["specificity"].verdict == "reproduced"  # not one the control guards


def test_missing_experiments_and_too_few_units_are_not_determined(tmp_path):
    only_one = make_run(tmp_path / "one", grid_cells([0.8], BnB={1: [0.8]}, AnB={1: [0.7]}, BnB_plus={1: [0.8]}),
                        experiment="random")
    card = _card(only_one)
    assert card["specificity"].verdict == "not determined" and card["specificity"].estimate.units == 1
    assert card["dissimilar split"].verdict == "not determined" and "not in this run" in card["dissimilar split"].run


def test_co_adaptation_is_one_comparison_over_the_middle_layers_never_the_best_of_them(tmp_path):
    base = [0.80, 0.81, 0.79]
    flat = [0.80, 0.81, 0.80]
    bnb = {1: flat, 2: flat, 3: [0.77, 0.78, 0.76], 4: [0.81, 0.80, 0.82], 5: flat, 6: flat}
    root = make_run(tmp_path, grid_cells(base, BnB=bnb, AnB={n: flat for n in bnb}, BnB_plus={1: base},
                                         AnB_plus={1: base}), experiment="random")
    dip = _card(root)["co-adaptation"].parts[0]
    assert "over n=3-4" in dip.run  # the middle third of n = 1..6, pooled within each unit
    assert dip.verdict != "reproduced"  # n = 3 alone would have passed; n = 4 does not dip


def test_co_adaptation_needs_the_recovery_too(tmp_path):
    """A pipeline that degrades BnB at every n from the middle on dips, but never recovers:
    not the paper's shape."""
    base = [0.80, 0.81, 0.79]
    bnb = {1: [0.80, 0.81, 0.79], 2: [0.74, 0.75, 0.73], 3: [0.70, 0.71, 0.69]}
    root = make_run(tmp_path, grid_cells(base, BnB=bnb, AnB=bnb, BnB_plus={1: base}), experiment="random")
    card = _card(root)["co-adaptation"]
    dip, recovery = card.parts
    assert dip.verdict == "reproduced" and recovery.verdict == "contradicted"
    assert card.verdict == "contradicted"


@pytest.mark.parametrize("shift", [-0.002, 0.0, 0.003])
def test_a_boost_within_noise_gets_one_verdict_whatever_the_sign_of_its_mean(tmp_path, shift):
    base = [0.80, 0.82, 0.78]
    plus = [v + shift for v in (0.79, 0.83, 0.78)]
    root = make_run(tmp_path, [(*c, {"history": FLAT}) if c[0] == "baseB" else c for c in grid_cells(
        base, BnB={1: base}, BnB_plus={1: base}, AnB={1: base}, AnB_plus={1: plus})], experiment="random")
    boost = _card(root)["fine-tuning boost"]
    assert boost.verdict == "inconclusive"  # the interval holds both 0 and the paper's effect


def test_late_gain_starts_after_the_last_learning_rate_change():
    before = [0.80, 0.82, 0.81, 0.83, 0.82] * 3  # 15 evaluations at the first learning rate
    after = [0.90, 0.91, 0.90, 0.91, 0.90]  # lr / 10, then flat
    factors = [1.0] * 15 + [0.1] * 5
    assert late_gain(before + after)[0] > 0.02  # the last 30% straddles the decay's jump
    gain, _ = late_gain(before + after, factors)  # only the evaluations after the decay
    assert gain == pytest.approx((0.90 + 0.91 + 0.90) / 3 - (0.90 + 0.91) / 2)
    assert abs(gain) < 0.01
