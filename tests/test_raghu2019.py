"""Raghu et al. (2019), "Transfusion": the ``meanvar`` protocol (Mean Var Init), the
convergence-speed metric on hand-made histories, and the ``raghu2019`` findings on hand-made
records for every verdict each can give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferbench import Layer, judge, testing
from transferbench.analysis import build_grids
from transferbench.jobs import Job
from transferbench.network import build_target
from transferbench.records import HistoryPoint, JobRecord
from transferbench.results import ResultRow, RunResults

# --------------------------------------------------------------------------- meanvar


class _Wide:
    """An architecture of two wide linear layers (enough weights per tensor for a tight
    estimate of the drawn mean and std) and a classifier."""

    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        return nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, num_classes))

    def layers(self, model: nn.Module) -> list[Layer]:
        return [Layer("l1", ("0",)), Layer("l2", ("1",)), Layer("out", ("2",))]


def _source() -> dict[str, torch.Tensor]:
    """A "trained" source whose tensors' means and stds are far from any fresh init's."""
    g = torch.Generator().manual_seed(7)
    state = _Wide().build(4, (64,)).state_dict()
    shift = {"0.weight": (0.5, 0.2), "0.bias": (-1.0, 0.3), "1.weight": (-0.25, 0.05), "1.bias": (2.0, 0.5)}
    out = {k: v.clone() for k, v in state.items()}
    for k, (mean, std) in shift.items():
        out[k] = torch.randn(state[k].shape, generator=g) * std + mean
    return out


def _meanvar_job(seed: int, n: int = 2) -> Job:
    from transferbench_plugins.protocols import MeanVar

    return Job(f"mv{seed}", "transfer", "B", "A", n, (0, 1, 2, 3), seed, protocol=MeanVar(),
               protocol_spec={"name": "meanvar"})


def _build(job: Job, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    torch.manual_seed(job.seed)  # as the trainer does, right before the build
    target = build_target(_Wide(), job, (64,), source)  # type: ignore[arg-type]
    return {k: v.detach().clone() for k, v in target.model.state_dict().items()}


def test_meanvar_draws_each_tensor_from_the_sources_mean_and_std_and_copies_none():
    source = _source()
    drawn = _build(_meanvar_job(0), source)
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        ref, got = source[k].double(), drawn[k].double()
        size = got.numel()
        # within 5 standard errors of the mean and of the std (normal draws: se(std) ~ std / sqrt(2 size))
        assert abs(got.mean() - ref.mean()) < 5 * ref.std(correction=0) / size ** 0.5, k
        assert abs(got.std(correction=0) - ref.std(correction=0)) < 5 * ref.std(correction=0) / (2 * size) ** 0.5, k
        assert not torch.allclose(got, ref), k  # fresh draws, not the source's weights
    torch.manual_seed(0)
    fresh = _Wide().build(4, (64,)).state_dict()
    assert torch.equal(drawn["2.weight"], fresh["2.weight"])  # above n: the architecture's own init


def test_meanvar_is_seeded_same_job_same_weights():
    source = _source()
    once, twice = _build(_meanvar_job(3), source), _build(_meanvar_job(3), source)
    other = _build(_meanvar_job(4), source)
    assert all(torch.equal(once[k], twice[k]) for k in once)
    assert not torch.equal(once["0.weight"], other["0.weight"])


def test_meanvar_honours_the_protocol_contract_and_reads_as_drawn(tmp_path):
    from transferbench.plugins import get_registry
    from transferbench.reading import ProtocolReading
    from transferbench_plugins.protocols import MeanVar

    testing.check_protocol(get_registry().get("protocol", "meanvar").factory, tmp_path)
    reading = ProtocolReading.of(MeanVar(), 2, 4)
    assert reading.drawn == (True, True, False, False) and reading.copied == (False,) * 4
    assert reading.reads_source == (True, True, False, False) and all(reading.trained)
    assert reading.source_prefix == 0  # nothing of the source's is shared: no cohort prefix


def test_meanvar_enters_the_job_id(fake_plugins):
    from transferbench.config import parse_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve

    from .conftest import tiny_config

    def ids(protocol: str) -> set[str]:
        exp = {"name": "e", "split": {"name": "parity", "seeds": [0]}, "layers": [1],
               "treatments": [{"name": "T", "source": "A", "target": "B", "protocol": protocol}]}
        config = parse_config(tiny_config(experiments=[exp]))
        plan = build_plan(config, resolve(config))
        return {c.job_id for c in plan.cells if c.treatment == "T"}

    assert ids("meanvar") and ids("meanvar").isdisjoint(ids("finetune"))


# --------------------------------------------------------------------------- convergence speed


def test_steps_to_fraction_on_hand_made_histories():
    from transferbench.convergence import Curve, steps_to_fraction

    curve = Curve.of([(30, 0.80), (10, 0.20), (20, 0.60), (40, 0.80)], total=50)  # any order
    assert curve is not None and curve.steps == (10, 20, 30, 40) and curve.final == 0.80 and curve.total == 50
    assert steps_to_fraction(curve) == 30  # 0.9 x 0.80 = 0.72: first reached at step 30
    assert steps_to_fraction(curve, 0.7) == 20  # 0.56 <= 0.60
    assert steps_to_fraction(curve, 0.2) == 10  # already there at the first evaluation
    assert steps_to_fraction(curve, 1.0) == 30  # the final accuracy, first reached at 30
    dip = Curve.of([(10, 0.5), (20, 0.95), (30, 0.6), (40, 1.0)])
    assert dip is not None and dip.total == 40 and steps_to_fraction(dip) == 20  # the first crossing counts
    assert Curve.of([]) is None and Curve.of([(0, 0.5)]) is None  # no history / no step trained
    with pytest.raises(ValueError):
        steps_to_fraction(curve, 0.0)


def _network(job_id: str, final: float, reach: int, total: int = 100) -> JobRecord:
    """A record whose history is at 0.1 until step ``reach``, then at ``final``."""
    history = [HistoryPoint(step=s, epoch=s / 10, top1=final if s >= reach else 0.1, top5=1.0, train_loss=1.0)
               for s in range(10, total + 1, 10)]
    return JobRecord(job_id=job_id, status="ok", top1=final, top5=1.0, top1_best_k=final, best_k=1, history=history,
                     steps=total)


#: treatment -> (protocol, n)
_CELLS = {"baseB": (None, 0), "AnB+": ("finetune", 7), "AnB+low": ("finetune", 2), "mv": ("meanvar", 7),
          "BnB+": ("finetune", 7)}


def _run(cells: dict[str, list[tuple[float, int]]]) -> RunResults:
    """treatment -> per split seed (final accuracy, step it is reached at); 10 classes, half B."""
    rows, records = [], {}
    for treatment, values in cells.items():
        protocol, n = _CELLS[treatment]
        name = "AnB+" if treatment == "AnB+low" else treatment
        for seed, (final, reach) in enumerate(values):
            job = f"{treatment}-{seed}"
            records[job] = _network(job, final, reach)
            source = None if protocol is None else ("B" if treatment == "BnB+" else "A")
            rows.append(ResultRow("transfusion", "random", seed, name, n, job, "ok", top1=final, top5=1.0,
                                  top1_best_k=final, kind="base" if protocol is None else "transfer", source=source,
                                  target="B", protocol=protocol, num_classes=10))
    return RunResults("hand-made", "0" * 16, 8, tuple(f"l{i}" for i in range(1, 9)), tuple(rows), records=records)


def test_grid_reads_each_units_convergence_speed():
    grid = build_grids(_run({"baseB": [(0.9, 50), (0.9, 30), (0.8, 40)], "AnB+": [(0.9, 10)] * 3}))[0]
    assert grid.unit_speed("baseB", 0) == {("transfusion", 0, "B"): 0.5, ("transfusion", 1, "B"): 0.3,
                                           ("transfusion", 2, "B"): 0.4}
    assert set(grid.unit_speed("AnB+", 7).values()) == {0.1} and grid.unit_speed("AnB+", 3) == {}
    drawn = grid.resampled([("transfusion", 0, "B"), ("transfusion", 0, "B")])
    assert sorted(drawn.unit_speed("baseB", 0).values()) == [0.5, 0.5]


# --------------------------------------------------------------------------- raghu2019 findings

_SCRATCH = [(0.90, 50), (0.91, 60), (0.89, 50), (0.90, 55)]


def _judge(**cells: list[tuple[float, int]]) -> dict:
    from transferbench_plugins.raghu2019 import Raghu2019

    runs = {"baseB": _SCRATCH, **{k.replace("plus", "+"): v for k, v in cells.items()}}
    grids = build_grids(_run(runs))
    return {f.name: judge(f, grids, (), resamples=20) for f in Raghu2019().findings()}


def test_raghu2019_honours_the_findings_contract(tmp_path):
    from transferbench_plugins.raghu2019 import Raghu2019

    testing.check_finding(Raghu2019, tmp_path)


def test_transfer_faster_for_every_verdict():
    from transferbench_plugins.raghu2019 import TransferFaster

    fast = _judge(AnBplus=[(0.9, 10), (0.9, 20), (0.9, 10), (0.9, 10)])[TransferFaster.name]
    assert fast.verdict == "reproduced" and fast.effect is None and fast.scale == "the training run"
    assert "% of the training run" in fast.run and "n=7" in fast.run
    from transferbench.report import _finding_lines

    printed = "\n".join(_finding_lines(fast, ""))
    assert "of the training run" in printed and "of headroom" not in printed  # the report prints its scale
    assert _judge(AnBplus=[(0.9, 80), (0.9, 90), (0.9, 80), (0.9, 90)])[TransferFaster.name].verdict == "contradicted"
    noisy = _judge(AnBplus=[(0.9, 10), (0.9, 100), (0.9, 20), (0.9, 90)])[TransferFaster.name]
    assert noisy.verdict == "inconclusive"
    selffer = _judge(BnBplus=[(0.9, 10)] * 4)[TransferFaster.name]  # BnB+ is not transfer across halves
    assert selffer.verdict == "not determined" and "not in this run" in selffer.run


def test_mean_var_faster_for_every_verdict():
    from transferbench_plugins.raghu2019 import MeanVarFaster

    assert _judge(mv=[(0.9, 20), (0.9, 30), (0.9, 20), (0.9, 30)])[MeanVarFaster.name].verdict == "reproduced"
    assert _judge(mv=[(0.9, 80), (0.9, 90), (0.9, 80), (0.9, 90)])[MeanVarFaster.name].verdict == "contradicted"
    assert _judge(mv=[(0.9, 10), (0.9, 100), (0.9, 20), (0.9, 90)])[MeanVarFaster.name].verdict == "inconclusive"
    assert _judge(mv=[(0.9, 20)] * 2)[MeanVarFaster.name].verdict == "not determined"  # two units: no interval


def test_mean_var_recovers_more_than_half_of_the_speed_up():
    from transferbench_plugins.raghu2019 import MeanVarRecovers

    full = [(0.9, 10)] * 4  # speed-ups of 0.40-0.50 of the run: half is 0.20-0.25
    most = _judge(AnBplus=full, mv=[(0.9, 20), (0.9, 20), (0.9, 20), (0.9, 30)])[MeanVarRecovers.name]
    assert most.verdict == "reproduced" and "50% of full transfer's" in most.run
    little = _judge(AnBplus=full, mv=[(0.9, 50), (0.9, 50), (0.9, 40), (0.9, 50)])[MeanVarRecovers.name]
    assert little.verdict == "contradicted"  # faster than scratch, but by less than half of transfer's
    assert _judge(AnBplus=full, mv=[(0.9, 10), (0.9, 60), (0.9, 20), (0.9, 50)])[MeanVarRecovers.name].verdict \
        == "inconclusive"
    assert _judge(AnBplus=full)[MeanVarRecovers.name].verdict == "not determined"  # no meanvar network


def test_lower_layers_keep_most_of_the_speed_up():
    from transferbench_plugins.raghu2019 import LowerLayersKeep

    full = [(0.9, 10)] * 4
    kept = _judge(AnBplus=full, AnBpluslow=[(0.9, 20), (0.9, 10), (0.9, 20), (0.9, 20)])[LowerLayersKeep.name]
    assert kept.verdict == "reproduced" and "layers 1..2" in kept.run
    lost = _judge(AnBplus=full, AnBpluslow=[(0.9, 50), (0.9, 60), (0.9, 50), (0.9, 50)])[LowerLayersKeep.name]
    assert lost.verdict == "contradicted"
    assert _judge(AnBplus=full, AnBpluslow=[(0.9, 10), (0.9, 60), (0.9, 20), (0.9, 50)])[LowerLayersKeep.name] \
        .verdict == "inconclusive"
    assert _judge(AnBplus=full)[LowerLayersKeep.name].verdict == "not determined"  # one n: no lower layers


def test_little_accuracy_benefit_is_an_equivalence_within_its_margin():
    from transferbench_plugins.raghu2019 import LittleAccuracyBenefit

    same = _judge(AnBplus=[(0.90, 10), (0.91, 10), (0.89, 10), (0.91, 10)])[LittleAccuracyBenefit.name]
    assert same.verdict == "reproduced" and same.equivalence == "holds" and same.margin == 0.05
    assert same.scale == "headroom"
    better = _judge(AnBplus=[(0.99, 10), (0.99, 10), (0.98, 10), (0.99, 10)])[LittleAccuracyBenefit.name]
    assert better.verdict == "contradicted" and better.equivalence == "fails"
    wide = _judge(AnBplus=[(0.99, 10), (0.85, 10), (0.95, 10), (0.80, 10)])[LittleAccuracyBenefit.name]
    assert wide.verdict == "inconclusive" and wide.equivalence == "not shown"
    assert _judge(mv=[(0.9, 10)] * 4)[LittleAccuracyBenefit.name].verdict == "not determined"


def test_a_meanvar_network_trains_and_its_convergence_is_read(fake_plugins, tmp_path):
    from rich.console import Console

    from transferbench.config import parse_config
    from transferbench.engine import run_plan
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve
    from transferbench.results import read_results

    from .conftest import tiny_config

    exp = {"name": "e", "split": {"name": "parity", "seeds": [0]}, "layers": [2],
           "treatments": [{"name": "mv", "source": "A", "target": "B", "protocol": "meanvar"}]}
    train = {"lr": 0.1, "batch_size": 32, "epochs": 3, "weight_decay": 0.0}
    config = parse_config(tiny_config(experiments=[exp], train=train, eval={"every": 1, "best_k": 2}))
    components = resolve(config)
    plan = build_plan(config, components)
    summary = run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    assert summary.failed == 0
    grid = build_grids(read_results(tmp_path / "run"))[0]
    speed = grid.unit_speed("mv", 2)
    assert len(speed) == 1 and all(0 < v <= 1 for v in speed.values())  # one of its 3 evaluations
    assert grid.get("mv", 2) is not None and grid.get("mv", 2).mean > 0.25  # it learns (4 classes: chance .25)
