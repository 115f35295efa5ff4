"""The non-vision domain: synthetic 1-D signals and the ``conv1d`` architecture."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from transferbench.augment import BatchTransform, output_shape
from transferbench.cli import main
from transferbench.components import Components
from transferbench.config import parse_config
from transferbench.context import TrainContext
from transferbench.errors import ConfigError
from transferbench.jobs import Job
from transferbench.trainer import train_job
from transferbench_plugins.protocols import Frozen
from transferbench_plugins.signals import (
    FREQUENCIES,
    KINDS,
    Conv1dArchitecture,
    Conv1dParams,
    SignalsDataSource,
    SignalsParams,
    _Classes,
    generate,
)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "signals.yaml"


def _source(**params) -> SignalsDataSource:
    return SignalsDataSource(SignalsParams(**params))


# --------------------------------------------------------------------------- data


def test_same_seed_same_data_other_seed_other_data():
    small = {"num_classes": 6, "train_per_class": 5, "eval_per_class": 3, "length": 64}
    x1, y1 = generate(SignalsParams(**small), "train")
    x2, y2 = generate(SignalsParams(**small), "train")
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    x3, _ = generate(SignalsParams(**small, seed=1), "train")
    assert not np.allclose(x1, x3)
    xe, _ = generate(SignalsParams(**small), "eval")
    assert not np.allclose(x1[:3], xe[:3]), "train and eval are drawn from different streams"


def test_classes_and_eval_split_do_not_depend_on_the_training_size():
    a, b = _source(num_classes=8, train_per_class=5), _source(num_classes=8, train_per_class=9)
    assert a.classes() == b.classes()
    assert np.array_equal(generate(a.params, "eval")[0], generate(b.params, "eval")[0])
    # Adding classes leaves a class as it was while its superclass stays the same.
    more, fewer = _source(num_classes=12).classes(), _source(num_classes=8).classes()
    assert [c.name for c in more[:4]] == [c.name for c in fewer[:4]]


def test_rows_are_float_signals_of_the_declared_shape():
    source = _source(num_classes=4, channels=3, length=48, train_per_class=3, eval_per_class=2)
    ds = source.load("train")
    assert {"input", "label"} <= set(ds.column_names) and len(ds) == 12
    x = source.to_tensor(ds[0]["input"])
    assert x.dtype == torch.float32 and tuple(x.shape) == source.input_shape() == (3, 48)
    assert sorted(set(ds["label"])) == [0, 1, 2, 3]
    # Standardised per signal: zero mean per channel, unit std overall.
    arr = np.asarray(ds.with_format("numpy")["input"][:])
    assert np.allclose(arr.mean(axis=-1), 0, atol=1e-4)
    assert np.allclose(arr.std(axis=(1, 2)), 1, atol=1e-3)


def test_superclasses_share_the_atom_bank_but_prefer_their_own_kinds():
    p = SignalsParams(num_classes=40)
    classes = _Classes(p)
    infos = _source(num_classes=40).classes()
    assert [c.superclass for c in infos] == ["tonal"] * 20 + ["percussive"] * 20
    tonal_kinds = {KINDS.index(k) for k in ("burst", "chirp", "tremolo")}
    own = {"tonal": 0, "percussive": 0}
    for c, info in enumerate(infos):
        is_tonal = np.isin(classes.kind[c], list(tonal_kinds))
        own[info.superclass] += int(is_tonal.sum() if info.superclass == "tonal" else (~is_tonal).sum())
    parts = 20 * p.parts_per_class
    assert own["tonal"] / parts > 0.65 and own["percussive"] / parts > 0.65
    # Shared low-level structure: both superclasses draw carriers from the same bank and
    # together use most of it.
    used = {s: set(classes.freq[classes.superclass == i].ravel()) for i, s in enumerate(("tonal", "percussive"))}
    assert len(used["tonal"] & used["percussive"]) >= len(FREQUENCIES) // 2
    assert {c.superclass for c in _source(num_classes=5, num_superclasses=1).classes()} == {"mixed"}


def test_classes_are_distinct_in_the_data():
    """Mean signals of different classes differ far more than two halves of one class."""
    p = SignalsParams(num_classes=6, train_per_class=60, length=128, jitter=0.3, noise=0.1)
    x, y = generate(p, "train")
    power = np.abs(np.fft.rfft(x[:, 0], axis=-1))  # phase-free: spectra per signal
    means = np.stack([power[y == c].mean(0) for c in range(6)])
    within = np.mean([np.linalg.norm(power[y == c][::2].mean(0) - power[y == c][1::2].mean(0)) for c in range(6)])
    between = np.mean([np.linalg.norm(means[a] - means[b]) for a in range(6) for b in range(a + 1, 6)])
    assert between > 3 * within


def test_unknown_split_is_a_data_error():
    from transferbench.errors import DataError

    with pytest.raises(DataError, match="unknown split"):
        _source(num_classes=2).load("test")


# --------------------------------------------------------------------------- architecture


def test_conv1d_has_six_named_layers_that_partition_its_parameters():
    arch = Conv1dArchitecture(Conv1dParams())
    model = arch.build(7, (2, 128))
    layers = arch.layers(model)
    assert [line.name for line in layers] == ["conv1", "conv2", "conv3", "conv4", "fc5", "fc6"]
    owners = Counter(
        next(line.name for line in layers if name.split(".")[0] in line.modules) for name, _ in model.named_parameters()
    )
    assert sum(owners.values()) == len(list(model.parameters())) and set(owners) == {line.name for line in layers}
    assert model(torch.randn(3, 2, 128)).shape == (3, 7)
    assert model(torch.randn(3, 2, 37)).shape == (3, 7), "any length works (adaptive pooling)"


@pytest.mark.parametrize("n", [1, 3, 5])
def test_split_at_shares_modules_and_composes_to_the_model(n):
    arch = Conv1dArchitecture(Conv1dParams())
    model = arch.build(5, (1, 64)).eval()
    prefix, suffix = arch.split_at(model, n)
    x = torch.randn(4, 1, 64)
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(x)), model(x))
    params = {id(p) for p in model.parameters()}
    assert {id(p) for p in prefix.parameters()} | {id(p) for p in suffix.parameters()} == params
    # Below the classifier everything is deterministic in training mode (dropout opens fc6).
    prefix.train()
    with torch.no_grad():
        assert torch.equal(prefix(x), prefix(x))


def test_conv1d_refuses_images_and_mismatched_lists():
    with pytest.raises(ConfigError, match="channels, length"):
        Conv1dArchitecture(Conv1dParams()).build(5, (3, 32, 32))
    with pytest.raises(ValidationError, match="kernel_sizes"):
        Conv1dParams(widths=[8, 8], kernel_sizes=[3])


def test_engine_transform_leaves_signals_alone():
    transform = BatchTransform(parse_config(_tiny_raw()).train.augment, None, torch.device("cpu"))
    x = torch.randn(5, 2, 64)
    assert torch.equal(transform(x, train=True), x)
    assert output_shape(parse_config(_tiny_raw()).train.augment, (2, 64)) == (2, 64)


# --------------------------------------------------------------------------- training


def _tiny_raw(**train) -> dict:
    return {
        "name": "sig",
        "data": "signals",
        "architecture": "conv1d",
        "experiments": [{"name": "e", "split": "random", "treatments": ["AnB"]}],
        "train": {"lr": 0.05, "batch_size": 32, "steps": 60, "weight_decay": 0.0, **train},
        "eval": {"best_k": 1},
        "device": "cpu",
    }


def _context(source: SignalsDataSource, arch: Conv1dArchitecture, **raw) -> TrainContext:
    config = parse_config({**_tiny_raw(), **raw})
    return TrainContext(config, Components(source, arch, {}, {}, None), torch.device("cpu"))


def test_signals_are_learnable():
    source = _source(num_classes=6, train_per_class=40, eval_per_class=20, length=64, jitter=0.5)
    arch = Conv1dArchitecture(Conv1dParams(widths=[8, 16, 16, 16], hidden=32))
    ctx = _context(source, arch, eval={"best_k": 3})
    record, _ = train_job(Job("base", "base", "all", None, 0, tuple(range(6)), seed=0), ctx)
    chance = 1 / 6
    assert record.top1_best_k > 3 * chance, record.history
    assert record.history[0].train_loss > record.history[-1].train_loss


def test_frozen_transfer_with_the_cache_matches_the_plain_path():
    source = _source(num_classes=4, train_per_class=16, eval_per_class=8, length=64)
    arch = Conv1dArchitecture(Conv1dParams(widths=[8, 8, 8, 8], hidden=16))
    ctx = _context(source, arch, train={"lr": 0.05, "batch_size": 16, "steps": 5, "weight_decay": 0.0})
    _, base = train_job(Job("base", "base", "A", None, 0, (0, 1), seed=1), ctx)
    src = {k: v.clone() for k, v in base.state_dict().items()}
    job = Job("anb", "transfer", "B", "A", 3, (2, 3), seed=2, depends_on="base",
              protocol_spec={"name": "frozen"}, protocol=Frozen())
    states = {}
    for cache in (True, False):
        raw = {"train": {"lr": 0.05, "batch_size": 16, "steps": 5, "weight_decay": 0.0},
               "performance": {"cache_frozen": cache}}
        record, model = train_job(job, _context(source, arch, **raw), source_state=src)
        assert record.frozen_cache == cache
        states[cache] = model.state_dict()
    for k, v in states[True].items():
        if k.startswith(("conv1", "conv2", "conv3")):
            assert torch.equal(v, src[k]), f"frozen {k} changed"
        assert torch.allclose(v.float(), states[False][k].float(), atol=1e-4), k


def test_reduced_grid_through_the_cli(tmp_path, capsys):
    """The shipped config, shrunk: every treatment of the paper at n = 1 and 5."""
    out = tmp_path / "run"
    sets = ["data.num_classes=6", "data.train_per_class=12", "data.eval_per_class=6", "data.length=64",
            "train.epochs=2", "train.batch_size=16", "experiments.0.layers=[1,5]", "architecture.hidden=16",
            "architecture.widths=[8,8,8,8]"]
    args = ["run", str(CONFIG), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["layer_names"] == ["conv1", "conv2", "conv3", "conv4", "fc5", "fc6"]
    assert {c["treatment"] for c in plan["cells"]} == {"baseA", "baseB", "BnB", "BnB+", "AnB", "AnB+"}
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == len(plan["jobs"]) == 2 + 4 * 2
    assert all(r["status"] == "ok" for r in records)
    rows = list(csv.DictReader((out / "results_top1.csv").open()))
    by_n = {int(r["n"]): r for r in rows if r["metric"] == "top1"}
    assert set(by_n) == {0, 1, 5}
    for treatment in ("BnB", "BnB+", "AnB", "AnB+"):
        assert 0.0 <= float(by_n[5][treatment]) <= 1.0
