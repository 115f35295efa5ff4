"""Validation by regret (transferbench/regret.py) on hand-made sweeps, regrets computed by hand."""

from __future__ import annotations

import math

import pytest

from transferbench.regret import Advice, Regime, Sweep, fixed, heuristics, overall, regret, within_noise

UNITS = ("u1", "u2", "u3")
T2 = 4.302652729911275  # Student's t, 2 degrees of freedom, 95% two-sided


def _sweep(table: dict[Regime, tuple[float, ...]], cost: dict[Regime, float] | None = None, L: int = 4) -> Sweep:
    acc = {r: dict(zip(UNITS, values)) for r, values in table.items()}
    return Sweep("t", acc, cost or {r: 1.0 for r in table}, L)


F, P, S = "frozen", "finetune", "scratch"
TABLE = {
    Regime(F, 1): (.50, .52, .54), Regime(F, 2): (.60, .62, .64), Regime(F, 3): (.40, .42, .44),
    Regime(P, 1): (.70, .71, .72), Regime(P, 2): (.74, .76, .78), Regime(P, 3): (.73, .74, .78),
    Regime(S): (.65, .66, .67),
}
COST = {**{Regime(F, n): 1 - 0.2 * n for n in (1, 2, 3)}, **{Regime(P, n): 1.0 for n in (1, 2, 3)}, Regime(S): 1.0}


def test_the_best_regime_is_the_best_mean_and_the_regret_is_paired_by_unit():
    sweep = _sweep(TABLE, COST)
    assert sweep.best == Regime(P, 2) and sweep.total_cost == pytest.approx(5.8)
    row = regret(sweep, fixed("fine-tune everything", Regime(P, 3), sweep))
    # best - chosen per unit: 1, 2, 0 points; mean 1, sd 1, half-width t(2) / sqrt(3)
    assert [row.per_unit[u] for u in UNITS] == pytest.approx([1.0, 2.0, 0.0])
    assert row.regret.value == pytest.approx(1.0)
    assert row.regret.ci_low == pytest.approx(1 - T2 / math.sqrt(3))
    assert row.regret.ci_high == pytest.approx(1 + T2 / math.sqrt(3))
    assert row.fraction == pytest.approx(1 / 5.8) and row.choices == {Regime(P, 3): 3} and not row.reads_sweep


def test_the_fixed_heuristics_and_today_s_recommendation_on_the_full_sweep():
    sweep = _sweep(TABLE, COST)
    rows = {r.advice: r for r in (regret(sweep, a) for a in heuristics(sweep))}
    assert rows["fine-tune everything"].regret.value == pytest.approx(1.0)
    half = rows["freeze the first half"]  # frozen n = 4 // 2 = 2: 14 points in every unit
    assert half.regret.value == pytest.approx(14.0) and half.regret.ci_low == pytest.approx(14.0)
    assert half.fraction == pytest.approx(0.6 / 5.8)
    assert rows["linear probe on the penultimate layer"].regret.value == pytest.approx(34.0)
    # frozen n=2 is the only depth within noise of the best frozen one; fine-tuning beats it
    # there by 14 points in every unit: today's advice is finetune n=2, the best, having read it all
    today = next(r for name, r in rows.items() if name.startswith("the deepest n"))
    assert today.choices == {Regime(P, 2): 3} and today.regret.value == pytest.approx(0.0)
    assert today.fraction == pytest.approx(1.0) and today.reads_sweep


def test_today_s_recommendation_says_scratch_when_every_transfer_loses_beyond_noise():
    table = {Regime(F, 1): (.50, .51, .53), Regime(F, 2): (.40, .42, .41), Regime(F, 3): (.30, .31, .33),
             Regime(P, 1): (.55, .57, .56), Regime(P, 2): (.50, .50, .52), Regime(P, 3): (.45, .46, .44),
             Regime(S): (.70, .72, .71)}
    sweep = _sweep(table)
    advice = within_noise(sweep)
    assert set(advice.choice.values()) == {Regime(S)} and regret(sweep, advice).regret.value == pytest.approx(0.0)


