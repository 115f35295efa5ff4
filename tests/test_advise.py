"""`transferbench recommend`: the sweep a config describes, the compute model, the advice
(which never reads a result of the sweep it is validated against) and the regret table."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import tiny_config
from transferbench.advise import (
    ADVICE,
    ALPHA,
    AUTO_RGN,
    HALVING,
    PRUNED,
    SOURCES,
    SWEEP,
    TRANSRATE,
    advise,
    depart,
    read_sweep_plan,
    train_flops,
)
from transferbench.api import prepare
from transferbench.cli import main
from transferbench.errors import ConfigError
from transferbench.reading import ProtocolReading
from transferbench.regret import Regime
from transferbench.store import JobCache, RunStore

TREATMENTS = ["AnB", "AnB+", {"name": "surgical", "source": "A", "target": "B", "protocol": "surgical_head"},
              {"name": "lpft", "source": "A", "target": "B", "protocol": "lp_ft"}]


def _config(seeds=(0,), layers=(1, 3), **exp):
    return tiny_config(experiments=[{"name": "t", "split": {"name": "parity", "seeds": list(seeds)},
                                     "bases": ["A", "B"], "layers": list(layers), "treatments": TREATMENTS, **exp}],
                       train={"lr": 0.1, "batch_size": 32, "steps": 8, "weight_decay": 0.0},
                       eval={"best_k": 1, "every": 8})


def test_the_sweep_of_a_recommend_config(fake_plugins):
    sweep = read_sweep_plan(prepare(_config(seeds=(0, 1), layers=(1, 2, 3))))
    unit = ("t", 0, "B")
    regimes = sorted(c.regime for c in sweep.of(unit))
    assert regimes == sorted([Regime("frozen", n) for n in (1, 2, 3)] + [Regime("finetune", n) for n in (1, 2, 3)]
                             + [Regime("surgical", n) for n in (1, 2, 3)] + [Regime("lp_ft", 3), Regime("scratch")])
    assert sweep.units == [("t", 0, "B"), ("t", 1, "B")]
    assert sweep.sources[unit].kind == "base" and sweep.sources[unit].target == "A"
    lp_ft = [j.n for j in sweep.plan.jobs.values() if j.protocol_spec and j.protocol_spec["name"] == "lp_ft"]
    assert lp_ft == [3, 3]  # n = L-1 only, in each unit
    assert set(sweep.sources_plan().jobs) == {j.id for j in sweep.sources.values()}


def test_a_target_that_is_not_a_sweep_is_refused_with_its_key(fake_plugins):
    with pytest.raises(ConfigError, match="one source half into one target half"):
        read_sweep_plan(prepare(_config(treatments=["AnB", "BnA"])))
    with pytest.raises(ConfigError, match="random_frozen is not a regime"):
        read_sweep_plan(prepare(_config(treatments=["AnB", {"name": "r", "source": "A", "target": "B",
                                                               "protocol": "random_frozen"}])))
    with pytest.raises(ConfigError, match="no base network of the target half"):
        read_sweep_plan(prepare(_config(bases=["A"])))


def test_train_flops_count_the_backward_pass_above_what_is_frozen_phase_by_phase():
    from transferbench_plugins.protocols import Frozen, LpFt

    prefix = [0.0, 1.0, 2.0, 3.0, 4.0]  # GFLOP through layers 1..k
    frozen = ProtocolReading.of(Frozen(), 2, 4)  # forward 4, backward 2 x (4 - 2)
    assert train_flops(frozen, 10, 8, prefix) == pytest.approx(10 * 8 * (4 + 4) * 1e9)
    base = ProtocolReading.of(None, 0, 4)
    assert train_flops(base, 10, 8, prefix) == pytest.approx(10 * 8 * (4 + 8) * 1e9)
    lpft = ProtocolReading.of(LpFt(), 3, 4)  # 5 steps of the head alone (4 + 2), then 5 of all (4 + 8)
    assert train_flops(lpft, 10, 8, prefix) == pytest.approx((5 * 8 * 6 + 5 * 8 * 12) * 1e9)


def test_recommend_validate_and_the_advice_never_reads_the_sweep(fake_plugins, tmp_path, monkeypatch, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_config(layers=(3,))))
    out = tmp_path / "out"
    assert main(["recommend", str(path), "--out", str(out), "--validate"]) == 0
    printed = capsys.readouterr().out
    assert "regret against the sweep's best regime" in printed and "fine-tune everything" in printed
    assert "Target (mean regret <= 1.0 point" in printed
    for row in (AUTO_RGN, TRANSRATE, PRUNED):
        assert row in printed
    first = json.loads((out / "advice.json").read_text())
    assert (out / SWEEP / "plan.json").is_file() and (out / SOURCES / "plan.json").is_file()
    # each selector chose by its own signal, among the regimes the sweep has
    (rgn,), (transrate,), (pruned,) = (first["selectors"][name] for name in (AUTO_RGN, TRANSRATE, PRUNED))
    assert rgn["choice"] == "surgical k=3" and len(rgn["signal"]) == 4  # the sweep's one k; an RGN per layer
    assert transrate["choice"] == "frozen n=3" and list(transrate["signal"]) == ["3"]  # the sweep's one frozen n
    assert 0 < rgn["flops"] < first["units"][0]["sweep_flops"] and pruned["flops"] > 0

    # --json: the same run as one document on stdout (the sweep is resumed, not retrained)
    assert main(["recommend", str(path), "--out", str(out), "--validate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "transferbench.recommend/1" and doc["advice"]["units"] == first["units"]
    assert [r["advice"] for r in doc["validation"]["t"]][:5] == [ADVICE, HALVING, PRUNED, AUTO_RGN, TRANSRATE]
    assert doc["targets"][0]["units"][0]["choice"] == first["units"][0]["choice"]
    assert any(line.startswith("Target (mean regret") for line in doc["verdict"])
    # the pooled table of finished runs (benchmarks/recommend_pooled.py) reads the same rows back
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "recommend_pooled", Path(__file__).resolve().parents[1] / "benchmarks" / "recommend_pooled.py")
    pooled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pooled)
    assert pooled.main([str(path), str(out)]) == 0
    table = capsys.readouterr().out
    for row in doc["validation"]["all"]:
        assert f"{row['advice']} | {row['regret']['value']:+.2f}" in table

    # every result of the sweep poisoned, every read of any store spied on: the advice again
    for record in (out / SWEEP / "records").glob("*.json"):
        doc = json.loads(record.read_text())
        doc.update(top1=0.0, top1_best_k=0.0)
        record.write_text(json.dumps(doc))
    prepared = prepare(str(path))
    sweep = read_sweep_plan(prepared)
    sources = {j.id for j in sweep.sources.values()}
    read: list[str] = []
    for cls, name in ((RunStore, "read_record"), (RunStore, "load_checkpoint"), (RunStore, "has_result"),
                      (JobCache, "fetch")):
        real = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, job_id, *a, _real=real, **k: (read.append(job_id),
                                                                                   _real(self, job_id, *a, **k))[1])
    from rich.console import Console

    again = advise(prepared, sweep, out, Console(quiet=True))
    assert read and set(read) <= sources, "the advice read a network that is not a source"
    assert json.loads((out / "advice.json").read_text())["units"] == first["units"]
    assert json.loads((out / "advice.json").read_text())["selectors"] == first["selectors"]
    assert again.choice[("t", 0, "B")] == Regime(*_parse(first["units"][0]["choice"]))
    # the spy sees a read of the sweep when there is one
    from transferbench.advise import Costs, sweeps_of

    read.clear()
    sweeps_of(sweep, RunStore(out / SWEEP), Costs(prepared.config, prepared.components, sweep))
    assert set(read) - sources


def _parse(label: str) -> tuple:
    kind, _, n = label.partition(" ")
    return (kind, int(n.split("=")[1])) if n else (kind,)


def test_a_target_with_a_weights_file_as_its_source(fake_plugins, tmp_path):
    import torch
    from safetensors.torch import save_file

    from tests.fakes import MLP

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in MLP().build(8, (12,)).state_dict().items()}
    save_file(state, str(tmp_path / "src.safetensors"))
    treatments = [{"name": n, "source": "X", "target": "all", "protocol": p}
                  for n, p in (("XnB", "frozen"), ("XnB+", "finetune"), ("surgical", "surgical"), ("lpft", "lp_ft"))]
    sweep = read_sweep_plan(prepare(_config(treatments=treatments, bases=["all"],
                                            source={"checkpoint": str(tmp_path / "src.safetensors")})))
    unit = ("t", 0, "all")
    assert sweep.sources == {} and {c.regime.kind for c in sweep.of(unit)} == {
        "frozen", "finetune", "surgical", "lp_ft", "scratch"}
    loaded = sweep.source_state(unit, RunStore(tmp_path / "unused"))
    assert loaded is not None and all(torch.equal(loaded[k], state[k]) for k in state)


def test_the_departure_rule_needs_a_lead_beyond_the_noise_of_two_scores():
    from statistics import NormalDist

    scratch, shallow = Regime("scratch"), Regime("finetune", 1)
    # z at 0.05 over 2 challengers: 2.2414; the noise of .80 against .85 on m examples
    z = NormalDist().inv_cdf(1 - ALPHA / 4)
    assert z == pytest.approx(2.2414, abs=1e-4)
    chosen, margin = depart(0.80, {scratch: 0.85, shallow: 0.70}, 100)
    assert chosen is None and margin == pytest.approx(2.2414 * (0.0016 + 0.001275) ** 0.5, abs=1e-4)  # .1202 > .05
    chosen, margin = depart(0.80, {scratch: 0.85, shallow: 0.70}, 1000)
    assert chosen == scratch and margin == pytest.approx(0.0380, abs=1e-4)  # .05 > .0380
    # a diverged challenger is out, but still counts in the Bonferroni correction
    assert depart(0.80, {scratch: None, shallow: 0.86}, 1000)[0] == shallow
    assert depart(0.80, {scratch: None}, 1000) == (None, float("inf"))
    # a lead exactly at the margin is not evidence
    assert depart(0.5, {scratch: 0.5}, 10)[0] is None


def test_the_advice_never_reads_an_eval_example_before_it_chooses(fake_plugins, tmp_path, monkeypatch):
    """Every eval example poisoned (labels rotated): the advice's short trainings, its evidence,
    its choices and every selector's are the same; only the handed-over network's top-1 moves."""
    from rich.console import Console

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_config(layers=(1, 2, 3))))
    clean = advise(prepared := prepare(str(path)), read_sweep_plan(prepared), tmp_path / "a", Console(quiet=True))
    first = json.loads((tmp_path / "a" / "advice.json").read_text())

    poisoned = prepare(str(path))
    data = poisoned.components.data
    real = data.load
    asked: list[str] = []

    def load(split):
        asked.append(split)
        ds = real(split)
        return ds.map(lambda row: {"label": (row["label"] + 2) % 8}) if split == "eval" else ds

    monkeypatch.setattr(data, "load", load)
    again = advise(poisoned, read_sweep_plan(poisoned), tmp_path / "a", Console(quiet=True))
    second = json.loads((tmp_path / "a" / "advice.json").read_text())
    assert "eval" in asked  # the spy sees the handed-over network's evaluation
    assert second["probes"] == first["probes"] and second["selectors"] == first["selectors"]
    assert [u["evidence"] for u in second["units"]] == [u["evidence"] for u in first["units"]]
    assert again.choice == clean.choice
    unit = ("t", 0, "B")
    assert again.accuracy[unit] != clean.accuracy[unit]
    # the evidence names the default and its challengers, scored on the held-out training examples
    evidence = first["units"][0]["evidence"]
    # (L = 4: the default copies layers 1..L-2 = 2)
    assert evidence["default"] == "finetune n=2" and set(evidence["challengers"]) == {"scratch", "finetune n=1"}
    assert 0 < evidence["held_out"] < 100


def test_the_advice_keeps_the_default_unless_a_challenger_clearly_beats_it(fake_plugins):
    """The anchored rule on stub short trainings: only the regimes that learn every layer and
    copy fewer layers challenge; a clear lead departs, a small one or a faster regime's does not."""
    from transferbench.advise import _anchored
    from transferbench.holdout import HoldoutSource

    prepared = prepare(_config(layers=(1, 2, 3)))
    sweep = read_sweep_plan(prepared)
    unit = ("t", 0, "B")
    pool = sweep.of(unit)
    held = HoldoutSource(prepared.components.data, 1 / 6, 0)

    class Stub:
        def __init__(self, scores):
            self.scores, self.asked = scores, []

        def top1(self, c, rung, fraction):
            self.asked.append(c.regime)
            return self.scores.get(str(c.regime), 0.5)

    class Costs:
        def of(self, job, fraction=1.0):
            return fraction

    # every frozen, surgical and LP-FT regime scores 1.0 in its short training: none is a challenger
    fast = {str(c.regime): 1.0 for c in pool if c.regime.kind in ("frozen", "surgical", "lp_ft")}
    # L = 4: the default is finetune n = L-2 = 2; finetune n=3 copies more layers: no challenger
    stub = Stub({**fast, "finetune n=3": 1.0, "finetune n=2": 0.60, "finetune n=1": 0.70})
    pick, spent, evidence = _anchored(pool, stub, Costs(), sweep.num_layers, held)
    assert sorted(map(str, stub.asked)) == ["finetune n=1", "finetune n=2", "scratch"]
    assert pick.regime == Regime("finetune", 2) and not evidence["departed"]  # +10 points on 28 examples: noise
    assert spent == pytest.approx(3 * 0.25)
    stub = Stub({"finetune n=2": 0.30, "scratch": 0.95})
    pick, _, evidence = _anchored(pool, stub, Costs(), sweep.num_layers, held)
    assert pick.regime == Regime("scratch") and evidence["departed"] and evidence["margin"] < 0.65
    stub = Stub({"finetune n=2": None, "finetune n=1": 0.4, "scratch": 0.3})  # the default diverged
    assert _anchored(pool, stub, Costs(), sweep.num_layers, held)[0].regime == Regime("finetune", 1)
    # a sweep without finetune at L-2 starts from the deepest n below it (or the shallowest)
    no_two = [c for c in pool if c.regime != Regime("finetune", 2)]
    assert _anchored(no_two, Stub({}), Costs(), sweep.num_layers, held)[2]["default"] == "finetune n=1"
    no_finetune = [c for c in pool if c.regime.kind != "finetune"]
    assert _anchored(no_finetune, Stub({}), Costs(), sweep.num_layers, held) is None


