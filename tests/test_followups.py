"""The follow-up papers' findings plugins on hand-made results: each finding on made-up
networks for every verdict it can give (reproduced, contradicted, inconclusive, not
determined), and their contract."""

from __future__ import annotations

import pytest

from transferbench import judge, testing
from transferbench.analysis import build_grids
from transferbench.results import ResultRow, RunResults
from transferbench_plugins.zhang2019 import FirstLayerCritical, RerandomizationWorse, UpperLayersRobust, Zhang2019


def _results(cells: list[tuple]) -> RunResults:
    """(treatment, protocol, n, per-seed top-1 values) -> one row per network, 10 classes,
    everything trained and evaluated on half B (a unit is a split seed)."""
    rows = []
    for treatment, protocol, n, values in cells:
        for seed, top1 in enumerate(values):
            base = protocol is None
            rows.append(ResultRow("reset", "random", seed, treatment, n, f"{treatment}-{n}-{seed}", "ok", top1=top1,
                                  top5=1.0, top1_best_k=top1, kind="base" if base else "transfer",
                                  source=None if base else "B", target="B", protocol=protocol, num_classes=10))
    return RunResults("hand-made", "0" * 16, 8, tuple(f"l{i}" for i in range(1, 9)), tuple(rows))


def _zhang(reinit: dict[int, list[float]], rerandom: dict[int, list[float]] | None = None,
           base: list[float] | None = None) -> dict:
    base = base or [0.90, 0.91, 0.89, 0.90]
    cells = [("baseB", None, 0, base)] + [("reinit", "reinit_eval", n, v) for n, v in reinit.items()]
    cells += [("rerandom", "rerandomize_eval", n, v) for n, v in (rerandom or {}).items()]
    grids = build_grids(_results(cells))
    return {f.name: judge(f, grids, (), margin=f.margin, resamples=20) for f in Zhang2019().findings()}


def test_zhang2019_honours_the_findings_contract(tmp_path):
    testing.check_finding(Zhang2019, tmp_path)


def test_first_layer_critical_for_every_verdict():
    down = _zhang({1: [0.10, 0.11, 0.10, 0.12]})[FirstLayerCritical.name]  # to chance (0.10): all of it
    assert down.verdict == "reproduced" and down.effect == 1.0
    part = _zhang({1: [0.50, 0.52, 0.48, 0.51]})[FirstLayerCritical.name]
    assert part.verdict == "reproduced"  # excludes 0: reproduced, though far from chance (the row says so)
    up = _zhang({1: [0.95, 0.96, 0.95, 0.96]})[FirstLayerCritical.name]
    assert up.verdict == "contradicted"  # better than the base: the other sign
    noisy = _zhang({1: [0.10, 0.95, 0.30, 0.99]})[FirstLayerCritical.name]
    assert noisy.verdict == "inconclusive"
    missing = _zhang({2: [0.5, 0.5, 0.5, 0.5]})[FirstLayerCritical.name]
    assert missing.verdict == "not determined" and "n=1" in missing.run
    few = _zhang({1: [0.1, 0.1]}, base=[0.9, 0.9])[FirstLayerCritical.name]
    assert few.verdict == "not determined"  # two units: no interval


def test_upper_layers_robust_is_an_equivalence_within_its_stated_margin():
    flat = [0.90, 0.91, 0.89, 0.90]
    held = _zhang({n: flat for n in range(1, 8)})[UpperLayersRobust.name]
    assert held.verdict == "reproduced" and held.equivalence == "holds" and held.margin == 0.10
    assert "n=6-7" in held.run  # the top third of n = 1..7
    lost = _zhang({n: [0.3, 0.31, 0.29, 0.3] for n in range(1, 8)})[UpperLayersRobust.name]
    assert lost.verdict == "contradicted" and lost.equivalence == "fails"
    wide = _zhang({n: [0.90, 0.50, 0.89, 0.70] for n in range(1, 8)})[UpperLayersRobust.name]
    assert wide.verdict == "inconclusive" and wide.equivalence == "not shown"
    assert _zhang({1: flat})[UpperLayersRobust.name].verdict == "not determined"  # one layer: no top third


