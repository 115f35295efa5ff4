"""One training step: a network alone, a cohort's members one by one and batched members follow
the same rules (transferbench/stepping.py): change a rule there and all three change."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tests.conftest import tiny_config
from transferbench.config import parse_config
from transferbench.engine import run_plan
from transferbench.plan import build_plan
from transferbench.resolve import resolve
from transferbench.stepping import Course, TrainingSteps

WAYS = {
    "alone": {},
    "cohort": {"executor": {"name": "local", "cohorts": True}},
    "batched": {"executor": {"name": "local", "cohorts": True}, "performance": {"batched": "on"}},
}


def _batched_names(source: str) -> dict[str, list[str]]:
    """Top-level function or class -> the names in it that speak of batched members."""
    out: dict[str, list[str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                     if isinstance(n, (ast.Name, ast.Attribute))]
            hits = [n for n in names if "batched" in n.lower()]
            if hits:
                out[node.name] = hits
    return out


def test_the_cohort_knows_of_batching_only_where_it_picks_its_steppers():
    cohort = (Path(__file__).resolve().parents[1] / "transferbench" / "cohort.py").read_text()
    assert set(_batched_names(cohort)) == {"_steppers"}
    assert _batched_names("def f(c):\n    if c.batched is not None:\n        c.batched.sync()\n") == {
        "f": ["batched", "batched"]}  # the check can fail


def test_the_running_loss_starts_at_the_first_loss_and_a_nan_fails_the_course():
    course = Course()
    assert course.add_loss(2.0, 0) and course.running == 2.0
    assert course.add_loss(1.0, 1) and course.running == 0.9 * 2.0 + 0.1 * 1.0
    assert not course.add_loss(math.nan, 2) and course.error == "loss became nan at step 3"
    assert course.running == 0.9 * 2.0 + 0.1 * 1.0  # the failed step counts for nothing
    assert course.info() == {"loss": course.running, "top1": pytest.approx(math.nan, nan_ok=True)}


def _records(tmp_path, way: str) -> dict[str, dict]:
    config = parse_config(tiny_config(**WAYS[way]))
    components = resolve(config)
    plan = build_plan(config, components)
    run_plan(config, components, plan, tmp_path / way, Console(quiet=True))
    return {jid: json.loads((tmp_path / way / "records" / f"{jid}.json").read_text()) for jid in plan.jobs}


def test_alone_in_a_cohort_and_batched_every_network_follows_the_one_step(fake_plugins, tmp_path, monkeypatch):
    """A changed rule (the running loss counts the step number, evaluation only at the end)
    shows in every network, whichever way it trained."""
    from transferbench.batched import BatchedMembers

    def counting(self, value, step):  # the running loss becomes the number of steps counted
        if not math.isfinite(value):
            self.error = f"loss became {value} at step {step + 1}"
            return False
        self.running = float(step + 1)
        return True

    monkeypatch.setattr(Course, "add_loss", counting)
    monkeypatch.setattr(TrainingSteps, "due", lambda self, done: done == self.length.total)
    batched: list[int] = []
    train_step = BatchedMembers.train_step

    def spy(self, *args, **kwargs):
        batched.append(len(self.members))
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(BatchedMembers, "train_step", spy)
    for way in WAYS:
        batched.clear()
        records = _records(tmp_path, way)
        assert (len(batched) > 0) is (way == "batched"), way
        for jid, r in records.items():
            assert r["status"] == "ok", (way, jid, r.get("error"))
            assert [(h["step"], h["train_loss"]) for h in r["history"]] == [(r["steps"], float(r["steps"]))], way


def test_the_lr_of_each_step_is_set_in_one_place(fake_plugins, tmp_path, monkeypatch):
    """With the schedule's factor at 0 from the first step, no network moves a weight,
    whichever way it trained."""
    from transferbench.network import build_target
    from transferbench.store import RunStore

    real = TrainingSteps.__init__

    def still(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.factor = lambda step: 0.0

    monkeypatch.setattr(TrainingSteps, "__init__", still)
    for way in WAYS:
        config = parse_config(tiny_config(**WAYS[way], output={"checkpoints": "all"}))
        components = resolve(config)
        plan = build_plan(config, components)
        run_plan(config, components, plan, tmp_path / way, Console(quiet=True))
        store = RunStore(tmp_path / way)
        for job in plan.jobs.values():
            source = store.load_checkpoint(job.depends_on) if job.depends_on else None
            torch.manual_seed(job.seed)
            start = build_target(components.architecture, job, (12,), source).model.state_dict()
            trained = store.load_checkpoint(job.id)
            assert all(torch.equal(start[k], trained[k]) for k in start), (way, job.id)
