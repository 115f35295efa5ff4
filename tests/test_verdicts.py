"""Verdicts that say exactly what the evidence supports: intervals over independent units,
four-valued verdicts against the paper's effect, equivalence for controls, the sample-size
planner, the stability of claims and the caveats that downgrade a verdict."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from transferbench.analysis import build_grids, specific_layer, table1
from transferbench.findings import SCALE, judge, same_depth
from transferbench.paperdata import load_paper
from transferbench.results import ResultRow, RunResults
from transferbench.scorecard import Control, Specificity
from transferbench.stats import (
    Difference,
    equivalence,
    over_units,
    stability,
    t_quantile,
    units_for_effect,
    units_for_equivalence,
    verdict,
    welch,
)
from transferbench.validity import CheckResult

PAPER = build_grids(load_paper(), "top1")


def _rows(cells: dict[tuple[str, int], list[float]], *, classes: int = 10, experiment: str = "random",
          direction: str = "B") -> RunResults:
    """Result rows: (treatment, n) -> one accuracy per unit (split seed i, trained on ``direction``)."""
    rows = []
    for (treatment, n), values in cells.items():
        base = treatment.startswith("base")
        for i, v in enumerate(values):
            rows.append(ResultRow(experiment, "random", i, treatment, n, f"{treatment}-{n}-{i}", "ok", top1=v,
                                  kind="base" if base else "transfer", source=None if base else treatment[0],
                                  target=direction, num_classes=classes))
    return RunResults("r", "h", 8, tuple(f"l{i}" for i in range(1, 9)), tuple(rows))


def _grids(cells, **kw):
    return build_grids(_rows(cells, **kw), "top1", pool=True)


# --------------------------------------------------------------------------- the statistics themselves


def test_t_quantiles_and_intervals_over_units():
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4) and t_quantile(1e9) == pytest.approx(1.96, abs=1e-3)
    d = over_units([1.0, 2.0, 3.0])
    assert d.value == 2.0 and d.half_width == pytest.approx(t_quantile(2) * 1.0 / math.sqrt(3))
    assert not over_units([1.0, 2.0]).determined and over_units([1.0, 2.0]).sd == pytest.approx(math.sqrt(0.5))
    w = welch([1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 1.0])
    va, vb = 1.0 / 3, (1 / 3) / 4
    assert w.half_width == pytest.approx(t_quantile((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)) * math.sqrt(va + vb))


@pytest.mark.parametrize("interval, effect, expected", [
    ((0.5, 2.0), 1.6, "reproduced"),       # excludes 0 in the paper's direction
    ((0.2, 0.9), 1.6, "reproduced"),       # ... even when smaller than the paper's effect
    ((-0.5, 0.9), 1.6, "contradicted"),    # holds 0 but excludes the paper's effect: clearly smaller
    ((-2.0, -0.1), 1.6, "contradicted"),   # the other sign
    ((-1.3, 2.0), 1.6, "inconclusive"),    # holds both 0 and the paper's effect
    ((-3.9, 6.4), 2.0, "inconclusive"),
    ((-2.0, -0.5), -1.0, "reproduced"),    # a negative effect: its direction is down
    ((-0.5, 0.5), -1.0, "contradicted"),
])
def test_four_valued_verdicts(interval, effect, expected):
    lo, hi = interval
    assert verdict(Difference((lo + hi) / 2, lo, hi, 3, 3), effect) == expected
    assert verdict(Difference(1.0, units=2), effect) == "not determined"


@pytest.mark.parametrize("interval, outcome", [((-0.5, 0.7), "holds"), ((-1.5, 2.0), "not shown"),
                                               ((0.5, 2.0), "not shown"), ((0.9, 2.0), "fails"),
                                               ((-3.0, -1.0), "fails")])
def test_equivalence_outcomes(interval, outcome):
    lo, hi = interval
    assert equivalence(Difference((lo + hi) / 2, lo, hi, 3, 3), 0.8) == outcome
    assert equivalence(Difference(0.0, units=1), 0.8) == "not determined"


def test_units_for_80_percent_power_match_the_t_test_tables():
    # one-sample t-test, two-sided 5%: d = 1 needs 10, d = 0.5 needs 34 (G*Power, Cohen's tables)
    assert units_for_effect(1.0, 1.0) == 10 and units_for_effect(2.0, 1.0) == 34
    assert units_for_effect(1.0, 0.5) == units_for_effect(2.0, 1.0)  # only the ratio matters
    assert units_for_effect(None, 1.0) is None and units_for_effect(1.0, 0.0) is None
    # two groups of units, d = 1: 17 per group
    assert units_for_effect(1.0, 1.0, two_groups=True) == 17
    # equivalence within +-m when the truth is 0: wider margins need fewer units
    few, many = units_for_equivalence(1.0, 2.0), units_for_equivalence(1.0, 0.5)
    assert few is not None and many is not None and few < many
    sim = _equivalence_rate(many, 1.0, 0.5)
    assert 0.8 <= sim <= 0.88  # the planner's n reaches 80% (a little more: n is an integer)


def _equivalence_rate(k: int, sd: float, margin: float, trials: int = 4000) -> float:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, sd, size=(trials, k))
    half = t_quantile(k - 1) * x.std(axis=1, ddof=1) / math.sqrt(k)
    m = x.mean(axis=1)
    return float(np.mean((m - half >= -margin) & (m + half <= margin)))


# --------------------------------------------------------------------------- coverage over correlated units


def _simulated(rng: random.Random, rho: float, units: int = 8, layers: int = 7, effect: float = 0.016) -> RunResults:
    """A run whose AnB+ networks share their unit's base network: within a unit their errors
    correlate (``rho``); the true boost over baseB is ``effect`` at every n."""
    rows = []
    for u in range(units):
        base = 0.6 + rng.gauss(0, 0.01)
        shared = rng.gauss(0, 0.01)
        rows.append(ResultRow("e", "random", u, "baseB", 0, f"b{u}", "ok", top1=base, kind="base", target="B",
                              num_classes=10))
        for n in range(1, layers + 1):
            noise = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.gauss(0, 0.01)
            rows.append(ResultRow("e", "random", u, "AnB+", n, f"p{u}-{n}", "ok", top1=base + effect + noise,
                                  kind="transfer", source="A", target="B", num_classes=10))
    return RunResults("sim", "h", 8, (), tuple(rows))


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9])
def test_intervals_over_units_cover_at_the_stated_level_when_networks_of_a_unit_correlate(rho):
    """2,000 simulated runs of 8 units x 7 layers: the boost's interval (Table 1 over every n,
    each unit's networks averaged against its own base first) covers the true effect 95% of
    the time whatever the correlation; pooling every network as if independent does not."""
    rng = random.Random(int(rho * 10) + 7)
    hits = pooled_hits = 0
    trials = 2000
    for _ in range(trials):
        results = _simulated(rng, rho)
        (grid,) = build_grids(results, "top1", pool=False)
        row = table1(grid, [(1, 7)])[0].boost_base
        hits += row.ci_low <= 0.016 <= row.ci_high
        base = grid.get("baseB", 0).by_unit  # every network against its own base, counted as independent
        each = [v - base[u] for n in range(1, 8) for u, v in grid.get("AnB+", n).by_unit.items()]
        pooled = over_units(each)
        pooled_hits += pooled.ci_low <= 0.016 <= pooled.ci_high
    assert 0.93 <= hits / trials <= 0.97
    if rho >= 0.9:
        assert pooled_hits / trials < 0.93  # the old arithmetic: networks of one unit counted as independent


# --------------------------------------------------------------------------- findings on hand-made records


def _specificity_cells(gaps: list[float], base: float = 0.9) -> dict:
    return {("baseB", 0): [base] * len(gaps), ("BnB", 7): [base] * len(gaps),
            ("AnB", 7): [base - g for g in gaps]}


@pytest.mark.parametrize("gaps, expected", [
    ([0.10, 0.11, 0.12], "reproduced"),
    ([0.001, -0.002, 0.0, 0.002, -0.001], "contradicted"),  # tightly 0: clearly smaller than the paper's drop
    ([0.20, -0.05, 0.10, -0.10], "inconclusive"),            # holds 0 and the paper's effect
    ([0.10, 0.11], "not determined"),                        # two units
])
def test_each_of_the_four_verdicts_from_hand_made_records(gaps, expected):
    result = judge(Specificity(), _grids(_specificity_cells(gaps)), PAPER)
    assert result.verdict == expected
    assert result.effect is not None and result.effect > 0.05  # the paper's AnB falls ~8 points at n = 7
    if expected == "inconclusive":
        assert result.units_needed is not None and result.units_needed > len(gaps)


@pytest.mark.parametrize("gaps, size", [
    ([0.020, 0.025, 0.030], "smaller"),                  # the direction holds at a fraction of the paper's size
    ([0.300, 0.310, 0.320], "larger"),
    ([0.09, 0.11, 0.13, 0.10, 0.12], "compatible"),     # the interval holds the paper's effect
    ([0.20, -0.05, 0.10, -0.10], None),                  # inconclusive: no size to speak of
])
def test_a_reproduced_effect_says_how_its_size_compares_with_the_papers(gaps, size):
    from transferbench.report import _finding_lines

    result = judge(Specificity(), _grids(_specificity_cells(gaps)), PAPER)
    assert result.size == size
    assert (result.verdict == "reproduced") == (size is not None)
    said = "\n".join(_finding_lines(result, ""))
    assert ("smaller than the paper's effect" in said) == (size == "smaller")
    assert ("larger than the paper's effect" in said) == (size == "larger")


@pytest.mark.parametrize("plus, outcome, expected", [
    ([0.900, 0.910, 0.905], "holds", "reproduced"),
    ([0.880, 0.935, 0.900], "not shown", "inconclusive"),
    ([0.950, 0.960, 0.955], "fails", "contradicted"),
])
def test_the_control_is_an_equivalence_test(plus, outcome, expected):
    cells = {("baseB", 0): [0.900, 0.910, 0.905], ("BnB+", 1): plus, ("AnB", 1): [0.8] * 3}
    result = judge(Control(), _grids(cells), PAPER, margin=0.01)  # 1% of headroom
    assert (result.equivalence, result.verdict) == (outcome, expected)


def test_an_invalidating_warning_makes_a_verdict_not_determined_and_a_caveat_does_not():
    grids = _grids(_specificity_cells([0.10, 0.11, 0.12]))
    incomplete = [CheckResult("completeness", "warn", "1 failed", "rerun", "random")]
    result = judge(Specificity(), grids, PAPER, incomplete)
    assert result.verdict == "not determined" and result.invalidated == ("completeness",)
    assert result.estimate.determined  # the numbers are still there, with the reason beside them
    chance = [CheckResult("chance", "warn", "AnB n=7 near chance", "check", "random"),
              CheckResult("completeness", "warn", "elsewhere", "rerun", "other experiment")]
    result = judge(Specificity(), grids, PAPER, chance)
    assert result.verdict == "reproduced" and result.caveats == ("chance",) and not result.invalidated


def test_the_shared_scale_makes_a_harder_task_comparable():
    """The same effect relative to headroom, on an easy task (10 classes, base .9) and a hard
    one (500 classes, base .3): the same verdict and shared-scale estimate, different points."""
    def run(base: float, classes: int, scale: float) -> tuple:
        gaps = [g * scale for g in (0.10, 0.11, 0.12)]
        r = judge(Specificity(), _grids(_specificity_cells(gaps, base), classes=classes), PAPER)
        return r.verdict, r.estimate.value, r.points.value

    easy = run(0.9, 10, (0.9 - 0.1) / 0.8)
    hard = run(0.3, 500, (0.3 - 0.002) / 0.8)
    assert easy[0] == hard[0] == "reproduced"
    assert easy[1] == pytest.approx(hard[1]) and easy[2] != pytest.approx(hard[2])
    assert "headroom" in SCALE
    assert same_depth(7, 8, 8) == 7 and same_depth(3, 4, 8) == 7 and same_depth(1, 4, 8) == 2


# --------------------------------------------------------------------------- stability


def test_a_claim_resting_on_near_equal_layers_is_labelled_unstable():
    """Specificity barely above noise at n = 1 and clearly at n = 2: whether features 'turn
    specific at n = 1' depends on which units were drawn."""
    n1 = [0.004, 0.0005, 0.003, 0.0002, 0.0035, 0.001]
    n2 = [0.030, 0.032, 0.028, 0.031, 0.029, 0.030]
    cells = {("baseB", 0): [0.9] * 6, ("BnB", 1): [0.9] * 6, ("BnB", 2): [0.9] * 6,
             ("AnB", 1): [0.9 - g for g in n1], ("AnB", 2): [0.9 - g for g in n2]}
    (grid,) = _grids(cells)
    spec = specific_layer(grid)
    assert spec.n == 1 and spec.stability is not None
    assert not spec.stability.stable and spec.stability.label.startswith("unstable (")
    clear = {**cells, ("AnB", 1): [0.9] * 6}  # nothing at n = 1: n = 2, every time
    (grid,) = _grids(clear)
    assert specific_layer(grid).n == 2 and specific_layer(grid).stability.label == "stable (100%)"


