"""Weights files as sources (X): reading, mapping, identity, refusal to download; XnB runs;
the surgical, surgical_head, lp_ft, reinit and reinit_eval protocols; export round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file, save_file

from tests.conftest import tiny_config
from transferbench.cli import main
from transferbench.config import parse_config
from transferbench.context import TrainContext
from transferbench.engine import run_plan
from transferbench.errors import ConfigError, RunDirError
from transferbench.export import Selection, export_network
from transferbench.files import sha256_file
from transferbench.network import build_meta, initial_state
from transferbench.plan import build_plan
from transferbench.resolve import resolve
from transferbench.sources import SourceFileError, map_source, read_source
from transferbench.trainer import evaluate, train_job

LAYERS = ("h1", "h2", "h3")


def _setup(**changes):
    config = parse_config(tiny_config(**changes))
    components = resolve(config)
    return config, components, build_plan(config, components)


def _weights(path: Path, num_classes: int = 4, seed: int = 0, dim: int = 12, prefix: str = "") -> dict:
    """An MLP's state dict (what a foreign training script would save), written to ``path``."""
    from tests.fakes import MLP

    torch.manual_seed(seed)
    state = {prefix + k: v.clone().contiguous() for k, v in MLP().build(num_classes, (dim,)).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def _x_experiment(checkpoint: str, treatments=("XnB", "XnB+"), **extra) -> list[dict]:
    return [{"name": "x", "split": {"name": "parity"}, "source": {"checkpoint": checkpoint, **extra},
             "treatments": list(treatments)}]


# --------------------------------------------------------------------------- reading and mapping


def test_mapping_names_missing_unexpected_and_mismatched_tensors(fake_plugins, tmp_path):
    state = _weights(tmp_path / "w.safetensors")
    state.pop("h2.0.bias")
    state["h1.0.weight"] = torch.zeros(16, 5)
    state["extra.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "bad.safetensors"))
    config, components, _ = _setup()
    model = build_meta(components.architecture, 4, (12,))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    layers = list(components.architecture.layers(model))
    mapping = map_source(read_source(tmp_path / "bad.safetensors"), shapes, layers, [True, True, True, False])
    assert mapping.missing == [("h2.0.bias", "h2")]
    assert mapping.mismatched == [("h1.0.weight", "h1", (16, 5), (16, 12))]
    assert mapping.unexpected == ["extra.weight"]
    assert set(mapping.head) == {"out.weight", "out.bias"}
    with pytest.raises(ConfigError) as err:  # the plan refuses it, at the file's key, naming every tensor
        _setup(experiments=_x_experiment(str(tmp_path / "bad.safetensors")))
    (key, message), = err.value.problems
    assert key == "experiments.0.source.checkpoint"
    assert "h2.0.bias (h2)" in message and "h1.0.weight (h1): file [16, 5] vs architecture [16, 12]" in message
    assert "extra.weight" in message


def test_a_head_of_another_class_count_is_noted_never_copied(fake_plugins, tmp_path):
    _weights(tmp_path / "w.safetensors", num_classes=1000)
    _, _, plan = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors")))
    assert any("classifier (out" in note and "not copied" in note for note in plan.notes)


def test_xnb_copies_the_file_bit_identically_and_never_the_head(fake_plugins, tmp_path):
    state = _weights(tmp_path / "w.safetensors", num_classes=4)  # the head even has the right shape
    config, components, plan = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors")))
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    ctx = TrainContext(config, components, torch.device("cpu"))
    job = next(j for j in plan.jobs.values() if j.source == "X" and j.n == 3 and j.protocol_spec["name"] == "frozen")
    assert job.depends_on is None and job.external is not None
    from transferbench.sources import load_state

    _, model = train_job(job, ctx, load_state(job.external.file))
    after = model.state_dict()
    for key in (k for k in state if k.startswith(LAYERS)):
        assert torch.equal(after[key], state[key]), key
    assert not torch.equal(after["out.weight"], state["out.weight"])
    record = json.loads((tmp_path / "run" / "records" / f"{job.id}.json").read_text())
    assert record["source_sha256"] == sha256_file(tmp_path / "w.safetensors")
    assert plan.to_json()["jobs"][job.id]["source_checkpoint"]["sha256"] == record["source_sha256"]


def test_bnb_controls_sit_beside_a_file_source(fake_plugins, tmp_path):
    _weights(tmp_path / "w.safetensors")
    _, _, plan = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors"), ["XnB", "XnB+", "BnB", "BnB+"]))
    base_b = next(j for j in plan.jobs.values() if j.kind == "base" and j.target == "B")
    controls = [j for j in plan.jobs.values() if j.source == "B"]
    assert len(controls) == 6 and all(j.depends_on == base_b.id and j.external is None for j in controls)
    assert {c.treatment for c in plan.cells} == {"baseB", "XnB", "XnB+", "BnB", "BnB+"}
    assert not any(j.kind == "base" and j.target == "A" for j in plan.jobs.values())  # X needs no half A


def test_strip_prefix_is_suggested_and_works(fake_plugins, tmp_path):
    _weights(tmp_path / "ddp.pth", prefix="module.")
    with pytest.raises(ConfigError, match="set strip_prefix: 'module.'"):
        _setup(experiments=_x_experiment(str(tmp_path / "ddp.pth")))
    _, _, plan = _setup(experiments=_x_experiment(str(tmp_path / "ddp.pth"), strip_prefix="module."))
    assert any(j.source == "X" for j in plan.jobs.values())


def test_torch_files_are_read_weights_only(tmp_path):
    state = _weights(tmp_path / "plain.pth")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "nested.pt")
    assert read_source(tmp_path / "plain.pth").shapes == read_source(tmp_path / "nested.pt").shapes
    torch.save({"model": state, "optimizer": Path("not a tensor")}, tmp_path / "pickled.pth")
    with pytest.raises(SourceFileError, match="weights only"):
        read_source(tmp_path / "pickled.pth")
    (tmp_path / "w.npz").write_bytes(b"xx")
    with pytest.raises(SourceFileError, match="unknown kind of weights file"):
        read_source(tmp_path / "w.npz")
    with pytest.raises(SourceFileError, match="no such file"):
        read_source(tmp_path / "missing.safetensors")


def test_job_ids_follow_the_file_content_not_its_path(fake_plugins, tmp_path):
    _weights(tmp_path / "w.safetensors")
    _, _, here = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors")))
    (tmp_path / "moved").mkdir()
    shutil.copy(tmp_path / "w.safetensors", tmp_path / "moved" / "renamed.safetensors")
    _, _, moved = _setup(experiments=_x_experiment(str(tmp_path / "moved" / "renamed.safetensors")))
    assert set(here.jobs) == set(moved.jobs)
    _weights(tmp_path / "w.safetensors", seed=1)  # new content, same path
    _, _, changed = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors")))
    x_here = {j.id: j.seed for j in here.jobs.values() if j.source == "X"}
    x_changed = {j.id: j.seed for j in changed.jobs.values() if j.source == "X"}
    assert not set(x_here) & set(x_changed)  # new jobs ...
    assert not set(x_here.values()) & set(x_changed.values())  # ... with their own seeds
    bases = {j.id for j in here.jobs.values() if j.kind == "base"}
    assert bases <= set(changed.jobs)  # the network from scratch does not depend on the file


def test_a_file_changed_after_the_plan_fails_its_networks(fake_plugins, tmp_path):
    _weights(tmp_path / "w.safetensors")
    config, components, plan = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors")))
    _weights(tmp_path / "w.safetensors", seed=5)
    summary = run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    assert summary.failed == 6
    record = next(json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")
                  if json.loads(p.read_text())["status"] == "failed")
    assert "changed since the run was planned" in record["error"]


def test_x_needs_the_experiments_source(fake_plugins):
    with pytest.raises(ConfigError, match="set the experiment's source"):
        _setup(experiments=[{"name": "x", "split": {"name": "parity"}, "treatments": ["XnB"]}])


def test_a_source_no_treatment_reads_is_refused(fake_plugins, tmp_path):
    with pytest.raises(ConfigError, match="the weights file is not used"):
        _setup(experiments=[{"name": "x", "split": {"name": "parity"}, "treatments": ["AnB"],
                             "source": {"checkpoint": str(tmp_path / "w.safetensors")}}])


def test_missing_file_is_exit_2_at_its_key(tiny_config_file, tmp_path, capsys):
    path = tiny_config_file(experiments=_x_experiment(str(tmp_path / "nowhere.safetensors")))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "experiments.0.source.checkpoint" in err and "no such file" in err


@pytest.mark.parametrize("arch", [
    {"name": "timm", "model": "resnet10t", "pretrained": True},
    {"name": "timm", "model": "resnet10t", "kwargs": {"pretrained_cfg_overlay": {"file": "w.pth"}}},
])
def test_timm_weights_are_never_downloaded(tmp_path, capsys, arch):
    cfg = {"name": "t", "data": {"name": "synthetic", "num_classes": 4}, "architecture": arch,
           "experiments": [{"name": "e", "split": "random", "treatments": ["AnB"]}], "train": {"epochs": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "architecture." in err and "source: {checkpoint:" in err and "pretrained_cfg_overlay=dict(file=...)" in err


# --------------------------------------------------------------------------- protocols


def _trained_base(tmp_path, treatments, **changes):
    config, components, plan = _setup(experiments=[{"name": "p", "split": {"name": "parity"},
                                                    "treatments": treatments}], **changes)
    ctx = TrainContext(config, components, torch.device("cpu"))
    base = next(j for j in plan.jobs.values() if j.kind == "base" and j.target == "B")
    _, model = train_job(base, ctx)
    return config, components, plan, ctx, base, {k: v.clone() for k, v in model.state_dict().items()}


def _job(plan, name, n):
    return next(j for j in plan.jobs.values() if j.protocol_spec and j.protocol_spec["name"] == name and j.n == n)


def test_initial_weights_are_recomputed_exactly(fake_plugins, monkeypatch, tmp_path):
    import transferbench.trainer as trainer

    seen = {}
    real = trainer.build_target

    def spy(*args, **kwargs):
        target = real(*args, **kwargs)
        seen.setdefault("init", {k: v.clone() for k, v in target.model.state_dict().items()})
        return target

    monkeypatch.setattr(trainer, "build_target", spy)
    config, components, plan, ctx, base, _ = _trained_base(tmp_path, ["BnB"])
    again = initial_state(components.architecture, base.num_classes, ctx.input_shape, base.seed)
    assert seen["init"].keys() == again.keys()
    assert all(torch.equal(seen["init"][k], again[k]) for k in again)


def _unchanged(after, before, layer):
    return all(torch.equal(after[k], before[k]) for k in after if k.startswith(layer + "."))


@pytest.mark.parametrize("protocol", ["surgical", "surgical_head"])
def test_surgical_fine_tunes_only_layer_k(fake_plugins, tmp_path, protocol):
    """surgical: only layer k changes, the source's classifier is kept bit for bit;
    surgical_head: layer k and a new classifier learn, the rest is the source's, bit for bit."""
    treatment = {"name": "surgical", "source": "B", "target": "B", "protocol": protocol}
    config, components, plan, ctx, base, source = _trained_base(tmp_path, [treatment])
    for k in (1, 2, 3):
        record, model = train_job(_job(plan, protocol, k), ctx, source)
        after = model.state_dict()
        for i, layer in enumerate(LAYERS, start=1):
            same = _unchanged(after, source, layer)
            assert same == (i != k), f"k={k}: layer {layer} {'changed' if not same else 'unchanged'}"
        assert _unchanged(after, source, "out") == (protocol == "surgical")
        assert record.frozen_cache == (k > 1)  # the frozen layers below k are computed once


def test_surgical_keeps_the_source_s_classifier_so_its_target_is_the_source_s_task(fake_plugins):
    with pytest.raises(ConfigError, match="keeps the source's classifier"):
        _setup(experiments=[{"name": "p", "split": {"name": "parity"},
                             "treatments": [{"name": "s", "source": "A", "target": "B", "protocol": "surgical"}]}])
    _setup(experiments=[{"name": "p", "split": {"name": "parity"},  # a new classifier: any target
                         "treatments": [{"name": "s", "source": "A", "target": "B", "protocol": "surgical_head"}]}])


def test_surgical_s_new_meaning_makes_new_networks(fake_plugins):
    """0.4's surgical keeps the classifier (0.3's trained a new one): its revision enters the ids."""
    def ids(protocol):
        plan = _setup(experiments=[{"name": "p", "split": {"name": "parity"}, "treatments": [
            {"name": "s", "source": "B", "target": "B", "protocol": protocol}]}])[2]
        return {j.id for j in plan.jobs.values() if j.kind == "transfer"}

    from transferbench_plugins.protocols import Surgical

    new, head = ids("surgical"), ids("surgical_head")
    assert new.isdisjoint(head) and len(new) == len(head) == 3
    revision = Surgical.revision
    try:
        Surgical.revision = 0  # as if the meaning had not changed: the spec 0.3 hashed
        assert ids("surgical").isdisjoint(new)
    finally:
        Surgical.revision = revision


def test_lp_ft_probes_with_the_copied_layers_frozen_then_tunes_them(fake_plugins, monkeypatch, tmp_path):
    from transferbench.network import Target

    treatment = {"name": "lpft", "source": "B", "target": "B", "protocol": {"name": "lp_ft", "probe_fraction": 0.5}}
    config, components, plan, ctx, base, source = _trained_base(tmp_path, [treatment])
    seen: dict = {}
    real = Target.stage

    def spy(self, done, total):
        changed = real(self, done, total)
        if changed:
            seen.setdefault("held", []).append((done, list(self.held)))
            seen.setdefault("at", []).append({k: v.clone() for k, v in self.model.state_dict().items()})
        return changed

    monkeypatch.setattr(Target, "stage", spy)
    job = _job(plan, "lp_ft", 3)  # every hidden layer copied: a linear probe, then fine-tuning
    assert not job.reading.joins_cohort
    record, model = train_job(job, ctx, source)
    total = record.steps
    assert [d for d, _ in seen["held"]] == [0, round(0.5 * total)]
    assert seen["held"][0][1] == ["h1", "h2", "h3"] and seen["held"][1][1] == []
    released = seen["at"][1]  # when the probe ends: copied layers still the source's, the head trained
    assert all(_unchanged(released, source, layer) for layer in LAYERS)
    assert not _unchanged(released, seen["at"][0], "out")
    after = model.state_dict()  # then every layer learns
    assert not any(_unchanged(after, source, layer) for layer in LAYERS)
    assert record.trainable_params == sum(p.numel() for p in model.parameters())


def test_lp_ft_s_probe_enters_the_job_id(fake_plugins):
    def ids(fraction):
        plan = _setup(experiments=[{"name": "p", "split": {"name": "parity"}, "treatments": [
            {"name": "l", "source": "A", "protocol": {"name": "lp_ft", "probe_fraction": fraction}}]}])[2]
        return {j.id for j in plan.jobs.values() if j.kind == "transfer"}

    assert ids(0.5).isdisjoint(ids(0.25))


def test_surgical_cached_and_plain_paths_agree(fake_plugins, tmp_path):
    treatment = {"name": "surgical", "source": "B", "target": "B", "protocol": "surgical"}
    _, _, plan, ctx, _, source = _trained_base(tmp_path, [treatment])
    cached, m1 = train_job(_job(plan, "surgical", 3), ctx, source)
    config, components, plan2 = _setup(experiments=[{"name": "p", "split": {"name": "parity"},
                                                     "treatments": [treatment]}],
                                       performance={"cache_frozen": False})
    plain, m2 = train_job(_job(plan2, "surgical", 3), TrainContext(config, components, torch.device("cpu")), source)
    assert cached.frozen_cache and not plain.frozen_cache
    for k, v in m1.state_dict().items():
        assert torch.allclose(v, m2.state_dict()[k], atol=1e-5), k


def test_reinit_resets_layer_k_to_its_initial_weights_and_retrains_it(fake_plugins, tmp_path):
    treatment = {"name": "reinit", "source": "B", "protocol": {"name": "reinit", "train_copied": False}}
    config, components, plan, ctx, base, source = _trained_base(tmp_path, [treatment])
    job = _job(plan, "reinit", 2)
    init = initial_state(components.architecture, base.num_classes, ctx.input_shape, base.seed)
    from transferbench.network import build_target

    torch.manual_seed(job.seed)
    target = build_target(components.architecture, job, ctx.input_shape, source, init)
    start = target.model.state_dict()
    assert torch.equal(start["h2.0.weight"], init["h2.0.weight"])  # reset to where the source started
    assert torch.equal(start["h1.0.weight"], source["h1.0.weight"]) and torch.equal(start["h3.0.bias"],
                                                                                    source["h3.0.bias"])
    record, model = train_job(job, ctx, source, init_state=init)
    after = model.state_dict()
    assert not torch.equal(after["h2.0.weight"], init["h2.0.weight"])  # layer k learnt
    assert torch.equal(after["h1.0.weight"], source["h1.0.weight"])  # the copied layers stay frozen
    assert torch.equal(after["h3.0.weight"], source["h3.0.weight"])


def test_reinit_eval_trains_nothing(fake_plugins, tmp_path):
    treatment = {"name": "reset", "source": "B", "target": "B", "protocol": "reinit_eval"}
    config, components, plan, ctx, base, source = _trained_base(tmp_path, [treatment])
    init = initial_state(components.architecture, base.num_classes, ctx.input_shape, base.seed)
    for k in (1, 3):
        record, model = train_job(_job(plan, "reinit_eval", k), ctx, source, init_state=init)
        assert record.steps == 0 and record.history == [] and record.trainable_params == 0
        after = model.state_dict()
        for name, value in after.items():
            expected = init if name.startswith(LAYERS[k - 1]) else source
            assert torch.equal(value, expected[name]), name  # nothing trained, the head included
        from transferbench.jobdata import prepare_job_data
        from transferbench.network import Target
        from transferbench.reading import ProtocolReading

        data = prepare_job_data(ctx, base.classes, Target(model, [], ProtocolReading(()), {}, []))
        assert record.top1 == evaluate(model, data.eval, data.transform, ctx.device, 64)[0]


def test_the_runner_recomputes_the_initial_weights(fake_plugins, tmp_path):
    treatment = {"name": "reset", "source": "B", "target": "B", "protocol": "reinit_eval"}
    config, components, plan = _setup(experiments=[{"name": "p", "split": {"name": "parity"},
                                                    "treatments": [treatment], "layers": [1, 3]}])
    summary = run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    assert summary.failed == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    steps = sorted(r["steps"] for r in records)
    assert len(records) == 3 and steps[:2] == [0, 0] and steps[2] > 0  # baseB trained, two reset networks evaluated


def test_the_contract_check_knows_layer_protocols():
    from transferbench import LayerAction, TransferProtocol
    from transferbench.testing import ContractError, check_protocol

    class Blind(TransferProtocol):  # says n names a layer, then treats it like the others
        n_meaning = "layer"

        def actions(self, n, num_layers):
            return [LayerAction(copy=True, train=False)] * (num_layers - 1) + [LayerAction(False, True)]

    class Reset(Blind):  # from_init without copy means nothing
        def actions(self, n, num_layers):
            out = super().actions(n, num_layers)
            out[n - 1] = LayerAction(copy=False, train=True, from_init=True)
            return out

    with pytest.raises(ContractError, match="layer n is treated unlike the others"):
        check_protocol(Blind)
    with pytest.raises(ContractError, match="from_init needs copy"):
        check_protocol(Reset)


def test_evaluate_only_needs_the_sources_own_task(fake_plugins):
    treatment = {"name": "reset", "source": "A", "target": "B", "protocol": "reinit_eval"}
    with pytest.raises(ConfigError, match="its target must be the source's own half"):
        _setup(experiments=[{"name": "p", "split": {"name": "parity"}, "treatments": [treatment]}])


def test_reset_to_initial_weights_of_a_file_needs_its_init(fake_plugins, tmp_path):
    _weights(tmp_path / "w.safetensors")
    reinit = {"name": "reinit", "source": "X", "protocol": "reinit"}
    with pytest.raises(ConfigError) as err:
        _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors"), [reinit]))
    assert err.value.problems[0][0] == "experiments.0.source.init"
    _weights(tmp_path / "w.init.safetensors", seed=9)
    _, _, plan = _setup(experiments=_x_experiment(str(tmp_path / "w.safetensors"), [reinit],
                                                  init=str(tmp_path / "w.init.safetensors")))
    job = next(j for j in plan.jobs.values() if j.source == "X")
    assert job.external.init is not None
    _, _, random = _setup(experiments=_x_experiment(
        str(tmp_path / "w.safetensors"), [{**reinit, "protocol": {"name": "reinit", "reset": "random"}}]))
    assert all(j.external.init is None for j in random.jobs.values() if j.source == "X")


# --------------------------------------------------------------------------- export


@pytest.fixture
def source_run(fake_plugins, tmp_path):
    config, components, plan = _setup(experiments=[{"name": "src", "split": {"name": "parity"}, "bases": ["A", "B"]}],
                                      output={"checkpoints": "all"})
    (tmp_path / "run").mkdir()
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    return tmp_path / "run", plan


def test_export_round_trip(source_run, tmp_path):
    run_dir, plan = source_run
    done = export_network(run_dir, tmp_path / "out" / "a", Selection(treatment="baseA"), init=True)
    job = plan.jobs[done.job_id]
    record = json.loads((run_dir / "records" / f"{done.job_id}.json").read_text())
    assert done.weights.name == "a.safetensors" and done.sha256 == record["checkpoint_sha256"]
    info = json.loads(done.info.read_text())
    assert info["architecture"] == {"name": "mlp", "hidden": 16, "depth": 3}
    assert info["num_classes"] == 4 and [c["index"] for c in info["classes"]] == [0, 2, 4, 6]
    assert info["job"]["id"] == done.job_id and info["sha256"] == done.sha256
    init = load_file(done.init)
    config, components, _ = _setup()
    recomputed = initial_state(components.architecture, 4, (12,), job.seed)
    assert all(torch.equal(init[k], recomputed[k]) for k in recomputed)

    # the export is the source of the next run: the same weights arrive, bit for bit
    exported = load_file(done.weights)
    config, components, plan2 = _setup(experiments=_x_experiment(str(done.weights), ["XnB"]))
    run_plan(config, components, plan2, tmp_path / "next", Console(quiet=True))
    ctx = TrainContext(config, components, torch.device("cpu"))
    from transferbench.sources import load_state

    xjob = next(j for j in plan2.jobs.values() if j.source == "X" and j.n == 3)
    _, model = train_job(xjob, ctx, load_state(xjob.external.file))
    for key in (k for k in exported if k.startswith(LAYERS)):
        assert torch.equal(model.state_dict()[key], exported[key]), key


def test_export_says_what_is_ambiguous_missing_or_not_kept(source_run, tmp_path, capsys):
    run_dir, plan = source_run
    with pytest.raises(ConfigError, match="2 networks match experiment=src: .*--treatment baseA"):
        export_network(run_dir, tmp_path / "x", Selection(experiment="src"))
    with pytest.raises(ConfigError, match="no network of the run matches treatment=AnB; it has src/baseA, src/baseB"):
        export_network(run_dir, tmp_path / "x", Selection(treatment="AnB"))
    job = next(iter(plan.jobs))
    assert export_network(run_dir, tmp_path / "x", Selection(job=job[:8])).job_id == job
    with pytest.raises(ConfigError, match="exists; choose another --out, or --force"):
        export_network(run_dir, tmp_path / "x", Selection(job=job[:8]))
    assert export_network(run_dir, tmp_path / "x", Selection(job=job[:8]), force=True).job_id == job
    (run_dir / "checkpoints" / f"{job}.safetensors").unlink()
    with pytest.raises(RunDirError, match="is missing .its record says it was kept.*transferbench run .*config.yaml"):
        export_network(run_dir, tmp_path / "y", Selection(job=job))
    record = run_dir / "records" / f"{job}.json"  # a network whose weights the run did not keep
    record.write_text(json.dumps({**json.loads(record.read_text()), "checkpoint_sha256": None}))
    with pytest.raises(RunDirError, match="were not kept.*--set output.checkpoints=all"):
        export_network(run_dir, tmp_path / "y", Selection(job=job))
    # through the command line: the same messages, exit code 2
    assert main(["export", str(run_dir), "--out", str(tmp_path / "z"), "--experiment", "src"]) == 2
    assert "networks match" in capsys.readouterr().err
    other = next(j for j in plan.jobs if j != job)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "z"), "--job", other]) == 0
    assert (tmp_path / "z.safetensors").is_file() and (tmp_path / "z.json").is_file()


