"""Ranking sources (model-level validation) on hand-made records: a pick rate with an exact
interval for two sources, correlations over units for three, the free baselines, regret and
the ceiling; values checked by hand."""

from __future__ import annotations

import pytest

from transferbench.results import EstimateRow, ResultRow, RunResults
from transferbench.source_ranking import Picks, SourceInfo, source_rankings


def _run(truth: dict[int, dict[str, float]], scores: dict[int, dict[str, float]], n: int = 7,
         protocol: str = "frozen") -> tuple[RunResults, list[EstimateRow]]:
    """Seed -> source -> retrained accuracy (XnB@source at n) and the estimator's score."""
    rows, estimates = [], []
    for seed, by_source in truth.items():
        rows.append(ResultRow("x", "superclass", seed, "baseB", 0, f"b{seed}", "ok", top1=0.7, kind="base", target="B"))
        for source, acc in by_source.items():
            rows.append(ResultRow("x", "superclass", seed, f"XnB@{source}", n, f"{source}{seed}", "ok", top1=acc,
                                  kind="transfer", source=source, target="B", protocol=protocol))
            estimates.append(EstimateRow("x", "superclass", seed, source, "B", n, "est", f"e{source}{seed}", "ok",
                                         value=scores[seed][source]))
    return RunResults("r", "h", 8, tuple(f"l{i}" for i in range(1, 9)), tuple(rows)), estimates


def test_two_sources_report_a_pick_rate_with_an_exact_interval():
    truth = {s: {"good": 0.60, "weak": 0.50} for s in range(5)}
    truth[4] = {"good": 0.50, "weak": 0.55}  # retraining itself prefers the weak one once
    scores = {s: {"good": 2.0, "weak": 1.0} for s in range(5)}
    info = {"good": SourceInfo(0.67, 100), "weak": SourceInfo(0.10, 100)}
    (r,) = source_rankings(*_run(truth, scores), info=info)
    assert r.pairwise and r.sources == ("good", "weak") and r.n == 7 and r.units == 5
    assert (r.picks.right, r.picks.units) == (4, 5)
    # Clopper-Pearson for 4 of 5: [0.2836, 0.9949]
    assert r.picks.ci_low == pytest.approx(0.28358, abs=1e-4) and r.picks.ci_high == pytest.approx(0.99495, abs=1e-4)
    assert r.spearman is None and r.kendall is None and r.weighted_tau is None  # no correlation of 2 items
    # regret: good is best on average (.58 vs .51); the pick is always good: 0 in every unit
    assert r.regret.value == pytest.approx(0.0)
    by_name = {b.name: b for b in r.baselines}
    assert set(by_name) == {"source accuracy", "parameters", "static", "random"}
    assert (by_name["source accuracy"].picks.right, by_name["source accuracy"].picks.units) == (4, 5)
    # equal parameter counts tie: a tie for first is right only when every tied source is best
    assert by_name["parameters"].picks.right == 0
    # static: a source's mean on the other four units; good's is higher in all five
    assert by_name["static"].picks.right == 4
    # the estimator equals its strongest baseline in every unit: never "yes"
    assert r.strongest in ("source accuracy", "static") and r.beats == "not determined"
    # ceiling: pairs of distinct units picking the same source: 4 agree among themselves (6
    # pairs), the odd one disagrees with each (4 pairs): 6 / 10
    assert r.ceiling.value == pytest.approx(0.6)


def test_a_tie_in_retraining_decides_nothing():
    truth = {0: {"a": 0.5, "b": 0.5}, 1: {"a": 0.6, "b": 0.5}, 2: {"a": 0.6, "b": 0.5}}
    scores = {s: {"a": 1.0, "b": 0.0} for s in range(3)}
    (r,) = source_rankings(*_run(truth, scores))
    assert (r.picks.right, r.picks.units) == (2, 2) and r.units == 3


