"""Tests of the CaffeNet architectures against the network PAPER.md describes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from transferbench import Architecture
from transferbench.errors import ConfigError
from transferbench_plugins import caffenet
from transferbench_plugins.caffenet import (
    CaffeNetArch,
    CaffeNetParams,
    CaffeNetScaled,
    CaffeNetScaledParams,
)

NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]

# Parameter counts written out from PAPER.md's table (weights + biases); a grouped
# convolution sees only in_channels / groups inputs per filter.
PAPER_COUNTS = {
    "conv1": 96 * 3 * 11 * 11 + 96,
    "conv2": 256 * (96 // 2) * 5 * 5 + 256,
    "conv3": 384 * 256 * 3 * 3 + 384,
    "conv4": 384 * (384 // 2) * 3 * 3 + 384,
    "conv5": 256 * (384 // 2) * 3 * 3 + 256,
    "fc6": 256 * 6 * 6 * 4096 + 4096,
    "fc7": 4096 * 4096 + 4096,
    "fc8": 4096 * 1000 + 1000,
}
PAPER_WEIGHT_STD = {n: 0.005 if n in ("fc6", "fc7") else 0.01 for n in NAMES}
PAPER_BIAS = {n: 1.0 if n in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0 for n in NAMES}


@pytest.fixture(scope="module")
def full() -> tuple[CaffeNetArch, nn.Module]:
    """The paper's net for 1000 classes, built once (about 61M parameters)."""
    torch.manual_seed(0)
    arch = CaffeNetArch()
    return arch, arch.build(1000, (3, 227, 227))


def scaled(**params: object) -> CaffeNetScaled:
    return CaffeNetScaled(CaffeNetScaledParams(**params))


def layer_params(model: nn.Module, arch: Architecture, name: str) -> dict[str, torch.Tensor]:
    """Parameters under the modules of the layer called ``name``."""
    (layer,) = [lay for lay in arch.layers(model) if lay.name == name]
    return {
        k: p
        for k, p in model.named_parameters()
        if any(k.startswith(m + ".") for m in layer.modules)
    }


# --------------------------------------------------------------------------- registration


def test_hook_registers_both_architectures() -> None:
    got: dict[str, type] = {}
    caffenet.register_architectures(register=lambda name, cls: got.__setitem__(name, cls))
    assert got == {"caffenet": CaffeNetArch, "caffenet_scaled": CaffeNetScaled}
    assert all(issubclass(cls, Architecture) and cls.description for cls in got.values())


def test_unknown_param_is_refused() -> None:
    with pytest.raises(ValueError, match="widht"):
        CaffeNetScaledParams(widht=0.5)
    with pytest.raises(ValueError, match="width"):
        CaffeNetParams(width=0.5)  # the paper's net has a fixed width


# --------------------------------------------------------------------------- the paper's net


def test_layers_are_the_eight_weight_layers_in_order(full) -> None:
    arch, model = full
    layers = arch.layers(model)
    assert [lay.name for lay in layers] == NAMES
    modules = dict(model.named_modules())
    covered: set[str] = set()
    for lay in layers:
        assert all(m in modules for m in lay.modules), lay
        names = set(layer_params(model, arch, lay.name))
        assert names == {f"{lay.name}.weight", f"{lay.name}.bias"}
        covered |= names
    # Every parameter belongs to a transferable layer (pool/LRN/ReLU/dropout have none).
    assert covered == {k for k, _ in model.named_parameters()}


def test_shapes_at_227(full) -> None:
    _, model = full
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(model, n).register_forward_hook(
            lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:]))
        )
        for n in NAMES
    ]
    model.eval()
    try:
        with torch.no_grad():
            x = torch.randn(2, 3, 227, 227)
            logits = model(x)
            features = model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    assert shapes == {
        "conv1": (96, 55, 55),
        "conv2": (256, 27, 27),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 13, 13),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    }
    assert features.shape == (2, 256, 6, 6)
    assert logits.shape == (2, 1000)


def test_parameter_counts_match_the_paper(full) -> None:
    arch, model = full
    for name, expected in PAPER_COUNTS.items():
        got = sum(p.numel() for p in layer_params(model, arch, name).values())
        assert got == expected, name
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(PAPER_COUNTS.values())
    assert round(total / 1e6, 2) == 60.97


def test_paper_initialisation(full) -> None:
    _, model = full
    for name in NAMES:
        module = getattr(model, name)
        w = module.weight.detach()
        assert abs(w.mean().item()) < 0.05 * PAPER_WEIGHT_STD[name], name
        assert w.std().item() == pytest.approx(PAPER_WEIGHT_STD[name], rel=0.03), name
        assert torch.equal(module.bias.detach(), torch.full_like(module.bias, PAPER_BIAS[name]))