# --------------------------------------------------------------------------- estimators on a file


def test_estimators_score_the_weights_file_and_join_the_answer(fake_plugins, tmp_path):
    _weights(tmp_path / "w.safetensors", num_classes=1000)  # its head never matters to layer-n features
    exp = {**_x_experiment(str(tmp_path / "w.safetensors"))[0], "estimators": ["knn", "cka"],
           "split": {"name": "parity", "seeds": [0, 1]}}
    config, components, plan = _setup(experiments=[exp])
    files = [e for e in plan.estimates if e.source == "X"]
    assert {(e.target, e.n, e.estimator) for e in files} == {("B", n, est) for n in (1, 2, 3) for est in ("knn", "cka")}
    x_jobs = [plan.jobs[e.job_id] for e in files]
    assert all(j.depends_on is None and j.external is not None for j in x_jobs)
    assert {j.after for j in x_jobs if j.estimator_spec["name"] == "cka"} == {
        (b.id,) for b in plan.jobs.values() if b.kind == "base" and b.target == "B"}
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    sha = sha256_file(tmp_path / "w.safetensors")
    for job in x_jobs:
        record = json.loads((tmp_path / "run" / "records" / f"{job.id}.json").read_text())
        assert record["status"] == "ok" and record["source_sha256"] == sha
    console = Console(record=True, width=300)
    from transferbench.report import run_report

    run_report(tmp_path / "run", plots=False, console=console)
    text = console.export_text()
    assert "x: recommendation (top1)" in text and "Estimator knn would freeze" in text