def test_stability_is_seeded_and_resamples_each_group():
    values = [0.1, -0.2, 0.3, 0.05, -0.1]
    first = stability([values], lambda g: verdict(over_units(g[0]), 0.2), resamples=200, seed=3)
    again = stability([values], lambda g: verdict(over_units(g[0]), 0.2), resamples=200, seed=3)
    assert first == again and first.resamples == 200
    assert stability([[]], lambda g: 0) is None


def test_power_table_marks_findings_on_another_scale_than_headroom():
    """A convergence finding's sd is a fraction of the training run: the planner's table must
    not print it as if it were % of headroom."""
    from rich.console import Console

    from transferbench.power import PowerRow, print_power

    rows = [PowerRow("specificity", ("random",), "effect", 3, 0.05, 0.13, 4, 2, 40, 1.0, None, "reproduced"),
            PowerRow("faster", ("raghu",), "effect", 6, 0.03, None, None, None, None, None, None, "reproduced",
                     scale="the training run")]
    console = Console(record=True, width=200)
    print_power(console, rows)
    text = console.export_text()
    assert "5.0%" in text and "5.0%*" not in text
    assert "3.0%*" in text
    assert "*: % of the training run, not of headroom." in " ".join(text.split())


def test_a_finding_whose_headroom_is_another_networks_says_so_on_its_line():
    """The footer defines the shared scale by the base's distance from chance; a finding that
    divides by another network's (lee2022: the fully fine-tuned one) must name it on its lines,
    every installed findings plugin's classes included."""
    from transferbench.findings import FindingResult
    from transferbench.report import _finding_lines
    from transferbench.runreport import registered_findings

    est = Difference(0.25, 0.2, 0.3, 4, 4)
    mine = FindingResult("first block", "claim", "reproduced", estimate=est, headroom_of="the fully fine-tuned network")
    base = FindingResult("specificity", "claim", "reproduced", estimate=est)
    assert "(headroom: the fully fine-tuned network's distance from chance)" in "\n".join(_finding_lines(mine, ""))
    assert "headroom:" not in "\n".join(_finding_lines(base, ""))
    assert "unless a finding names another network" in SCALE
    # the plugins that divide by another network than the base declare it
    plugins = registered_findings()
    for name in ("lee2022", "kumar2022"):
        assert all(f.headroom_of for f in plugins[name].findings()), name