def test_multipliers(full) -> None:
    arch, model = full
    mults = arch.param_multipliers(model)
    assert set(mults) == {k for k, _ in model.named_parameters()}
    for name in NAMES:
        assert mults[f"{name}.weight"] == (1.0, 1.0)
        assert mults[f"{name}.bias"] == (2.0, 0.0)


def test_lrn_is_caffes_and_comes_after_pooling(full) -> None:
    _, model = full
    a = torch.randn(1, 12, 4, 4) * 30  # large enough that the normaliser matters
    padded = nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    window = torch.stack([padded[:, c : c + 5].sum(1) for c in range(12)], 1)
    caffe = a / (1 + 1e-4 / 5 * window).pow(0.75)  # Caffe scales alpha by 1 / local_size
    assert torch.allclose(model.norm(a), caffe, rtol=1e-5)
    assert not torch.allclose(model.norm(a), a, rtol=1e-3)
    # pool-then-LRN: conv1's output is normalised at the pooled 27x27 size.
    seen: list[tuple[int, ...]] = []
    hook = model.norm.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    try:
        with torch.no_grad():
            model.forward_features(torch.randn(1, 3, 227, 227))
    finally:
        hook.remove()
    assert seen == [(96, 27, 27), (256, 13, 13)]


def test_fc8_outputs_wider_than_the_task() -> None:
    # A meta build checks the structure for free (a meta forward costs seconds of torch
    # set-up); the logits themselves are checked on the scaled variant, same code path.
    with torch.device("meta"):
        wide = CaffeNetArch(CaffeNetParams(fc8_outputs=1000)).build(500, (3, 227, 227))
        assert wide.fc8.out_features == 1000
        assert CaffeNetArch().build(500, (3, 227, 227)).fc8.out_features == 500
    model = scaled(fc8_outputs=1000, width=0.125, fc_width=16).build(500, (3, 32, 32))
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 1000)


@pytest.mark.parametrize("arch_cls", [CaffeNetArch, CaffeNetScaled])
def test_fc8_outputs_below_num_classes_is_refused(arch_cls) -> None:
    arch = arch_cls(arch_cls.Params(fc8_outputs=10))
    with pytest.raises(ConfigError, match="fc8_outputs"), torch.device("meta"):
        arch.build(11, (3, 227, 227))
    with torch.device("meta"):
        assert arch.build(10, (3, 227, 227)).fc8.out_features == 10


def test_input_too_small_for_the_paper_net_is_refused() -> None:
    with pytest.raises(ConfigError, match="too small"), torch.device("meta"):
        CaffeNetArch().build(10, (3, 32, 32))
    with pytest.raises(ConfigError, match="channels, height, width"), torch.device("meta"):
        CaffeNetArch().build(10, (3 * 227 * 227,))


def test_dropout_param() -> None:
    with torch.device("meta"):
        model = CaffeNetArch(CaffeNetParams(dropout=0.3)).build(10, (3, 227, 227))
    assert model.drop.p == 0.3
    with pytest.raises(ValueError):
        CaffeNetParams(dropout=1.0)


# --------------------------------------------------------------------------- scaled variant


@pytest.mark.parametrize("size", [32, 24, 64, 40, 20, 16])
def test_scaled_forward_at_several_sizes(size: int) -> None:
    torch.manual_seed(0)
    arch = scaled()
    model = arch.build(7, (3, size, size))
    for batch in (1, 5):
        x = torch.randn(batch, 3, size, size)
        logits = model(x)
        assert logits.shape == (batch, 7)
        logits.sum().backward()  # the graph is intact from input to classifier
    feats = model.forward_features(torch.randn(2, 3, size, size))
    assert model.fc6.in_features == math.prod(feats.shape[1:])
    assert feats.shape[2] >= 1


def test_scaled_grey_and_non_square_input() -> None:
    model = scaled().build(3, (1, 32, 48))
    assert model(torch.randn(2, 1, 32, 48)).shape == (2, 3)


def test_scaled_default_spatial_sizes() -> None:
    model = scaled().build(10, (3, 32, 32))
    # conv1 5x5/2 pad 2: 32 -> 16; Caffe's round-up pooling: 16 -> 8 -> 4 -> 2.
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[2:] == (2, 2)
    assert model.conv1.kernel_size == (5, 5) and model.conv1.stride == (2, 2)


def test_scaled_keeps_the_paper_structure() -> None:
    arch = scaled(width=0.25, fc_width=64)
    model = arch.build(10, (3, 32, 32))
    assert [lay.name for lay in arch.layers(model)] == NAMES
    convs = [getattr(model, n) for n in NAMES[:5]]
    assert [c.out_channels for c in convs] == [24, 64, 96, 96, 64]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert (model.fc6.out_features, model.fc7.out_features) == (64, 64)
    mults = arch.param_multipliers(model)
    assert {v for k, v in mults.items() if k.endswith(".bias")} == {(2.0, 0.0)}
    assert {v for k, v in mults.items() if k.endswith(".weight")} == {(1.0, 1.0)}


