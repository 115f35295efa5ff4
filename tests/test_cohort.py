"""Cohorts: networks sharing a training set and a data order, trained in lockstep.

The promise: a cohort gives each member the record it gets trained alone with the same data
order, bit for bit on the CPU (with and without augmentation and dropout, with the frozen
prefixes shared or cached); a member's NaN is its own; an interrupted cohort resumes to the
same numbers; batched members match one-by-one training within float tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from tests.conftest import tiny_config
from tests.golden import COMPARED
from transferbench.config import parse_config
from transferbench.engine import run_plan
from transferbench.plan import build_plan
from transferbench.resolve import resolve
from transferbench.runner import TrainingRunner
from transferbench.store import RunStore


def _synthetic(augment: bool, **changes: Any) -> dict[str, Any]:
    """caffenet_scaled (dropout 0.5 in fc6/fc7) on tiny synthetic images: four frozen and four
    fine-tuned transfers per source, and a cohort without a source (random weights)."""
    train: dict[str, Any] = {"lr": 0.02, "batch_size": 16, "epochs": 3, "schedule": {"kind": "step", "step_every": 2}}
    size = 20 if augment else 16
    if augment:
        train["augment"] = {"crop": 16, "pad": 1, "mirror": True}
    cfg = {
        "name": "cohort",
        "seed": 1,
        "data": {"name": "synthetic", "num_classes": 8, "train_per_class": 12, "eval_per_class": 4, "image_size": size},
        "architecture": {"name": "caffenet_scaled", "width": 0.125, "fc_width": 32},
        "experiments": [
            {"name": "random", "split": {"name": "random", "seeds": [0]},
             "treatments": ["BnB", "BnB+", "AnB", "AnB+"], "layers": [1, 5, 6, 7]},
            {"name": "rw", "split": {"name": "random", "seeds": [0]}, "bases": ["all"],
             "treatments": [{"name": "random_frozen", "target": "all", "protocol": "random_frozen"}],
             "layers": [2, 6]},
        ],
        "train": train,
        "eval": {"best_k": 2},
        "device": "cpu",
        "executor": {"name": "local", "cohorts": True},
        "output": {"checkpoints": "all"},
    }
    cfg.update(changes)
    return cfg


def _prepare(cfg: dict[str, Any]):
    config = parse_config(cfg)
    components = resolve(config)
    return config, components, build_plan(config, components)


def _run(cfg: dict[str, Any], run_dir: Path, cohorts: bool = True) -> dict[str, dict[str, Any]]:
    """Run ``cfg``'s plan (made with cohorts on); train it in cohorts or every job alone."""
    config, components, plan = _prepare(cfg)
    components.executor.params.cohorts = cohorts  # the same plan (same ids, same data order)
    run_plan(config, components, plan, run_dir, Console(quiet=True))
    return {jid: json.loads((run_dir / "records" / f"{jid}.json").read_text()) for jid in plan.jobs}