def test_rerandomisation_worse_is_judged_on_its_direction():
    reinit = {n: [0.85, 0.86, 0.84, 0.85] for n in (1, 2)}
    worse = _zhang(reinit, {n: [0.12, 0.10, 0.11, 0.13] for n in (1, 2)})[RerandomizationWorse.name]
    assert worse.verdict == "reproduced" and worse.effect is None
    better = _zhang(reinit, {n: [0.89, 0.90, 0.88, 0.89] for n in (1, 2)})[RerandomizationWorse.name]
    assert better.verdict == "contradicted"
    mixed = _zhang(reinit, {n: [0.40, 0.95, 0.60, 0.99] for n in (1, 2)})[RerandomizationWorse.name]
    assert mixed.verdict == "inconclusive"
    assert _zhang(reinit)[RerandomizationWorse.name].verdict == "not determined"  # no rerandomize_eval


@pytest.mark.parametrize("protocol", ["reinit_eval", "rerandomize_eval"])
def test_the_reset_protocols_honour_their_contract(protocol, tmp_path):
    from transferbench.plugins import get_registry

    testing.check_protocol(get_registry().get("protocol", protocol).factory, tmp_path)


def test_rerandomize_eval_is_reinit_eval_with_a_fresh_draw():
    from transferbench_plugins.protocols import ReinitEval, ReinitEvalParams, RerandomizeEval

    fresh = RerandomizeEval().actions(3, 8)
    assert fresh == ReinitEval(ReinitEvalParams(reset="random")).actions(3, 8)
    assert not fresh[2].copy and not fresh[2].from_init and all(a.copy and not a.train for i, a in enumerate(fresh)
                                                                 if i != 2)


def test_plan_costs_an_evaluate_only_network_one_evaluation(fake_plugins):
    from transferbench.cohort_cost import estimate_cohorts
    from transferbench.compute import estimate_compute
    from transferbench.config import parse_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve

    from .conftest import tiny_config

    exp = {"name": "reset", "split": {"name": "parity", "seeds": [0]}, "bases": ["B"], "layers": [1, 2],
           "treatments": [{"name": "reinit", "source": "B", "target": "B", "protocol": "reinit_eval"}]}
    config = parse_config(tiny_config(experiments=[exp]))
    components = resolve(config)
    plan = build_plan(config, components)
    est = estimate_compute(config, components, plan, 20.0)
    base_only = estimate_compute(config, components, build_plan(
        parse_config(tiny_config(experiments=[{**exp, "treatments": []}])), components), 20.0)
    assert est.networks == 3 and est.train_images == base_only.train_images  # the resets train nothing
    assert est.eval_images > base_only.eval_images
    assert estimate_cohorts(config, components, plan, 20.0) is not None  # it failed on n = L before


# --------------------------------------------------------------------------- neyshabur2020


def _neyshabur(clean: list[float] | None, shuffled: list[float] | None, base: float = 0.6) -> dict:
    from transferbench_plugins.neyshabur2020 import Neyshabur2020

    rows = []
    for experiment, plus in (("clean", clean), ("shuffled", shuffled)):
        if plus is None:
            continue
        for seed, value in enumerate(plus):
            for treatment, n, top1 in (("baseB", 0, base + 0.01 * (seed % 2)), ("AnB+", 7, value)):
                rows.append(ResultRow(experiment, "random", seed, treatment, n, f"{experiment}-{treatment}-{seed}",
                                      "ok", top1=top1, top5=1.0, top1_best_k=top1,
                                      kind="base" if n == 0 else "transfer", source=None if n == 0 else "A",
                                      target="B", protocol=None if n == 0 else "finetune", num_classes=10))
    grids = build_grids(RunResults("hand-made", "0" * 16, 8, tuple(f"l{i}" for i in range(1, 9)), tuple(rows)))
    return {f.name: judge(f, grids, (), resamples=20) for f in Neyshabur2020().findings()}


def test_neyshabur2020_honours_the_findings_contract(tmp_path):
    from transferbench_plugins.neyshabur2020 import Neyshabur2020

    testing.check_finding(Neyshabur2020, tmp_path)