def test_three_sources_report_correlations_over_units():
    truth = {s: {"a": 0.7, "b": 0.6, "c": 0.5} for s in range(4)}
    scores = {0: {"a": 3.0, "b": 2.0, "c": 1.0}, 1: {"a": 3.0, "b": 2.0, "c": 1.0},
              2: {"a": 3.0, "b": 1.0, "c": 2.0}, 3: {"a": 1.0, "b": 2.0, "c": 3.0}}
    (r,) = source_rankings(*_run(truth, scores))
    assert not r.pairwise
    # within-unit Spearman: 1, 1, 0.5, -1 -> mean 0.375; Kendall: 1, 1, 1/3, -1 -> 1/3
    assert r.spearman.value == pytest.approx(0.375)
    assert r.kendall.value == pytest.approx(1 / 3)
    assert r.spearman.determined and r.spearman.ci_low <= 0.375 <= r.spearman.ci_high
    assert (r.picks.right, r.picks.units) == (3, 4)
    # regret: a is best; the last unit picks c: .2 there, 0 elsewhere -> mean .05
    assert r.regret.value == pytest.approx(0.05)
    assert r.ceiling.value == pytest.approx(1.0)  # retraining ranks the three alike in every unit
    static = next(b for b in r.baselines if b.name == "static")
    assert static.spearman.value == pytest.approx(1.0) and r.strongest == "static"
    assert r.beats in ("no", "not determined")


def test_one_source_or_no_shared_layer_gives_no_ranking():
    truth = {s: {"good": 0.6} for s in range(3)}
    assert source_rankings(*_run(truth, {s: {"good": 1.0} for s in range(3)})) == []


def test_picks_of_nothing_have_no_interval():
    assert Picks.of(0, 0).rate is None and Picks.of(0, 0).ci_low is None
    assert Picks.of(5, 5).ci_high == pytest.approx(1.0) and Picks.of(5, 5).ci_low == pytest.approx(0.4782, abs=1e-4)


def test_the_report_prints_the_choice_and_writes_its_csv(tmp_path):
    import csv

    from rich.console import Console

    from transferbench.estimator_report import print_estimator_report
    from transferbench.report_files import SOURCE_RANKING_COLUMNS, _source_csv
    from transferbench.runreport import EstimatorSection
    from transferbench.validation import cost_summary

    truth = {s: {"good": 0.60, "weak": 0.50} for s in range(4)}
    results, estimates = _run(truth, {s: {"good": 2.0, "weak": 1.0} for s in range(4)})
    section = EstimatorSection(tuple(estimates), (), (), cost_summary(results, estimates), (),
                               tuple(source_rankings(results, estimates)))
    console = Console(record=True, width=200)
    print_estimator_report(console, results, section)
    text = console.export_text()
    assert "x: which source for B? good, weak at n=7, 4 units (top1)" in text
    assert "XnB (frozen)" in text and "4/4" in text and "+.40/+1.00" in text  # 4 of 4, exact 95% interval
    (row,) = csv.DictReader(_source_csv(section).splitlines())
    assert list(row) == list(SOURCE_RANKING_COLUMNS)
    assert (row["sources"], row["picks_right"], row["picks_units"], row["ground_truth"]) == ("good weak", "4", "4",
                                                                                             "frozen")


def test_two_sources_beat_a_baseline_only_by_an_exact_test():
    """Right in every unit where the baseline is wrong: 5 of 5 discordant units is p = .0625 by
    the sign test (not determined), 6 of 6 is p = .031 (yes), 0 of 6 is "no"; a bootstrap of such
    units would give an interval of zero width and say yes at once. Against a random pick: the
    exact interval of 5/5 (.48 to 1) holds 1/2, that of 6/6 (.54 to 1) does not."""
    from transferbench.source_ranking import _exact_verdict, _Unit

    def units(count, mine_right):
        good = (1.0, 0.0) if mine_right else (0.0, 1.0)
        return [_Unit(("x", s, "B"), (0.6, 0.5), good, {"b": (good[1], good[0])}) for s in range(count)]

    assert _exact_verdict(units(5, True), "b", Picks.of(5, 5), 2) == "not determined"
    assert _exact_verdict(units(6, True), "b", Picks.of(6, 6), 2) == "yes"
    assert _exact_verdict(units(6, False), "b", Picks.of(0, 6), 2) == "no"
    assert _exact_verdict(units(5, True), "random", Picks.of(5, 5), 2) == "not determined"
    assert _exact_verdict(units(6, True), "random", Picks.of(6, 6), 2) == "yes"
