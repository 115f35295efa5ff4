"""The engine on fake plugins: plan, copy/freeze semantics, determinism, failures, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tests.conftest import tiny_config
from transferbench.audit import audit_run
from transferbench.config import parse_config
from transferbench.context import TrainContext
from transferbench.engine import run_plan
from transferbench.errors import ConfigError, RunDirError
from transferbench.interfaces import LayerAction
from transferbench.network import apply_transfer
from transferbench.plan import build_plan
from transferbench.reading import ProtocolReading
from transferbench.resolve import resolve
from transferbench.store import RunStore
from transferbench.trainer import train_job


def _setup(**changes):
    config = parse_config(tiny_config(**changes))
    components = resolve(config)
    return config, components, build_plan(config, components)


def _run(tmp_path: Path, **changes):
    config, components, plan = _setup(**changes)
    summary = run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    return plan, summary, RunStore(tmp_path / "run")


def test_plan_has_bases_and_every_treatment_and_n(fake_plugins):
    _, _, plan = _setup()
    assert plan.layer_names == ["h1", "h2", "h3", "out"]
    bases = [j for j in plan.jobs.values() if j.kind == "base"]
    assert sorted(j.target for j in bases) == ["A", "B"]
    cells = {(c.treatment, c.n) for c in plan.cells}
    for t in ["BnB", "BnB+", "AnB", "AnB+"]:
        assert {(t, n) for n in (1, 2, 3)} <= cells
    assert len(plan.jobs) == 2 + 4 * 3
    # dependencies: AnB copies from baseA, BnB from baseB
    base_of = {j.target: j.id for j in bases}
    for c in plan.cells:
        job = plan.jobs[c.job_id]
        if c.treatment.startswith("A") and c.treatment != "baseA":
            assert job.depends_on == base_of["A"]
        if c.treatment.startswith("B") and c.treatment != "baseB":
            assert job.depends_on == base_of["B"]
    # bases come before the jobs that copy from them
    order = list(plan.jobs)
    for job in plan.jobs.values():
        if job.depends_on:
            assert order.index(job.depends_on) < order.index(job.id)


def test_identical_jobs_are_planned_once(fake_plugins):
    exp = tiny_config()["experiments"][0]
    twin = {**exp, "name": "twin"}
    _, _, plan = _setup(experiments=[exp, twin])
    assert len(plan.jobs) == 14  # the second experiment names the same networks
    assert len(plan.cells) == 28


def test_job_hash_changes_with_what_determines_the_result(fake_plugins):
    _, _, plan = _setup()
    _, _, plan_lr = _setup(train={**tiny_config()["train"], "lr": 0.05})
    assert not set(plan.jobs) & set(plan_lr.jobs)
    _, _, plan_dev = _setup(device="cpu", threads=1)  # where it runs doesn't change results
    assert set(plan.jobs) == set(plan_dev.jobs)


def test_copy_freeze_reinit_semantics(fake_plugins):
    config, components, plan = _setup()
    ctx = TrainContext(config, components, torch.device("cpu"))
    base = next(j for j in plan.jobs.values() if j.kind == "base" and j.target == "A")
    _, source_model = train_job(base, ctx)
    source = {k: v.clone() for k, v in source_model.state_dict().items()}

    frozen = next(j for j in plan.jobs.values()
                  if j.depends_on == base.id and j.n == 2 and j.protocol_spec["name"] == "frozen")
    _, model = train_job(frozen, ctx, source)
    after = model.state_dict()
    for k in ("h1.0.weight", "h1.0.bias", "h2.0.weight", "h2.0.bias"):
        assert torch.equal(after[k], source[k]), f"frozen {k} changed"
        assert not dict(model.named_parameters())[k].requires_grad
    for k in ("h3.0.weight", "out.weight"):
        assert not torch.equal(after[k], source[k]), f"{k} should be re-initialised and trained"

    # fine-tuned: copied at the start, then trained away from the source
    ft = next(j for j in plan.jobs.values()
              if j.depends_on == base.id and j.n == 2 and j.protocol_spec["name"] == "finetune")
    torch.manual_seed(ft.seed)
    fresh = components.architecture.build(ft.num_classes, (12,))
    layers = components.architecture.layers(fresh)
    apply_transfer(fresh, layers, ft.read_protocol(len(layers)), source)
    st = fresh.state_dict()
    assert torch.equal(st["h2.0.weight"], source["h2.0.weight"])
    assert not torch.equal(st["h3.0.weight"], source["h3.0.weight"])  # fresh init, not copied
    assert all(p.requires_grad for p in fresh.parameters())
    _, tuned = train_job(ft, ctx, source)
    assert not torch.equal(tuned.state_dict()["h1.0.weight"], source["h1.0.weight"])


def test_shape_mismatch_on_copy_is_an_error(fake_plugins):
    config, components, _ = _setup()
    model = components.architecture.build(3, (12,))
    other = components.architecture.build(3, (7,))
    layers = components.architecture.layers(model)
    with pytest.raises(Exception, match="cannot copy"):
        apply_transfer(model, layers, ProtocolReading((LayerAction(True, False),) + (LayerAction(False, True),) * 3),
                       other.state_dict())


def test_run_writes_one_record_per_network_and_is_deterministic(fake_plugins, tmp_path):
    plan, summary, store = _run(tmp_path / "one")
    assert summary.failed == 0 and summary.trained == len(plan.jobs)
    records = sorted((tmp_path / "one" / "run" / "records").glob("*.json"))
    assert len(records) == len(plan.jobs)
    first = {r.stem: json.loads(r.read_text()) for r in records}
    assert all(r["status"] == "ok" and 0 <= r["top1"] <= r["top5"] <= 1 for r in first.values())
    # base nets learn the fake task far above chance (4 classes a half)
    assert all(first[j.id]["top1"] > 0.5 for j in plan.jobs.values() if j.kind == "base")
    # checkpoints only for networks that others copy from
    ckpts = {p.stem for p in (tmp_path / "one" / "run" / "checkpoints").glob("*.safetensors")}
    assert ckpts == {j.id for j in plan.jobs.values() if j.kind == "base"}

    _, _, _ = _run(tmp_path / "two")
    for rid, rec in first.items():
        again = json.loads((tmp_path / "two" / "run" / "records" / f"{rid}.json").read_text())
        assert again["history"] == rec["history"]


def test_failed_job_is_recorded_and_independent_jobs_still_run(fake_plugins, tmp_path):
    # class 0 is even, so half A of the parity split holds NaN inputs: baseA fails
    plan, summary, store = _run(tmp_path, data={"name": "blobs", "poison": 0})
    recs = {jid: store.read_record(jid) for jid in plan.jobs}
    base_a = next(j for j in plan.jobs.values() if j.kind == "base" and j.target == "A")
    assert recs[base_a.id].status == "failed"
    assert "loss" in recs[base_a.id].error
    for job in plan.jobs.values():
        if job.depends_on == base_a.id:
            assert recs[job.id].status == "failed"
            assert "source network" in recs[job.id].error
        elif job.id != base_a.id:
            assert recs[job.id].status == "ok"
    assert summary.failed == 1 + len(plan.dependents(base_a.id))


def test_resume_skips_finished_and_redoes_missing(fake_plugins, tmp_path):
    plan, _, store = _run(tmp_path)
    victims = [j for j in plan.jobs.values() if j.kind == "transfer"][:3]
    before = {j.id: store.read_record(j.id) for j in plan.jobs.values()}
    for j in victims:
        store.record_path(j.id).unlink()  # as if the run was killed before these finished
    assert [j.id for j in audit_run(plan, store).todo] == [j.id for j in victims]
    _, summary, _ = _run(tmp_path)
    assert summary.skipped == len(plan.jobs) - 3 and summary.trained == 3
    for j in plan.jobs.values():
        rec = store.read_record(j.id)
        if j in victims:
            assert rec.history == before[j.id].history  # redone, same numbers
        else:
            assert rec.finished_at == before[j.id].finished_at  # untouched


def test_resume_retrains_a_source_whose_checkpoint_is_missing(fake_plugins, tmp_path):
    plan, _, store = _run(tmp_path)
    base = next(j for j in plan.jobs.values() if j.kind == "base")
    dependent = plan.dependents(base.id)[0]
    before = {j.id: store.read_record(j.id) for j in plan.jobs.values()}
    store.checkpoint_path(base.id).unlink()
    store.record_path(dependent.id).unlink()
    audit = audit_run(plan, store)
    assert audit.reasons[base.id].startswith("checkpoint missing") and audit.reasons[dependent.id] == "not trained yet"
    # the source's other dependents are checked again: kept if the source retrains to the same weights
    assert {j.id for j in audit.todo} == {base.id} | {j.id for j in plan.dependents(base.id)}
    _run(tmp_path)
    assert store.read_record(base.id).checkpoint_sha256 == before[base.id].checkpoint_sha256  # deterministic
    for other in plan.dependents(base.id):
        if other.id != dependent.id:
            assert store.read_record(other.id).finished_at == before[other.id].finished_at  # not retrained


def test_locked_run_dir_is_refused(fake_plugins, tmp_path):
    config, components, plan = _setup()
    store = RunStore(tmp_path / "run")
    with store.lock():
        with pytest.raises(RunDirError, match="in use"):
            run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))


def test_run_dir_of_another_config_is_refused(fake_plugins, tmp_path):
    _run(tmp_path)
    with pytest.raises(RunDirError, match="different config"):
        _run(tmp_path, seed=1)


def test_layers_outside_range_are_config_errors(fake_plugins):
    exp = {**tiny_config()["experiments"][0], "layers": [0, 4]}
    with pytest.raises(ConfigError) as err:
        _setup(experiments=[exp])
    assert err.value.problems[0][0] == "experiments.0.layers"
    assert "1..3" in err.value.problems[0][1]


def test_parallel_workers_give_the_same_records_as_one(fake_plugins, tmp_path):
    plan, _, store1 = _run(tmp_path / "serial")
    plan2, summary, store2 = _run(tmp_path / "parallel", executor={"name": "local", "workers": 2})
    assert summary.failed == 0 and set(plan.jobs) == set(plan2.jobs)
    for jid in plan.jobs:
        a, b = store1.read_record(jid), store2.read_record(jid)
        assert a.history == b.history, f"job {jid} differs between 1 and 2 workers"


def test_frozen_prefix_cache_gives_the_plain_results(fake_plugins, tmp_path):
    plan, _, cached = _run(tmp_path / "cached")
    _, _, plain = _run(tmp_path / "plain", performance={"cache_frozen": False})
    frozen = [j for j in plan.jobs.values() if j.protocol_spec and j.protocol_spec["name"] == "frozen"]
    assert frozen
    for job in plan.jobs.values():
        a, b = cached.read_record(job.id), plain.read_record(job.id)
        assert a.frozen_cache is (job in frozen) and b.frozen_cache is False
        for ha, hb in zip(a.history, b.history):
            assert ha.train_loss == pytest.approx(hb.train_loss, rel=1e-4, abs=1e-5)
            assert ha.top1 == pytest.approx(hb.top1, abs=1e-9)


def test_augmentation_turns_the_cache_off(fake_plugins, tmp_path):
    from transferbench.config import Augment
    from transferbench.jobdata import _can_cache
    from transferbench.network import build_target
    from transferbench.taskdata import open_task

    config, components, plan = _setup()
    job = next(j for j in plan.jobs.values() if j.protocol_spec and j.protocol_spec["name"] == "frozen")
    ctx = TrainContext(config, components, torch.device("cpu"))
    source = {k: v.clone() for k, v in components.architecture.build(job.num_classes, (12,)).state_dict().items()}
    target = build_target(components.architecture, job, (12,), source)
    train = open_task(components.data, "train", job.classes, config.loader, ctx.memory)
    assert _can_cache(ctx, target, train)
    config.train.augment = Augment(mirror=True)  # blobs are 1-D: the plan itself would refuse this
    assert not _can_cache(ctx, target, train)


def test_augmentation_on_non_image_inputs_is_a_config_error(fake_plugins):
    with pytest.raises(ConfigError, match="need \\(channels, height, width\\) inputs"):
        _setup(train={**tiny_config()["train"], "augment": {"mirror": True}})


def test_uint8_images_reach_the_trainer_as_uint8(tmp_path):
    from transferbench.taskdata import load_split_tensors as load_tensor_split
    from transferbench_plugins.synthetic import SyntheticDataSource as Synthetic

    source = Synthetic(Synthetic.Params.model_validate(Synthetic.example_params(tmp_path)))
    split = load_tensor_split(source, "train")
    assert split.inputs.dtype == torch.uint8  # so BatchTransform scales it to [0, 1]


def test_shared_cache_reuses_networks_across_runs(fake_plugins, tmp_path):
    shared = str(tmp_path / "shared")
    plan, first, store1 = _run(tmp_path / "one", output={"shared_cache": shared})
    assert first.trained == len(plan.jobs)
    # a second run elsewhere, with one more experiment sharing the same base networks
    exp = tiny_config()["experiments"][0]
    more = {**exp, "name": "more", "treatments": ["AnA"]}
    plan2, second, store2 = _run(tmp_path / "two", output={"shared_cache": shared}, experiments=[exp, more])
    new = set(plan2.jobs) - set(plan.jobs)
    assert new and second.trained == len(new)  # only AnA networks are trained
    for jid in plan.jobs:
        rec = store2.read_record(jid)
        assert rec.reused_from == shared
        assert rec.history == store1.read_record(jid).history
    base = next(j for j in plan.jobs.values() if j.kind == "base" and j.target == "A")
    assert store2.has_checkpoint(base.id)  # AnA copies from it, so its weights came along