@pytest.mark.parametrize("width", [0.01, 0.1, 0.3, 1.0])
def test_scaled_channels_split_into_two_groups(width: float) -> None:
    arch = scaled(width=width, fc_width=8)
    channels = arch.channels()
    assert all(c >= 2 and c % 2 == 0 for c in channels)
    assert max(abs(c - p * width) for c, p in zip(channels, caffenet.PAPER_CHANNELS)) <= 2
    with torch.device("meta"):
        arch.build(4, (3, 32, 32))


def test_scaled_paper_init_follows_the_paper_rules() -> None:
    torch.manual_seed(0)
    model = scaled(init="paper", width=0.5, fc_width=512).build(10, (3, 32, 32))
    for name in NAMES:
        module = getattr(model, name)
        assert module.weight.std().item() == pytest.approx(PAPER_WEIGHT_STD[name], rel=0.1)
        assert torch.equal(module.bias.detach(), torch.full_like(module.bias, PAPER_BIAS[name]))


def test_scaled_kaiming_init() -> None:
    torch.manual_seed(0)
    model = scaled(init="kaiming", width=0.5, fc_width=512).build(10, (3, 32, 32))
    for name in NAMES:
        module = getattr(model, name)
        fan_in = module.weight[0].numel()
        std = 0.01 if name == "fc8" else math.sqrt(2 / fan_in)
        assert module.weight.std().item() == pytest.approx(std, rel=0.1), name
        assert not module.bias.any(), name


def test_scaled_default_init_is_kaiming() -> None:
    # Measured: the paper's init leaves the thin net at chance for 10 epochs.
    assert CaffeNetScaledParams().init == "kaiming"


@pytest.mark.parametrize("init", ["paper", "kaiming"])
def test_same_seed_same_weights(init: str) -> None:
    arch = scaled(init=init)

    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return arch.build(10, (3, 32, 32)).state_dict()

    a, b, c = build(1), build(1), build(2)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_example_params_build_a_tiny_net(tmp_path: Path) -> None:
    arch = CaffeNetScaled(CaffeNetScaledParams(**CaffeNetScaled.example_params(tmp_path)))
    model = arch.build(5, (3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) < 50_000
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_scaled_learns_a_separable_task() -> None:
    """A few SGD steps with the default init fit a small, easy task (the paper's init
    stays at chance here: the reason the default is kaiming)."""
    torch.manual_seed(0)
    arch = scaled(width=0.125, fc_width=64)
    model = arch.build(4, (3, 16, 16))
    protos = torch.randn(4, 3, 16, 16)
    y = torch.arange(32) % 4
    x = protos[y] + 0.3 * torch.randn(32, 3, 16, 16)
    mults = arch.param_multipliers(model)
    opt = torch.optim.SGD(
        [
            {"params": [p], "lr": 0.01 * mults[k][0], "weight_decay": 5e-4 * mults[k][1]}
            for k, p in model.named_parameters()
        ],
        momentum=0.9,
    )
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean().item() > 0.9


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7])
def test_split_at_composes_to_the_whole_net_and_has_a_deterministic_prefix(n):
    from transferbench_plugins.caffenet import CaffeNetScaled

    arch = CaffeNetScaled(CaffeNetScaled.Params())
    torch.manual_seed(0)
    model = arch.build(7, (3, 32, 32))
    prefix, suffix = arch.split_at(model, n)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(x)), model(x), atol=1e-6)
        model.train()  # dropout on: the prefix must still be deterministic
        assert torch.equal(prefix(x), prefix(x))
    assert {id(p) for p in suffix.parameters()} == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("scale", [1.0, 300.0], ids=["unit", "caffe-0-255"])
@pytest.mark.parametrize("channels", [5, 24, 96])
def test_cross_channel_lrn_is_torchs_local_response_norm(scale: float, channels: int) -> None:
    """The cumulative-sum LRN gives torch's numbers (float rounding apart), at the scale of
    the paper's 0-255 inputs too, for contiguous and channels-last tensors, and keeps the layout."""
    from transferbench_plugins.caffenet import CrossChannelLRN

    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, channels, 7, 9)) * scale
    x[:, : channels // 2] *= 50  # large channels beside small ones: the subtraction must not lose them
    ours, theirs = CrossChannelLRN(5, 1e-4, 0.75, 1.0), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.contiguous(memory_format=layout)
        got = ours(xi)
        assert torch.allclose(got, theirs(x), rtol=1e-4, atol=1e-5 * scale)
        assert got.is_contiguous(memory_format=layout)
