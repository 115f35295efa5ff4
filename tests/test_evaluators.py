"""The evaluator plugin kind and its first plugin, loss_barrier, on hand-built networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferbench import ConfigError, EvalInputs, Evaluation, Evaluator, testing
from transferbench.plugins import PluginHost
from transferbench_plugins.evaluators import LossBarrier, LossBarrierParams, barrier


def _inputs(x: torch.Tensor, y: torch.Tensor, classes: int) -> EvalInputs:
    return EvalInputs(lambda: [(x, y)], lambda: [(x, y)], classes)


def _scalar_net(weight: float) -> nn.Module:
    """x -> (w x, 0): two logits whose loss on label 0 is softplus(-w x)."""
    net = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[weight], [0.0]]))
    return net.eval()


def test_barrier_is_the_largest_rise_above_the_chord():
    alphas = [0.0, 0.5, 1.0]
    assert barrier([1.0, 3.0, 2.0], alphas) == pytest.approx(1.5)  # 3 - (1 + 2) / 2
    assert barrier([1.0, 1.0, 2.0], alphas) == pytest.approx(0.0)  # convex: never above the chord
    assert barrier([0.9, 0.5, 0.7], alphas, higher_is_worse=False) == pytest.approx(0.3)  # 0.8 - 0.5


def test_identical_networks_have_no_barrier():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x, y = torch.randn(30, 4), torch.arange(30) % 3
    got = LossBarrier().evaluate([net, net], _inputs(x, y, 3))
    assert got.values["loss_barrier"] == pytest.approx(0.0, abs=1e-6)
    assert got.values["top1_barrier"] == pytest.approx(0.0, abs=1e-9)
    assert len(got.details["loss"]) == 11 and got.details["alphas"][1] == pytest.approx(0.1)


def _relu_net(u: float, v: float) -> nn.Module:
    """logit 0 = relu(u x) + relu(v x), logit 1 = 1.5."""
    m = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[u], [v]]))
        m[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        m[2].bias.copy_(torch.tensor([0.0, 1.5]))
    return m.eval()


def _sp(v: float) -> float:
    return math.log1p(math.exp(v))


def test_a_path_through_a_wrong_middle_gives_the_hand_computed_barriers():
    # on x = 1, label 0: the ends (u, v) = (2, -2) and (-2, 2) both give logit 0 = 2 > 1.5 (right,
    # loss softplus(1.5 - 2)); the middle (0, 0) gives 0 (wrong, loss softplus(1.5)); the loss
    # barrier is their difference, the top-1 barrier 1 (the chord is 1 all along)
    x, y = torch.ones(1, 1), torch.zeros(1, dtype=torch.long)
    got = LossBarrier(LossBarrierParams(points=3)).evaluate([_relu_net(2, -2), _relu_net(-2, 2)], _inputs(x, y, 2))
    assert got.details["loss"] == pytest.approx([_sp(-0.5), _sp(1.5), _sp(-0.5)], rel=1e-5)
    assert got.values["loss_barrier"] == pytest.approx(_sp(1.5) - _sp(-0.5), rel=1e-5)
    assert got.details["top1"] == [1.0, 0.0, 1.0]
    assert got.values["top1_barrier"] == pytest.approx(1.0)
    assert got.values["end_loss"] == pytest.approx(_sp(-0.5), rel=1e-5) and got.values["end_top1"] == 1.0


def test_a_convex_path_has_no_barrier():
    # a linear model's loss is convex in its weights: w = 2 to -2 on x = 1, label 0 never rises
    # above the chord (softplus(-w) is convex), so the barrier is 0 though the middle is worse
    x, y = torch.ones(1, 1), torch.zeros(1, dtype=torch.long)
    got = LossBarrier(LossBarrierParams(points=3)).evaluate([_scalar_net(2.0), _scalar_net(-2.0)], _inputs(x, y, 2))
    assert got.details["loss"] == pytest.approx([_sp(-2.0), math.log(2), _sp(2.0)], rel=1e-5)
    assert got.values["loss_barrier"] == pytest.approx(0.0, abs=1e-9)


def test_batchnorm_statistics_are_recomputed_on_the_line():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)) for _ in range(2)]
    x = torch.randn(40, 3) * 5 + 3
    y = torch.arange(40) % 2
    for n in nets:  # statistics of other data than the inputs': a stale interpolation would show
        n.train()
        n(torch.randn(40, 3))
        n.eval()
    got = LossBarrier(LossBarrierParams(points=3)).evaluate(nets, _inputs(x, y, 2))
    assert got.details["batchnorm_recomputed"] is True
    off = LossBarrier(LossBarrierParams(points=3, recompute_bn=False)).evaluate(nets, _inputs(x, y, 2))
    assert off.details["batchnorm_recomputed"] is False and off.details["loss"] != got.details["loss"]


def test_networks_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="one architecture"):
        LossBarrier().evaluate([nn.Linear(2, 2), nn.Linear(3, 2)], _inputs(torch.ones(1, 2), torch.zeros(1).long(), 2))


def test_the_kind_is_registered_and_checked():
    reg = PluginHost(load_entry_points=False).registry()
    assert reg.get("evaluator", "loss_barrier").factory is LossBarrier
    testing.check_evaluator(LossBarrier)

    class Changes(Evaluator):
        quantities = ("x",)

        def evaluate(self, networks, inputs):
            with torch.no_grad():
                for p in networks[0].parameters():
                    p.add_(1.0)
            return Evaluation({"x": 1.0})

    class Forgets(Evaluator):
        quantities = ("x", "y")

        def evaluate(self, networks, inputs):
            return Evaluation({"x": 1.0})

    with pytest.raises(testing.ContractError, match="must not change the networks"):
        testing.check_evaluator(Changes)
    with pytest.raises(testing.ContractError, match="its quantities are"):
        testing.check_evaluator(Forgets)


# --------------------------------------------------------------------------- in a run


def _basin_plan(**changes):
    from tests.conftest import tiny_config
    from transferbench.config import parse_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve

    exp = {"name": "basin", "split": {"name": "parity", "seeds": [0, 1]}, "layers": [1],
           "treatments": ["AnB+", {"name": "AnB+r1", "source": "A", "target": "B", "protocol": "finetune",
                                   "replica": 1},
                          {"name": "scratchB", "target": "B", "protocol": "scratch"}],
           "evaluators": [{"name": "loss_barrier", "label": "finetuned", "networks": ["AnB+", "AnB+r1"], "points": 3},
                          {"name": "loss_barrier", "label": "scratch", "networks": ["baseB", "scratchB"],
                           "points": 3}],
           **changes}
    config = parse_config(tiny_config(experiments=[exp], train={"lr": 0.1, "batch_size": 32, "epochs": 2,
                                                                "weight_decay": 0.0}))
    components = resolve(config)
    return config, components, build_plan(config, components)


def test_a_replica_is_another_network_of_the_same_source(fake_plugins):
    _, _, plan = _basin_plan()
    ids = {(c.split_seed, c.treatment, c.n): c.job_id for c in plan.cells}
    one, two = plan.jobs[ids[(0, "AnB+", 1)]], plan.jobs[ids[(0, "AnB+r1", 1)]]
    assert one.id != two.id and one.seed != two.seed and one.depends_on == two.depends_on
    scratch = plan.jobs[ids[(0, "scratchB", 1)]]
    assert scratch.depends_on is None and scratch.id != ids[(0, "baseB", 0)]
    cells = [(e.split_seed, e.label, e.n, e.job_ids) for e in plan.evaluations]
    assert (0, "finetuned", 1, (one.id, two.id)) in cells
    assert (0, "scratch", 1, (ids[(0, "baseB", 0)], scratch.id)) in cells and len(cells) == 4
    assert all(plan.keeps_checkpoint(j, "none") for e in plan.evaluations for j in e.job_ids)


def test_the_run_evaluates_once_and_the_grid_reads_it(fake_plugins, tmp_path):
    from rich.console import Console

    from transferbench.analysis import build_grids
    from transferbench.engine import run_plan
    from transferbench.evaluation import run_evaluations
    from transferbench.results import read_results

    config, components, plan = _basin_plan(split={"name": "parity", "seeds": [0]})
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    files = sorted((tmp_path / "run" / "evaluations").glob("*.json"))
    assert len(files) == 2
    again = run_evaluations(config, components, plan, tmp_path / "run", torch.device("cpu"))
    assert (again.computed, again.reused, again.failed) == (0, 2, [])
    results = read_results(tmp_path / "run")
    assert len(results.evaluations) == 2
    grid = build_grids(results)[0]
    stat = grid.measure("finetuned.loss_barrier", 1)
    assert stat is not None and stat.units == 1 and stat.values[0] >= 0
    assert grid.measure("scratch.end_top1", 1).units == 1


def test_bad_evaluator_settings_are_config_errors_at_their_keys(fake_plugins):
    with pytest.raises(ConfigError, match=r"evaluators.0.networks.*reads 2 networks; 1"):
        _basin_plan(evaluators=[{"name": "loss_barrier", "label": "x", "networks": ["AnB+"]}])
    with pytest.raises(ConfigError, match=r"not a treatment of this experiment"):
        _basin_plan(evaluators=[{"name": "loss_barrier", "label": "x", "networks": ["AnB+", "nope"]}])
    with pytest.raises(ConfigError, match=r"evaluators.0.name"):
        _basin_plan(evaluators=[{"name": "nope", "label": "x", "networks": ["AnB+", "AnB+r1"]}])
    with pytest.raises(ConfigError, match=r"not trained on one task"):
        _basin_plan(evaluators=[{"name": "loss_barrier", "label": "x", "networks": ["baseA", "AnB+"]}])

