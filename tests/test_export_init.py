"""``export --init`` writes exactly what a network started training from (issue 23, class 7),
or refuses, saying why: for a transferred network that is the state its job built before
training (layers 1..n as its protocol copied them, its own initialisation elsewhere), not a
fresh draw from its seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.conftest import tiny_config
from tests.test_external_sources import _weights, _x_experiment
from transferbench import trainer
from transferbench.api import prepare
from transferbench.cli import main
from transferbench.errors import RunDirError
from transferbench.export import Selection, export_network
from transferbench.files import sha256_file

TREATMENTS = ["AnB", "AnB+", {"name": "reset", "source": "A", "target": "B", "protocol": "reinit"},
              {"name": "rand", "target": "B", "protocol": "random_frozen"}]


@pytest.fixture
def started(fake_plugins, tmp_path, monkeypatch):
    """A run (base sources, a weights file) keeping every checkpoint, and the state each
    job's network had right after build_target, caught as training built it."""
    _weights(tmp_path / "w.safetensors")
    exps = [{"name": "p", "split": {"name": "parity"}, "treatments": TREATMENTS, "layers": [1, 2]},
            *_x_experiment(str(tmp_path / "w.safetensors"), ["XnB", "XnB+"])]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(experiments=exps, output={"checkpoints": "all"})))
    built: dict[int, dict[str, torch.Tensor]] = {}
    build = trainer.build_target

    def catching(*args, **kwargs):
        target = build(*args, **kwargs)
        built[torch.initial_seed()] = {k: v.detach().clone() for k, v in target.model.state_dict().items()}
        return target

    monkeypatch.setattr(trainer, "build_target", catching)
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    monkeypatch.undo()
    return cfg, tmp_path / "run", prepare(cfg).plan, built


def test_the_init_of_every_network_is_the_state_it_started_training_from(started, tmp_path):
    cfg, run, plan, built = started
    transfers = [j for j in plan.jobs.values() if j.kind == "transfer"]
    assert {j.protocol_spec["name"] for j in transfers} == {"frozen", "finetune", "reinit", "random_frozen"}
    assert any(j.external for j in transfers)
    for job in plan.jobs.values():
        done = export_network(run, tmp_path / "x" / job.id, Selection(job=job.id), init=True)
        init = load_file(done.init)
        assert init.keys() == built[job.seed].keys()
        for key, value in built[job.seed].items():
            assert torch.equal(init[key], value), f"{job.kind} {job.protocol_spec}: {key}"
        info = json.loads(done.info.read_text())
        assert info["init_sha256"] == sha256_file(done.init)
    frozen = next(j for j in transfers if j.protocol_spec["name"] == "frozen" and j.n == 2 and not j.external)
    init = load_file(tmp_path / "x" / f"{frozen.id}.init.safetensors")
    source = load_file(run / "checkpoints" / f"{frozen.depends_on}.safetensors")
    assert torch.equal(init["h1.0.weight"], source["h1.0.weight"])  # copied from the trained source,
    from transferbench.network import initial_state

    own = initial_state(prepare(cfg).components.architecture, 4, (12,), frozen.seed)
    assert not torch.equal(init["h1.0.weight"], own["h1.0.weight"])  # ... not a fresh draw from its seed
    assert torch.equal(init["h3.0.weight"], own["h3.0.weight"])  # its own initialisation above n


def _frozen(plan, external: bool = False):
    return next(j for j in plan.jobs.values() if j.kind == "transfer" and j.protocol_spec["name"] == "frozen"
                and bool(j.external) == external)


def test_without_its_source_checkpoint_the_init_is_refused_and_the_advised_command_repairs_it(
        started, tmp_path, capsys):
    cfg, run, plan, _ = started
    job = _frozen(plan)
    (run / "checkpoints" / f"{job.depends_on}.safetensors").unlink()
    code = main(["export", str(run), "--job", job.id, "--out", str(tmp_path / "y"), "--init"])
    err = capsys.readouterr().err
    assert code == 2 and "starting weights" in err and job.depends_on in err and "missing" in err, err
    assert not list(tmp_path.glob("y.*")), "a refused export writes nothing"
    from tests.test_recovery import _advised

    assert main(_advised(err)) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--job", job.id, "--out", str(tmp_path / "y"), "--init"]) == 0


def test_a_changed_weights_file_refuses_the_init_naming_it(started, tmp_path):
    cfg, run, plan, _ = started
    job = _frozen(plan, external=True)
    _weights(Path(job.external.file.path), seed=5)
    with pytest.raises(RunDirError, match="its source weights .*w.safetensors changed since it trained"):
        export_network(run, tmp_path / "z", Selection(job=job.id), init=True)
    assert export_network(run, tmp_path / "z", Selection(job=job.id)).init is None  # the weights alone still export


def test_a_network_of_an_earlier_config_refuses_the_init(started, tmp_path):
    cfg, run, plan, _ = started
    job = _frozen(plan)
    only_x = yaml.safe_load(cfg.read_text())
    only_x["experiments"] = only_x["experiments"][1:]
    cfg.write_text(yaml.safe_dump(only_x))
    assert main(["run", str(cfg), "--out", str(run)]) == 0  # the run's config.yaml no longer has experiment p
    with pytest.raises(RunDirError, match="not a job of the run's config.yaml any more"):
        export_network(run, tmp_path / "z", Selection(job=job.id), init=True)


def test_frozen_layers_that_do_not_come_out_equal_refuse_the_init(started, tmp_path):
    """A source checkpoint replaced (with its record updated to match): the rebuilt frozen
    layers differ from the ones the network kept, so its start cannot be told exactly."""
    cfg, run, plan, _ = started
    job = _frozen(plan)
    ckpt = run / "checkpoints" / f"{job.depends_on}.safetensors"
    state = load_file(ckpt)
    save_file({k: v + 1 for k, v in state.items()}, str(ckpt))
    record = run / "records" / f"{job.depends_on}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "checkpoint_sha256": sha256_file(ckpt)}))
    with pytest.raises(RunDirError, match="exactly: h1.0.* which it never trained, differs"):
        export_network(run, tmp_path / "z", Selection(job=job.id), init=True)