def test_an_advice_per_unit_can_do_better_than_the_best_on_average_in_a_unit():
    sweep = _sweep(TABLE, COST)
    advice = Advice("probe", {"u1": Regime(P, 2), "u2": Regime(P, 1), "u3": Regime(P, 3)},
                    {"u1": 0.5, "u2": 1.16, "u3": 0.0})
    row = regret(sweep, advice)
    # u1: 0; u2: .76 - .71 = 5 points; u3: .78 - .78 = 0
    assert [row.per_unit[u] for u in UNITS] == pytest.approx([0.0, 5.0, 0.0])
    assert row.fraction == pytest.approx((0.5 + 1.16 + 0.0) / 3 / 5.8)
    assert row.choices == {Regime(P, 2): 1, Regime(P, 1): 1, Regime(P, 3): 1}
    worse = _sweep({**TABLE, Regime(P, 3): (.80, .74, .70)}, COST)  # best still P2 (mean .76 vs .7467)
    assert regret(worse, advice).per_unit["u3"] == pytest.approx(8.0)
    assert regret(worse, fixed("x", Regime(P, 3), worse)).per_unit["u1"] == pytest.approx(-6.0)


def test_overall_pools_the_units_of_every_target():
    sweep = _sweep(TABLE, COST)
    a = regret(sweep, fixed("fine-tune everything", Regime(P, 3), sweep))  # 1, 2, 0
    b = regret(sweep, fixed("fine-tune everything", Regime(P, 1), sweep))  # 4, 5, 6
    both = overall([a, b])
    assert both.regret.value == pytest.approx(3.0) and both.regret.units == 6
    sd = math.sqrt(sum((v - 3) ** 2 for v in (1, 2, 0, 4, 5, 6)) / 5)
    assert both.regret.sd == pytest.approx(sd)
    assert both.fraction == pytest.approx(1 / 5.8) and both.choices == {Regime(P, 3): 3, Regime(P, 1): 3}


def test_regret_refuses_what_it_cannot_read():
    sweep = _sweep(TABLE, COST)
    with pytest.raises(ValueError, match="did not train"):
        regret(sweep, fixed("x", Regime("surgical", 2), _sweep({**TABLE, Regime("surgical", 2): (.1, .1, .1)})))
    with pytest.raises(ValueError, match="says nothing for unit"):
        regret(sweep, Advice("x", {"u1": Regime(S)}, {"u1": 1.0}))
    with pytest.raises(ValueError, match="no cost"):
        Sweep("t", {Regime(S): {"u1": 0.5}}, {}, 4)
    with pytest.raises(ValueError, match="unknown regime kind"):
        Regime("everything")
    partial = Sweep("t", {Regime(S): {"u1": .5}, Regime(F, 1): {"u2": .5}}, {Regime(S): 1, Regime(F, 1): 1}, 4)
    with pytest.raises(ValueError, match="no unit where every regime trained"):
        regret(partial, fixed("x", Regime(S), partial))


def test_the_leave_one_out_reference_is_chosen_without_the_unit_it_is_read_on():
    # two regimes within noise of each other: the best by the mean of all three units is R2, but
    # without u2 (or u3) it is R1: choosing the reference on the same units flatters it
    r1, r2 = Regime(P, 1), Regime(P, 2)
    sweep = _sweep({r1: (.81, .70, .75), r2: (.70, .80, .77)})
    assert sweep.best == r2
    assert [sweep.best_without(u) for u in UNITS] == [r2, r1, r1]
    row = regret(sweep, fixed("r2", r2, sweep))
    assert [row.per_unit[u] for u in UNITS] == pytest.approx([0.0, 0.0, 0.0])
    assert [row.loo_per_unit[u] for u in UNITS] == pytest.approx([0.0, -10.0, -2.0])
    assert row.loo.value == pytest.approx(-4.0)
    other = regret(sweep, fixed("r1", r1, sweep))
    assert [other.per_unit[u] for u in UNITS] == pytest.approx([-11.0, 10.0, 2.0])
    assert [other.loo_per_unit[u] for u in UNITS] == pytest.approx([-11.0, 0.0, 0.0])
    pooled = overall([row, row])
    assert pooled.loo.units == 6 and pooled.loo.value == pytest.approx(-4.0)
    one = Sweep("t", {r1: {"u": .5}, r2: {"u": .6}}, {r1: 1.0, r2: 1.0}, 4)
    assert regret(one, fixed("r1", r1, one)).loo is None