def _keyed_as(records: dict[str, dict[str, Any]], cfg: dict[str, Any],
              other: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``records`` of ``cfg``'s plan keyed by the ids the same networks have in ``other``'s plan
    (``performance.batched`` enters the ids of the members it may batch)."""
    mine, theirs = _prepare(cfg)[2], _prepare(other)[2]
    pairs = list(zip(mine.jobs.values(), theirs.jobs.values(), strict=True))
    assert all((a.kind, a.n, a.target, a.protocol_spec, a.data_seed) == (b.kind, b.n, b.target, b.protocol_spec,
                                                                       b.data_seed) for a, b in pairs)
    return {b.id: records[a.id] for a, b in pairs}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for jid in a:
        for key in (*COMPARED, "history", "input_std"):
            assert a[jid].get(key) == b[jid].get(key), f"{jid}: {key} differs"
        assert a[jid].get("checkpoint_sha256") == b[jid].get("checkpoint_sha256"), f"{jid}: weights differ"


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """Every job of the cohort plans trained alone: what the cohorts must reproduce."""
    out = {}
    for aug in (False, True):
        run_dir = tmp_path_factory.mktemp(f"solo{aug}") / "run"
        out[aug] = _run(_synthetic(aug), run_dir, cohorts=False)
        out[("dir", aug)] = run_dir
    return out


# ---------------------------------------------------------------------------- the plan


def test_cohorts_share_a_data_order_that_enters_the_job_ids(fake_plugins):
    solo_plan = _prepare(tiny_config())[2]
    plan = _prepare(tiny_config(executor={"name": "local", "cohorts": True}))[2]
    bases = {j.id for j in plan.jobs.values() if j.kind == "base"}
    assert bases == {j.id for j in solo_plan.jobs.values() if j.kind == "base"}  # bases keep their own order
    transfers = [j for j in plan.jobs.values() if j.kind == "transfer"]
    assert not {j.id for j in transfers} & set(solo_plan.jobs)  # a cohort's network is another network
    assert len(plan.cohorts) == 1 and sorted(plan.cohorts[transfers[0].cohort]) == sorted(j.id for j in transfers)
    assert len({j.data_seed for j in transfers}) == 1
    assert all(j.stream_seed == transfers[0].data_seed for j in transfers)
    assert all(j.stream_seed == j.seed + 1 for j in plan.jobs.values() if j.kind == "base")
    assert [j.seed for j in transfers] == [j.seed for j in solo_plan.jobs.values() if j.kind == "transfer"]
    summary = plan.to_json()["jobs"][transfers[0].id]
    assert summary["cohort"] == transfers[0].cohort and summary["data_seed"] == transfers[0].data_seed
    assert "cohort" not in solo_plan.to_json()["jobs"][next(iter(solo_plan.jobs))]


def test_cohort_sizes_and_halves(fake_plugins):
    exp = {"name": "both", "split": {"name": "parity", "seeds": [0, 1]}, "treatments": ["AnB", "BnA+"]}
    plan = _prepare(tiny_config(experiments=[exp], executor={"name": "local", "cohorts": True}))[2]
    # one cohort per training set and replicate: parity's seed 1 swaps the halves, so its
    # networks train on the same two sets of classes, yet a replicate is an independent
    # measurement: it reads its own data order, in cohorts of its own
    assert sorted(len(v) for v in plan.cohorts.values()) == [3, 3, 3, 3]
    orders = set()
    for members in plan.cohorts.values():
        assert len({plan.jobs[j].classes for j in members}) == 1
        assert len({plan.jobs[j].data_seed for j in members}) == 1
        orders.add(plan.jobs[members[0]].data_seed)
    assert len(orders) == 4


def test_networks_reset_to_initial_weights_or_only_evaluated_train_alone(fake_plugins):
    """A cohort member's network is built from a source and trained: protocols that read the
    source's initial weights, or train nothing, stay out of cohorts (and keep their own order)."""
    treatments = ["AnB", "BnB+", {"name": "reinit", "source": "B", "protocol": "reinit"},
                  {"name": "reset", "source": "B", "target": "B", "protocol": "reinit_eval"}]
    exp = {"name": "e", "split": {"name": "parity", "seeds": [0]}, "treatments": treatments}
    plan = _prepare(tiny_config(experiments=[exp], executor={"name": "local", "cohorts": True}))[2]
    alone = {c.treatment for c in plan.cells if plan.jobs[c.job_id].cohort is None}
    together = {c.treatment for c in plan.cells if plan.jobs[c.job_id].cohort is not None}
    assert together == {"AnB", "BnB+"}
    assert alone == {"baseA", "baseB", "reinit", "reset"}
    for c in plan.cells:
        if c.treatment in ("reinit", "reset"):
            job = plan.jobs[c.job_id]
            assert job.data_seed is None and job.stream_seed == job.seed + 1


# ---------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("augment", [False, True], ids=["cached", "augmented"])
def test_a_cohort_gives_every_member_its_solo_record(solo, tmp_path, augment):
    """Bit for bit: dropout streams per member; the frozen prefix shared (augmented) or cached."""
    got = _run(_synthetic(augment), tmp_path / "run")
    _same(got, solo[augment])
    assert any(r["frozen_cache"] for r in got.values()) is not augment


def test_the_shared_prefix_runs_once_per_batch(tmp_path, monkeypatch):
    from transferbench_plugins.caffenet import CaffeNetScaled

    calls: list[tuple[int, ...]] = []
    original = CaffeNetScaled.prefix_outputs

    def counting(self, model, x, ns):
        calls.append(tuple(ns))
        return original(self, model, x, ns)

    monkeypatch.setattr(CaffeNetScaled, "prefix_outputs", counting)
    _run(_synthetic(True), tmp_path / "run")
    assert calls and set(calls) == {(1, 5, 6, 7)}  # the frozen members of one source, together


def test_one_member_s_nan_fails_that_member_alone(solo, tmp_path):
    cfg = _synthetic(False)
    boom = {"name": "boom", "source": "B", "target": "B", "protocol": {"name": "finetune", "copied_lr_mult": 1e12}}
    cfg["experiments"][0]["treatments"].append(boom)
    got = _run(cfg, tmp_path / "run")
    failed = {jid: r for jid, r in got.items() if r["status"] == "failed"}
    assert len(failed) == 4 and all("loss became" in r["error"] for r in failed.values())
    _same({jid: r for jid, r in got.items() if jid not in failed}, solo[False])


def test_an_interrupted_cohort_resumes_to_the_same_numbers(solo, tmp_path):
    cfg = _synthetic(True, output={"checkpoints": "all", "cohort_checkpoint_minutes": 0})
    config, components, plan = _prepare(cfg)
    run_dir = tmp_path / "run"
    run_plan(config, components, plan, run_dir, Console(quiet=True))  # trains everything
    store = RunStore(run_dir)
    cohort = max(plan.cohorts.values(), key=len)
    jobs = [plan.jobs[j] for j in cohort]
    for jid in cohort:  # as if the cohort had not finished
        store.record_path(jid).unlink()
    runner = TrainingRunner(config, components, plan, run_dir)
    steps_per_epoch = solo[True][cohort[0]]["history"][0]["step"]

    def interrupt(job, step, total, info):
        if step == steps_per_epoch + 1:  # after the checkpoint at the end of the first epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_cohort(jobs, interrupt)
    saved = list((run_dir / "cohorts").rglob("*.pt"))
    assert len(saved) == 1
    assert torch.load(saved[0], weights_only=True)["step"] == steps_per_epoch
    seen: list[int] = []
    records = runner.run_cohort(jobs, lambda job, step, total, info: seen.append(step))
    assert min(seen) == steps_per_epoch + 1  # resumed, not started again
    assert not list((run_dir / "cohorts").rglob("*.pt"))  # finished: the checkpoint is gone
    got = {r.job_id: json.loads(r.to_json()) for r in records}
    _same(got, {jid: solo[True][jid] for jid in got})


def _finished_cohort(solo, tmp_path):
    """A run trained in cohorts, then one cohort's records removed (as if it had not
    finished); its runner, jobs and steps per epoch."""
    cfg = _synthetic(True, output={"checkpoints": "all", "cohort_checkpoint_minutes": 0})
    config, components, plan = _prepare(cfg)
    run_dir = tmp_path / "run"
    run_plan(config, components, plan, run_dir, Console(quiet=True))
    cohort = max(plan.cohorts.values(), key=len)
    for jid in cohort:
        RunStore(run_dir).record_path(jid).unlink()
    runner = TrainingRunner(config, components, plan, run_dir)
    return runner, [plan.jobs[j] for j in cohort], solo[True][cohort[0]]["history"][0]["step"]


def test_a_cohort_killed_while_its_records_are_written_loses_nothing(solo, tmp_path, monkeypatch):
    """The window between the end of training and the last record: the joint checkpoint is
    still there, the members written keep their records, the others resume from it."""
    runner, jobs, steps_per_epoch = _finished_cohort(solo, tmp_path)
    write, written = RunStore.write_record, []

    def killed_after_two(store, record):
        if len(written) == 2:
            raise KeyboardInterrupt  # as a kill -9 would stop it
        write(store, record)
        written.append(record.job_id)

    monkeypatch.setattr(RunStore, "write_record", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        runner.run_cohort(jobs)
    monkeypatch.setattr(RunStore, "write_record", write)
    saved = list((runner.run_dir / "cohorts").rglob("*.pt"))
    assert len(saved) == 1, "the joint checkpoint must outlive the records"
    kept = {jid: runner.store.read_record(jid) for jid in written}
    seen: list[int] = []
    records = runner.run_cohort(jobs, lambda job, step, total, info: seen.append(step))
    assert min(seen) == 2 * steps_per_epoch + 1  # resumed from the last epoch's checkpoint, not from scratch
    assert not saved[0].exists()
    assert all(runner.store.read_record(jid).finished_at == r.finished_at for jid, r in kept.items())
    got = {r.job_id: json.loads(r.to_json()) for r in records}
    _same(got, {jid: solo[True][jid] for jid in got})


def test_a_cohort_killed_after_its_records_leaves_nothing_to_train(solo, tmp_path, monkeypatch):
    from transferbench import cohort

    runner, jobs, _ = _finished_cohort(solo, tmp_path)

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(cohort._Checkpoints, "done", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run_cohort(jobs)
    monkeypatch.undo()
    before = {job.id: runner.store.read_record(job.id) for job in jobs}
    assert all(r is not None and r.ok for r in before.values())
    seen: list[int] = []
    records = runner.run_cohort(jobs, lambda job, step, total, info: seen.append(step))
    assert not seen and not list((runner.run_dir / "cohorts").rglob("*.pt"))  # no training; the leftover is gone
    assert [r.finished_at for r in records] == [before[job.id].finished_at for job in jobs]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _drop_member(path: Path) -> None:
    saved = torch.load(path, weights_only=True)
    saved["members"].pop(next(iter(saved["members"])))
    torch.save(saved, path)


def _wrong_shapes(path: Path) -> None:
    saved = torch.load(path, weights_only=True)
    for state in saved["members"].values():
        if "model" in state:
            state["model"] = {k: torch.zeros(3) for k in state["model"]}
    torch.save(saved, path)


@pytest.mark.parametrize("damage", [_truncate, _drop_member, _wrong_shapes], ids=["truncated", "member-missing",
                                                                                  "wrong-shapes"])
def test_a_damaged_cohort_checkpoint_is_moved_aside_and_the_cohort_starts_over(solo, tmp_path, damage):
    cfg = _synthetic(True, output={"checkpoints": "all", "cohort_checkpoint_minutes": 0})
    config, components, plan = _prepare(cfg)
    run_dir = tmp_path / "run"
    run_plan(config, components, plan, run_dir, Console(quiet=True))
    store = RunStore(run_dir)
    cohort = max(plan.cohorts.values(), key=len)
    jobs = [plan.jobs[j] for j in cohort]
    for jid in cohort:
        store.record_path(jid).unlink()
    runner = TrainingRunner(config, components, plan, run_dir)
    steps_per_epoch = solo[True][cohort[0]]["history"][0]["step"]

    def interrupt(job, step, total, info):
        if step == steps_per_epoch + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_cohort(jobs, interrupt)
    saved = next((run_dir / "cohorts").rglob("*.pt"))
    damage(saved)
    records = runner.run_cohort(jobs)
    assert not saved.exists() and list((run_dir / "damaged").rglob("*.pt.*"))  # moved aside, never deleted
    if damage is _wrong_shapes:  # broke while being applied: the cohort fails, saying why ...
        assert all(r.status == "failed" and "moved to" in (r.error or "") for r in records)
        for jid in cohort:
            store.record_path(jid).unlink()
        records = runner.run_cohort(jobs)  # ... and the rerun starts over
    got = {r.job_id: json.loads(r.to_json()) for r in records}
    _same(got, {jid: solo[True][jid] for jid in got})


def test_batched_members_match_one_by_one_within_tolerance(solo, tmp_path, monkeypatch):
    from transferbench.batched import BatchedMembers

    sizes: list[int] = []
    step = BatchedMembers.train_step

    def counting(self, *args, **kwargs):
        sizes.append(len(self.members))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(BatchedMembers, "train_step", counting)
    batched = _synthetic(True, performance={"batched": "on"})
    got = _keyed_as(_run(batched, tmp_path / "run"), batched, _synthetic(True))
    ids = dict(zip(_prepare(_synthetic(True))[2].jobs, _prepare(batched)[2].jobs, strict=True))
    plan = _prepare(_synthetic(True))[2]
    fine_tuned = [j for j in plan.jobs.values() if j.protocol_spec and j.protocol_spec["name"] == "finetune"]
    assert sizes and set(sizes) == {len(fine_tuned)}  # the fine-tuned members, as one computation
    for job in plan.jobs.values():
        a, b = got[job.id], solo[True][job.id]
        assert a["status"] == b["status"] == "ok"
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]],
                                                                          rel=1e-4, abs=1e-5)
        assert abs(a["top1"] - b["top1"]) <= 0.1
    mine, theirs = RunStore(tmp_path / "run"), RunStore(solo[("dir", True)])
    for job in fine_tuned:  # the weights themselves, saved per member: close, not equal (kernels round apart)
        a, b = mine.load_checkpoint(ids[job.id]), theirs.load_checkpoint(job.id)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-4), f"{job.id}: {key}"


