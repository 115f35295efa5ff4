"""One reading of a protocol: read once per plan, carried on the job, and what every consumer
follows (the planner's cohorts, the network build, the frozen-prefix cache, the cohorts'
shared prefixes, the runner's initial weights and the cost model)."""

from __future__ import annotations

import ast
import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tests.conftest import tiny_config
from transferbench import cohort_cost
from transferbench.config import parse_config
from transferbench.context import TrainContext
from transferbench.engine import run_plan
from transferbench.interfaces import LayerAction
from transferbench.plan import build_plan
from transferbench.reading import ProtocolReading
from transferbench.resolve import resolve
from transferbench.trainer import prepare_job

PACKAGE = Path(__file__).resolve().parents[1] / "transferbench"
#: Where ``.actions(`` may be called: the reading itself, and the plugin contract checks (they test the plugin).
READERS = {"reading.py", "testing.py"}


def _setup(**changes):
    config = parse_config(tiny_config(**changes))
    components = resolve(config)
    return config, components, build_plan(config, components)


def _actions_calls(source: str) -> list[int]:
    """Lines of ``source`` that call a method named ``actions``."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "actions"]


def test_only_the_reading_calls_protocol_actions():
    found = {p.name: _actions_calls(p.read_text()) for p in sorted(PACKAGE.glob("*.py")) if p.name not in READERS}
    assert {name: lines for name, lines in found.items() if lines} == {}
    assert _actions_calls((PACKAGE / "reading.py").read_text())  # the check can fail: it finds the one call


def test_the_check_finds_a_module_that_reads_a_protocol_itself():
    assert _actions_calls("def f(job):\n    return [a.copy for a in job.protocol.actions(job.n, 4)]\n") == [2]


def test_the_reading_of_the_paper_s_protocols():
    from transferbench_plugins.protocols import FineTune, Frozen, LpFt, Reinit, ReinitEval, Surgical, SurgicalHead

    frozen = ProtocolReading.of(Frozen(), 2, 4)
    assert frozen.copied == (True, True, False, False) and frozen.trained == (False, False, True, True)
    assert (frozen.frozen_prefix, frozen.source_prefix, frozen.trains, frozen.joins_cohort) == (2, 2, True, True)
    tuned = ProtocolReading.of(FineTune(), 2, 4)
    assert (tuned.frozen_prefix, tuned.source_prefix, tuned.resets) == (0, 0, False)
    surgical = ProtocolReading.of(Surgical(), 3, 4)  # layers 1..2 frozen copies, 3 trains, the head kept
    assert (surgical.frozen_prefix, surgical.source_prefix) == (2, 0)
    assert surgical.copied == (True,) * 4 and surgical.trained == (False, False, True, False)
    head = ProtocolReading.of(SurgicalHead(), 3, 4)  # the same with a new classifier
    assert head.copied == (True, True, True, False) and head.trained == (False, False, True, True)
    lpft = ProtocolReading.of(LpFt(), 3, 4)  # every layer learns, the copied ones after the probe
    assert lpft.staged and lpft.start == (0.5, 0.5, 0.5, 0.0) and lpft.frozen_prefix == 0
    assert not lpft.joins_cohort and not tuned.staged
    reinit = ProtocolReading.of(Reinit(), 2, 4)
    assert reinit.reset == (False, True, False, False) and reinit.copied == (True, False, True, False)
    assert reinit.resets and not reinit.joins_cohort
    evaluated = ProtocolReading.of(ReinitEval(), 1, 4)  # layer 1 is the source's initial one: not shared
    assert evaluated.evaluate_only and not evaluated.trains and evaluated.frozen_prefix == 4
    assert evaluated.source_prefix == 0 and not evaluated.joins_cohort
    base = ProtocolReading.of(None, 0, 4)
    assert base.trained == (True,) * 4 and not any(base.copied) and base.frozen_prefix == 0


def test_a_job_carries_its_reading_and_pickles_with_it_without_changing_its_identity(fake_plugins):
    config, components, plan = _setup()
    for job in plan.jobs.values():
        assert job.reading is not None and job.reading.num_layers == plan.num_layers
        again = pickle.loads(pickle.dumps(job))
        assert again.reading == job.reading and again == job
        assert "reading" not in job.summary()
    job = next(j for j in plan.jobs.values() if j.kind == "transfer")
    assert dataclasses.replace(job, reading=None) == job  # not part of what a job is
    with pytest.raises(Exception, match="planned for 4 layers"):
        job.read_protocol(5)


def test_a_plan_reads_each_protocol_once_and_training_reads_none(fake_plugins, tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []
    real = ProtocolReading.of.__func__

    def counting(cls, protocol, n, num_layers):
        calls.append((id(protocol), n))
        return real(cls, protocol, n, num_layers)

    monkeypatch.setattr(ProtocolReading, "of", classmethod(counting))
    config, components, plan = _setup(executor={"name": "local", "cohorts": True})
    assert calls and len(calls) == len(set(calls))  # once per (protocol, n), however many jobs share it
    calls.clear()
    cohort_cost.estimate_cohorts(config, components, plan, tflops=10.0)
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    assert calls == []  # the runner, trainer, cohorts and cost model all used the jobs' readings


def _swapped(plan, k: int):
    """A fine-tuned job (its protocol trains every layer) carrying a reading that says: layers
    1..k are frozen copies of the source. Every consumer must follow the reading."""
    job = next(j for j in plan.jobs.values() if j.protocol_spec and j.protocol_spec["name"] == "finetune"
               and j.n == k and j.depends_on)
    frozen = tuple(LayerAction(copy=i < k, train=i >= k) for i in range(plan.num_layers))
    return dataclasses.replace(job, reading=ProtocolReading(frozen, k))


@pytest.mark.parametrize("k", [1, 2])
def test_build_cache_and_cost_model_follow_the_job_s_reading(fake_plugins, monkeypatch, k):
    config, components, plan = _setup()
    job = _swapped(plan, k)
    assert cohort_cost._frozen(job, plan.num_layers) == k and cohort_cost._shared_prefix(job, plan.num_layers) == k
    arch = components.architecture
    cuts: list[int] = []
    split_at = type(arch).split_at

    def spy(self, model, n):
        cuts.append(n)
        return split_at(self, model, n)

    monkeypatch.setattr(type(arch), "split_at", spy)
    source = {k_: v.clone() for k_, v in arch.build(job.num_classes, (12,)).state_dict().items()}
    setup = prepare_job(job, TrainContext(config, components, torch.device("cpu")), source)
    assert cuts == [k] and setup.data.cached  # the cache computes exactly the reading's frozen prefix
    frozen = [layer.name for layer in setup.target.layers
              if not any(p.requires_grad for name, p in setup.target.model.named_parameters()
                         if name.startswith(layer.modules[0] + "."))]
    assert frozen == [layer.name for layer in setup.target.layers[:k]]
    assert torch.equal(setup.target.model.state_dict()["h1.0.weight"], source["h1.0.weight"])


def test_the_planner_the_runner_and_the_cost_model_agree_on_who_trains_alone(fake_plugins, monkeypatch):
    reinit = {"name": "reinit", "source": "B", "target": "B", "protocol": "reinit"}
    config, components, plan = _setup(executor={"name": "local", "cohorts": True},
                                      experiments=[{"name": "p", "split": {"name": "parity"},
                                                    "treatments": ["BnB", "AnB+", reinit]}])
    networks = [j for j in plan.jobs.values() if j.kind != "estimate"]
    alone = [j for j in networks if j.kind == "transfer" and not j.reading.joins_cohort]
    assert alone and all(j.cohort is None for j in alone)
    cost = cohort_cost.estimate_cohorts(config, components, plan, tflops=10.0)
    assert cost is not None and cost.cohorts.units == len({j.cohort or j.id for j in networks})

    from transferbench.runner import TrainingRunner

    runner = TrainingRunner(config, components, plan, Path("unused"))
    monkeypatch.setattr("transferbench.runner.initial_state", lambda *a: {"init": True})
    assert all(runner._init_state(j) == {"init": True} for j in alone)
    assert all(runner._init_state(j) is None for j in networks if j not in alone)
