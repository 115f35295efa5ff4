"""The ``timm`` architecture: layers from timm's structure, frozen transfer, errors, ``layers``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from transferbench import ClassInfo, DataSource
from transferbench.cli import main
from transferbench.components import Components
from transferbench.config import parse_config
from transferbench.context import TrainContext
from transferbench.errors import ConfigError
from transferbench.jobs import Job
from transferbench.trainer import train_job
from transferbench_plugins.protocols import Frozen
from transferbench_plugins.timm_arch import TimmArchitecture, TimmParams, timm_layers

RESNET = {"model": "resnet10t", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}
CONVNEXT = {"model": "convnext_atto", "kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}}
VIT = {
    "model": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
}

# (params, the layer names the model's structure should give)
MODELS = {
    "resnet": (RESNET, ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
    "convnext": (CONVNEXT, ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]),
    "vit": (VIT, ["stem", "blocks.0", "blocks.1+norm", "head"]),
}


def _arch(params: dict[str, Any]) -> TimmArchitecture:
    return TimmArchitecture(TimmParams.model_validate(params))


def _owners(layers, keys):
    """For each key, the indices of the layers whose prefixes cover it."""
    return {
        k: [i for i, layer in enumerate(layers) if any(k == m or k.startswith(m + ".") for m in layer.modules)]
        for k in keys
    }


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("which", sorted(MODELS))
def test_layers_follow_the_model_structure_and_partition_its_state(which):
    params, expected = MODELS[which]
    arch = _arch(params)
    torch.manual_seed(0)
    model = arch.build(5, (3, 32, 32))
    layers = list(arch.layers(model))
    assert [layer.name for layer in layers] == expected

    state = model.state_dict()
    owners = _owners(layers, state)
    assert {k: v for k, v in owners.items() if len(v) != 1} == {}, "every entry in exactly one layer"
    # Buffers go with their module: a BatchNorm's running statistics sit in its layer.
    bn_stats = [k for k in state if k.endswith("running_mean")]
    for k in bn_stats:
        assert owners[k] == owners[k.replace("running_mean", "weight")]
    # Each name is a module or a state entry (ViT's cls_token is a parameter of the root).
    names = set(dict(model.named_modules())) | set(state)
    assert all(m in names for layer in layers for m in layer.modules)
    # The head holds the classifier and nothing of the blocks.
    clf = {k for k in state if owners[k] == [len(layers) - 1]}
    assert {f"{n}.weight" for n, m in model.named_modules() if m is model.get_classifier()} <= clf

    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)


def test_block_granularity_gives_one_layer_per_residual_block():
    arch = _arch({"model": "resnet18", "kwargs": {"channels": [8, 16, 32, 64]}, "granularity": "block"})
    model = arch.build(3, (3, 32, 32))
    names = [layer.name for layer in arch.layers(model)]
    blocks = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert names == ["stem", *blocks, "head"]
    owners = _owners(arch.layers(model), dict(model.named_parameters()))
    assert all(len(v) == 1 for v in owners.values())


def test_layers_work_on_the_meta_device_as_the_planner_builds():
    arch = _arch(VIT)
    with torch.device("meta"):
        model = arch.build(10, (3, 32, 32))
    assert [layer.name for layer in arch.layers(model)] == MODELS["vit"][1]


def test_weights_are_never_requested(monkeypatch):
    import timm

    seen: dict[str, Any] = {}
    real = timm.create_model

    def spy(name, **kwargs):
        seen.update(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    _arch(RESNET).build(4, (1, 32, 32))
    assert seen["pretrained"] is False and seen["num_classes"] == 4 and seen["in_chans"] == 1


# --------------------------------------------------------------------------- frozen transfer


class TinyImages(DataSource):
    """Four classes of 3x32x32 noise around a class-specific colour pattern."""

    def classes(self):
        return [ClassInfo(i, f"c{i}", f"class {i}") for i in range(4)]

    def load(self, split):
        import datasets

        rng = np.random.default_rng(0 if split == "train" else 1)
        per = 12 if split == "train" else 4
        labels = np.repeat(np.arange(4), per)
        patterns = np.random.default_rng(7).normal(0, 1, (4, 3, 32, 32))
        x = (patterns[labels] + rng.normal(0, 1, (len(labels), 3, 32, 32))).astype(np.float32)
        feats = datasets.Features({"input": datasets.Array3D((3, 32, 32), "float32"), "label": datasets.Value("int64")})
        return datasets.Dataset.from_dict({"input": x, "label": labels}, features=feats)

    def input_shape(self):
        return (3, 32, 32)


def _context(arch: TimmArchitecture) -> TrainContext:
    config = parse_config({
        "name": "timm-tiny",
        "data": "tiny",
        "architecture": "timm",
        "experiments": [{"name": "e", "split": "random", "treatments": ["AnB"]}],
        "train": {"lr": 0.05, "batch_size": 8, "steps": 4, "weight_decay": 1e-3},
        "eval": {"best_k": 1},
        "device": "cpu",
    })
    components = Components(data=TinyImages(), architecture=arch, splits={}, protocols={}, executor=None)
    return TrainContext(config, components, torch.device("cpu"))


@pytest.mark.parametrize("which,n", [("resnet", 2), ("convnext", 3), ("vit", 2)])
def test_frozen_transfer_keeps_layers_1_to_n_bit_identical(which, n):
    params, names = MODELS[which]
    arch = _arch(params)
    ctx = _context(arch)
    base_job = Job("base", "base", "A", None, 0, (0, 1), seed=1)
    _, base = train_job(base_job, ctx)
    source = {k: v.clone() for k, v in base.state_dict().items()}
    job = Job("anb", "transfer", "B", "A", n, (2, 3), seed=2, depends_on="base",
              protocol_spec={"name": "frozen"}, protocol=Frozen())
    record, model = train_job(job, ctx, source_state=source)
    assert record.status == "ok"

    layers = list(arch.layers(model))
    owners = _owners(layers, source)
    after = model.state_dict()
    frozen = [k for k, v in owners.items() if v[0] < n]
    trained = [k for k, v in owners.items() if v[0] >= n and after[k].is_floating_point()]
    assert frozen and trained
    changed_frozen = [k for k in frozen if not torch.equal(after[k], source[k])]
    assert changed_frozen == [], "frozen layers (weights and BatchNorm statistics) must not change"
    # The layers above n were re-initialised and trained: no weight matrix or kernel equals
    # the source's (norm weights all start at 1, so they could).
    assert all(not torch.equal(after[k], source[k]) for k in trained if after[k].dim() > 1)
    assert all(not p.requires_grad for name, p in model.named_parameters() if name in frozen)


def test_frozen_batchnorm_keeps_running_stats_while_trained_ones_move():
    arch = _arch(RESNET)
    ctx = _context(arch)
    _, base = train_job(Job("base", "base", "A", None, 0, (0, 1), seed=1), ctx)
    source = {k: v.clone() for k, v in base.state_dict().items()}
    job = Job("anb", "transfer", "B", "A", 1, (2, 3), seed=2, depends_on="base",
              protocol_spec={"name": "frozen"}, protocol=Frozen())
    _, model = train_job(job, ctx, source_state=source)
    after = model.state_dict()
    # n=1 freezes the stem: its BatchNorm is bn1; layer1's BatchNorms keep learning.
    assert torch.equal(after["bn1.running_mean"], source["bn1.running_mean"])
    assert torch.equal(after["bn1.running_var"], source["bn1.running_var"])
    fresh = arch.build(2, (3, 32, 32)).state_dict()["layer1.0.bn1.running_mean"]
    assert not torch.equal(after["layer1.0.bn1.running_mean"], fresh), "a trained BN updates its statistics"


# --------------------------------------------------------------------------- errors


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValidationError, match="did you mean.*resnet18"):
        TimmParams.model_validate({"model": "resnet81"})


@pytest.mark.parametrize("kwargs", [{"pretrained": True}, {"num_classes": 3}, {"in_chans": 1}])
def test_engine_owned_kwargs_are_refused(kwargs):
    with pytest.raises(ValidationError, match="cannot be set"):
        TimmParams.model_validate({"model": "resnet18", "kwargs": kwargs})


def test_hub_models_are_refused():
    with pytest.raises(ValidationError, match="nothing is downloaded"):
        TimmParams.model_validate({"model": "hf-hub:timm/resnet18.a1_in1k"})


def test_vit_for_another_image_size_names_the_key_to_set():
    with pytest.raises(ConfigError, match="kwargs.img_size") as err:
        _arch({"model": "vit_tiny_patch16_224"}).build(5, (3, 32, 32))
    assert "(224, 224)" in str(err.value) and "(32, 32)" in str(err.value)


def test_non_image_input_and_bad_kwargs_are_config_errors():
    with pytest.raises(ConfigError, match="channels, height, width"):
        _arch(RESNET).build(5, (1, 128))
    with pytest.raises(ConfigError, match="kwargs"):
        _arch({"model": "resnet18", "kwargs": {"no_such_option": 1}}).build(5, (3, 32, 32))


def test_model_without_group_matcher_is_a_clear_error():
    with pytest.raises(ConfigError, match="no group_matcher"):
        timm_layers(nn.Sequential(nn.Linear(2, 2)))


# --------------------------------------------------------------------------- through the CLI


def test_layers_command_lists_layers_with_parameter_counts(capsys):
    args = ["layers", "timm", "--set", "model=resnet10t", "--set", "kwargs.channels=[8,16,32,64]",
            "--set", "kwargs.stem_width=8", "--classes", "7", "--input-shape", "3,32,32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    model = _arch(RESNET).build(7, (3, 32, 32))
    layers = list(_arch(RESNET).layers(model))
    for layer in layers:
        count = sum(p.numel() for n, p in model.named_parameters()
                    if any(n == m or n.startswith(m + ".") for m in layer.modules))
        row = next(line for line in out.splitlines() if f" {layer.name} " in line)
        assert f"{count:,}" in row
    total = sum(p.numel() for p in model.parameters())
    assert f"6 layers, {total:,} parameters" in out
    assert "warning" not in out


def test_layers_command_reports_bad_input(capsys):
    assert main(["layers", "no_such_arch"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert main(["layers", "timm", "--set", "model=resnet18", "--input-shape", "3,x"]) == 2
    assert "--input-shape" in capsys.readouterr().err


def test_config_with_timm_validates_and_reports_the_image_size(tmp_path, capsys):
    cfg = {
        "name": "timm-vit",
        "data": {"name": "synthetic", "num_classes": 10, "image_size": 32, "cache_dir": str(tmp_path)},
        "architecture": {"name": "timm", "model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "depth": 2}},
        "experiments": [{"name": "e", "split": "random", "treatments": ["AnB", "AnB+"]}],
        "train": {"epochs": 1},
    }
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 2
    assert "img_size" in capsys.readouterr().err
    assert main(["validate", str(path), "--set", "architecture.kwargs.img_size=32"]) == 0
    assert "stem, blocks.0, blocks.1+norm, head" in capsys.readouterr().out.replace("\n", " ")