def test_shuffled_benefit_for_every_verdict():
    name = "benefit on shuffled targets"
    assert _neyshabur(None, [0.70, 0.71, 0.70, 0.72])[name].verdict == "reproduced"
    assert _neyshabur(None, [0.50, 0.51, 0.50, 0.52])[name].verdict == "contradicted"
    assert _neyshabur(None, [0.40, 0.80, 0.55, 0.75])[name].verdict == "inconclusive"
    assert _neyshabur(None, [0.7, 0.7])[name].verdict == "not determined"  # two units
    assert "not in this run" in _neyshabur([0.7] * 3, None)[name].run


def test_smaller_benefit_when_shuffled_compares_two_sets_of_units():
    name = "smaller benefit when shuffled"
    found = _neyshabur([0.80, 0.81, 0.80, 0.82], [0.65, 0.66, 0.65, 0.67])[name]
    assert found.verdict == "reproduced" and found.sizes == (4, 4)
    assert _neyshabur([0.65, 0.66, 0.65, 0.67], [0.80, 0.81, 0.80, 0.82])[name].verdict == "contradicted"
    assert _neyshabur([0.60, 0.90, 0.70, 0.80], [0.70, 0.75, 0.60, 0.85])[name].verdict == "inconclusive"
    assert _neyshabur(None, [0.7] * 4)[name].verdict == "not determined"


def _basin(finetuned: list[float] | None, scratch: list[float] | None, base: float = 0.6) -> dict:
    """baseB per unit (10 classes: headroom about 0.5) and the top-1 barriers of the two pairs."""
    from transferbench.results import EvaluationRow
    from transferbench_plugins.neyshabur2020 import Neyshabur2020

    units = max(len(finetuned or ()), len(scratch or ()))
    rows = tuple(ResultRow("basin", "random", seed, "baseB", 0, f"baseB-{seed}", "ok", top1=base, top5=1.0,
                           top1_best_k=base, kind="base", target="B", num_classes=10) for seed in range(units))
    evaluations = tuple(EvaluationRow("basin", seed, label, 7, "B", "loss_barrier",
                                      {"top1_barrier": v, "loss_barrier": v, "end_loss": 1.0, "end_top1": base})
                        for label, values in (("finetuned", finetuned), ("scratch", scratch))
                        for seed, v in enumerate(values or ()))
    results = RunResults("hand-made", "0" * 16, 8, tuple(f"l{i}" for i in range(1, 9)), rows,
                         evaluations=evaluations)
    return {f.name: judge(f, build_grids(results), (), resamples=20) for f in Neyshabur2020().findings()}


def test_fine_tuned_networks_in_one_basin_is_an_equivalence_within_its_stated_margin():
    name = "fine-tuned networks in one basin"
    # headroom 0.5: a barrier of 0.01 is 2% of it, inside the 5% margin; 0.2 is 40%, outside
    assert _basin([0.010, 0.012, 0.008, 0.011], None)[name].verdict == "reproduced"
    assert _basin([0.20, 0.21, 0.19, 0.20], None)[name].verdict == "contradicted"
    assert _basin([0.00, 0.06, 0.01, 0.05], None)[name].verdict == "inconclusive"
    assert _basin([0.01, 0.01], None)[name].verdict == "not determined"  # two units
    assert _basin(None, [0.2, 0.2, 0.2])[name].verdict == "not determined"  # no fine-tuned pair


def test_scratch_barrier_larger_is_judged_per_unit_on_its_direction():
    name = "scratch networks: a larger barrier"
    assert _basin([0.01, 0.02, 0.01, 0.01], [0.30, 0.25, 0.35, 0.28])[name].verdict == "reproduced"
    assert _basin([0.30, 0.25, 0.35, 0.28], [0.01, 0.02, 0.01, 0.01])[name].verdict == "contradicted"
    assert _basin([0.10, 0.30, 0.05, 0.20], [0.20, 0.10, 0.25, 0.05])[name].verdict == "inconclusive"
    assert _basin([0.01] * 4, None)[name].verdict == "not determined"
    assert "not in this run" in _neyshabur([0.7] * 3, None)[name].run