def test_a_failing_batched_member_leaves_the_others_batched(fake_plugins, tmp_path, monkeypatch):
    from transferbench import cohort

    cfg = tiny_config(executor={"name": "local", "cohorts": True}, performance={"batched": "on"})
    cfg["experiments"][0]["treatments"] = ["BnB+", "AnB+"]
    reference = _run(cfg, tmp_path / "solo", cohorts=False)
    prepare = cohort.prepare_job

    def poisoned(job, ctx, source_state):
        setup = prepare(job, ctx, source_state)
        if job.n == 2 and job.source == "A":
            with torch.no_grad():
                setup.target.model.out.weight.fill_(float("nan"))
        return setup

    monkeypatch.setattr(cohort, "prepare_job", poisoned)
    sizes: list[int] = []
    drop = cohort.BatchedMembers.drop_failed

    def dropping(self):
        drop(self)
        sizes.append(len(self.members))

    monkeypatch.setattr(cohort.BatchedMembers, "drop_failed", dropping)
    got = _run(cfg, tmp_path / "cohort")
    assert sizes[0] == 5 and set(sizes) == {5}  # six batched; the poisoned one left after its first step
    failed = [jid for jid, r in got.items() if r["status"] == "failed"]
    assert len(failed) == 1 and "loss became nan at step 1" in got[failed[0]]["error"]
    for jid, r in got.items():
        if jid not in failed:
            assert r["status"] == "ok"
            assert r["top1"] == pytest.approx(reference[jid]["top1"], abs=0.05)
            assert [h["train_loss"] for h in r["history"]] == pytest.approx(
                [h["train_loss"] for h in reference[jid]["history"]], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_parallel_workers_train_cohorts_in_chunks_to_the_same_records(fake_plugins, tmp_path):
    cfg = tiny_config(executor={"name": "local", "cohorts": True})
    reference = _run(cfg, tmp_path / "one")
    parallel = tiny_config(executor={"name": "local", "cohorts": True, "workers": 2, "cohort_size": 5})
    _same(_run(parallel, tmp_path / "two"), reference)


def test_the_local_executor_with_cohorts_honours_the_executor_contract(tmp_path):
    from transferbench.testing import check_executor
    from transferbench_plugins.local_executor import LocalExecutor, LocalParams

    check_executor(LocalExecutor(LocalParams(cohorts=True)), tmp_path)


def test_plan_prints_the_cost_with_and_without_cohorts(tiny_config_file, capsys):
    from transferbench.cli import main

    path = tiny_config_file()
    assert main(["plan", str(path), "-q", "--decode-rate", "1000"]) == 0
    out = capsys.readouterr().out
    assert "without cohorts (best data path):  14 networks" in out and "with cohorts:" in out and " 3 units" in out
    assert "decode rate 1,000 images/s (given)" in out and "-bound)" in out
    assert main(["plan", str(path), "-q"]) == 0
    assert "measured here" in capsys.readouterr().out
    assert main(["plan", str(path), "--json", "--decode-rate", "1000"]) == 0
    doc = json.loads(capsys.readouterr().out)["cohorts"]
    assert doc["without"]["units"] == 14 and doc["with"]["units"] == 3 and doc["decode_rate"] == 1000
    assert doc["with"]["images"] < doc["without"]["images"] and doc["with"]["flop"] <= doc["without"]["flop"]


def test_switching_cohorts_on_in_a_run_directory_is_refused_with_the_reason(tiny_config_file, tmp_path, capsys):
    from transferbench.cli import main

    path = tiny_config_file()
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--set", "executor.cohorts=true"]) == 2
    assert "executor cohorts switched on or off" in capsys.readouterr().err


def test_a_batched_computation_that_fails_at_once_falls_back_to_one_by_one(solo, tmp_path, monkeypatch):
    from transferbench.batched import BatchedMembers

    def broken(self, x, masks):
        raise RuntimeError("no batching rule here")

    monkeypatch.setattr(BatchedMembers, "_forward", broken)
    batched = _synthetic(True, performance={"batched": "on"})
    _same(_keyed_as(_run(batched, tmp_path / "run"), batched, _synthetic(True)), solo[True])


def test_a_failing_batched_evaluation_evaluates_one_by_one_and_training_stays_batched(solo, tmp_path,
                                                                                       monkeypatch):
    from transferbench.batched import BatchedMembers

    steps: list[int] = []
    step = BatchedMembers.train_step

    def counting(self, *args, **kwargs):
        steps.append(len(self.members))
        return step(self, *args, **kwargs)

    failed_at: list[int] = []

    def broken(self, x):
        failed_at.append(len(steps))
        raise RuntimeError("no batching rule for evaluation")

    monkeypatch.setattr(BatchedMembers, "train_step", counting)
    monkeypatch.setattr(BatchedMembers, "logits", broken)
    batched = _synthetic(True, performance={"batched": "on"})
    got = _keyed_as(_run(batched, tmp_path / "run"), batched, _synthetic(True))
    plan = _prepare(_synthetic(True))[2]
    assert failed_at == [failed_at[0]] and len(steps) > failed_at[0]  # tried once; training went on batched
    for job in plan.jobs.values():
        a, b = got[job.id], solo[True][job.id]
        assert a["status"] == b["status"] == "ok"
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]],
                                                                          rel=1e-4, abs=1e-5)
        assert [h["top1"] for h in a["history"]] == pytest.approx([h["top1"] for h in b["history"]], abs=0.1)