def test_a_source_that_breaks_fine_tuning_sends_the_advice_elsewhere_and_a_failed_choice_is_said(
        fake_plugins, tmp_path, capsys):
    """A weights file whose hidden layers are scaled by 1e30: every regime that copies them diverges
    in its short training, so the advice leaves the default for scratch; and when the choice's own
    full training fails, the unit says so and is left out of the expected top-1 (no crash)."""
    import torch
    from safetensors.torch import save_file

    from tests.fakes import MLP

    torch.manual_seed(0)
    state = {k: (v * 1e30 if not k.startswith("out") and k.endswith("weight") else v).contiguous()
             for k, v in MLP().build(8, (12,)).state_dict().items()}
    save_file(state, str(tmp_path / "broken.safetensors"))
    treatments = [{"name": "XnB+", "source": "X", "target": "all", "protocol": "finetune"}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_config(layers=(1, 2, 3), treatments=treatments, bases=["all"],
                                           source={"checkpoint": str(tmp_path / "broken.safetensors")})))
    assert main(["recommend", str(path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    unit = json.loads((tmp_path / "out" / "advice.json").read_text())["units"][0]
    assert unit["evidence"]["default_top1"] is None and unit["evidence"]["departed"]
    assert unit["choice"] == "scratch" and unit["top1"] > 1 / 8  # above chance on the 8 classes
    assert "diverged in its short training" in printed

    # the choice's full training fails too: said, and the unit has no top-1
    from rich.console import Console

    from transferbench import advise as advise_module
    from transferbench.errors import TrainingFailed

    def fail(*args, **kwargs):
        raise TrainingFailed("loss is nan")

    prepared = prepare(str(path))
    sweep = read_sweep_plan(prepared)
    original = advise_module.train_job
    try:
        advise_module.train_job = lambda job, ctx, state=None: (original(job, ctx, state) if ctx.config.train.steps
                                                                 != 8 else fail())
        result = advise_module.advise(prepared, sweep, tmp_path / "out", Console(quiet=True))
    finally:
        advise_module.train_job = original
    assert list(result.accuracy.values()) == [None] and result.expected("t") is None


def test_the_target_and_the_comparisons_are_judged_on_intervals_not_means():
    from transferbench.advise import paired, target_verdict, verdict_lines
    from transferbench.regret import RegretRow
    from transferbench.stats import over_units

    def row(name, values, fraction=0.1):
        per_unit = dict(enumerate(values))
        return RegretRow(name, over_units(values), fraction, per_unit=per_unit)

    assert target_verdict(row(ADVICE, [0.1, 0.2, 0.3, 0.2])).startswith("met: the whole interval")
    assert target_verdict(row(ADVICE, [2.1, 2.2, 2.3, 2.2])).startswith("NOT met: the whole interval")
    # a mean under 1.0 whose interval reaches above it is not "met"
    inconclusive = row(ADVICE, [0.0, 2.0, 0.2, 1.6])
    assert inconclusive.regret.value < 1.0 and target_verdict(inconclusive).startswith("not shown")
    assert target_verdict(row(ADVICE, [0.1, 0.2, 0.3], fraction=0.25)).startswith("NOT met: its compute")
    assert target_verdict(row(ADVICE, [0.1])).startswith("not determined")

    advice = row(ADVICE, [0.0, 0.5, 1.0, 0.5])
    same = row("fine-tune everything", [0.0, 0.5, 1.0, 0.5])
    worse = row("freeze the first half", [3.0, 3.6, 4.1, 3.4])
    noisy = row("linear probe on the penultimate layer", [5.0, -4.0, 6.0, -5.0])
    d = paired(advice, worse)
    assert d.value == pytest.approx(-3.025) and d.ci_high < 0
    lines = verdict_lines([advice, same, worse, noisy])
    assert any("fine-tune everything" in line and "the same regret in every unit" in line for line in lines)
    assert any("freeze the first half" in line and "gave up less, beyond noise" in line for line in lines)
    assert any("linear probe" in line and "not separated" in line for line in lines)
    assert lines[-1] == ("The advice does NOT beat every fixed heuristic beyond noise: not fine-tune everything, "
                         "linear probe on the penultimate layer.")