# ---------------------------------------------------------------------------- batched: ids and tolerance


def test_batched_members_are_other_networks_and_stay_off_unless_asked(fake_plugins):
    """Batched members round apart from one-by-one training, so `batched` (when not off) enters
    the ids of the members it may batch (those that train every layer), never the data order."""
    assert parse_config(tiny_config()).performance.batched == "off"
    plain = _prepare(tiny_config(executor={"name": "local", "cohorts": True}))[2]
    off = _prepare(tiny_config(executor={"name": "local", "cohorts": True}, performance={"batched": "off"}))[2]
    assert list(off.jobs) == list(plain.jobs)
    for setting in ("on", "auto"):
        batched = _prepare(tiny_config(executor={"name": "local", "cohorts": True},
                                       performance={"batched": setting}))[2]
        for a, b in zip(plain.jobs.values(), batched.jobs.values(), strict=True):
            may_batch = a.kind == "transfer" and all(a.reading.trained)
            assert (a.id != b.id) is may_batch, (setting, a.kind, a.n, a.protocol_spec)
            assert a.data_seed == b.data_seed
        assert any(not all(j.reading.trained) for j in plain.jobs.values() if j.kind == "transfer")


def test_batched_members_stay_within_tolerance_over_a_longer_run(fake_plugins, tmp_path):
    """Fine-tuned members batched vs one by one over 100 steps (many times the 9-18 of the
    other tests): the batched kernels' rounding grows with the steps but stays small; the
    bounds checked here are the ones docs/performance.md states."""
    cfg = tiny_config(executor={"name": "local", "cohorts": True}, performance={"batched": "on"},
                      output={"checkpoints": "all"})
    cfg["experiments"][0]["treatments"] = ["AnB+"]
    # a stable lr: a diverging run amplifies any rounding
    cfg["train"] = {**cfg["train"], "lr": 0.02, "epochs": None, "steps": 100}
    plain = {**cfg, "performance": {"batched": "off"}}
    got = _keyed_as(_run(cfg, tmp_path / "batched"), cfg, plain)
    solo = _run(plain, tmp_path / "solo", cohorts=False)
    mine, theirs = RunStore(tmp_path / "batched"), RunStore(tmp_path / "solo")
    plan = _prepare(plain)[2]
    ids = dict(zip(plan.jobs, _prepare(cfg)[2].jobs, strict=True))
    transfers = [j.id for j in plan.jobs.values() if j.kind == "transfer"]
    assert len(transfers) >= 2 and all(solo[j]["steps"] == 100 for j in transfers)
    for jid in transfers:
        a, b = got[jid], solo[jid]
        assert a["status"] == b["status"] == "ok"
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]],
                                                                          rel=1e-3, abs=1e-4)
        assert abs(a["top1"] - b["top1"]) <= 0.05
        wa, wb = mine.load_checkpoint(ids[jid]), theirs.load_checkpoint(jid)
        worst = max(float((wa[k] - wb[k]).abs().max() / (wb[k].abs().max() + 1e-12)) for k in wb)
        assert worst < 1e-3, f"{jid}: weights {worst:.2e} apart (relative to the largest weight)"


def test_deterministic_kernels_enter_no_id_and_change_nothing_on_the_cpu(fake_plugins, tmp_path):
    from transferbench.devices import use_deterministic

    try:
        plain = _run(tiny_config(output={"checkpoints": "all"}), tmp_path / "plain", cohorts=False)
        strict = _run(tiny_config(output={"checkpoints": "all"}, performance={"deterministic": True}),
                      tmp_path / "strict", cohorts=False)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        _same(strict, plain)  # same ids, same bits: torch's CPU kernels are already deterministic
    finally:
        use_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
