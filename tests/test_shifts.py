"""Shifted targets as data transforms: corrupt (noise, blur, contrast) and relabel."""

from __future__ import annotations

import pytest
import torch

from transferbench.errors import ConfigError
from transferbench_plugins.shifts import SEVERITY, Corrupt, Relabel

from .conftest import tiny_config


def _corrupt(kind: str, severity: int = 3, seed: int = 0) -> Corrupt:
    return Corrupt(Corrupt.Params(kind=kind, severity=severity, seed=seed))


IMAGES = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
LABELS = torch.tensor([0, 1, 2, 3])


def test_noise_is_fixed_per_example_grows_with_severity_and_follows_the_seed():
    out, labels = _corrupt("noise").apply(IMAGES, LABELS, 4)
    assert out.dtype == torch.uint8 and torch.equal(labels, LABELS)
    assert torch.equal(_corrupt("noise").apply(IMAGES[2:], LABELS[2:], 4)[0], out[2:])  # the batch does not matter
    assert not torch.equal(_corrupt("noise", seed=1).apply(IMAGES, LABELS, 4)[0], out)
    change = [float((_corrupt("noise", s).apply(IMAGES, LABELS, 4)[0].float() - IMAGES.float()).abs().mean())
              for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2]
    floats = IMAGES.float() / 255  # float inputs: the noise scales with the example's own spread
    sd = float((_corrupt("noise", 5).apply(floats, LABELS, 4)[0] - floats)[0].std())
    assert sd == pytest.approx(SEVERITY["noise"][4] * float(floats[0].std()), rel=0.1)


def test_blur_keeps_a_flat_image_and_spreads_a_point_symmetrically():
    flat = torch.full((1, 1, 9, 9), 7.0)
    assert torch.allclose(_corrupt("blur").apply(flat, LABELS[:1], 4)[0], flat)
    point = torch.zeros(1, 1, 31, 31)  # far enough from the borders for the whole kernel
    point[0, 0, 15, 15] = 1.0
    out = _corrupt("blur", 5).apply(point, LABELS[:1], 4)[0][0, 0]
    assert out[15, 15] < 1 and out.sum() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(out, out.T) and torch.allclose(out, out.flip(0))
    signal = torch.zeros(1, 2, 20)  # 1-D signals: along the last axis only
    signal[0, 0, 10] = 1.0
    blurred = _corrupt("blur", 5).apply(signal, LABELS[:1], 4)[0]
    assert blurred[0, 1].abs().sum() == 0 and blurred[0, 0, 9] == pytest.approx(float(blurred[0, 0, 11]))


def test_contrast_pulls_each_example_towards_its_own_mean():
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    out = _corrupt("contrast", 4).apply(x, LABELS[:3], 4)[0]
    mean = x.flatten(1).mean(1).view(-1, 1, 1, 1)
    assert torch.allclose(out - mean, SEVERITY["contrast"][3] * (x - mean), atol=1e-6)
    assert torch.allclose(out.flatten(1).mean(1), x.flatten(1).mean(1), atol=1e-6)


def test_relabel_permutes_or_merges_the_classes_and_keeps_the_inputs():
    labels = torch.arange(6).repeat(2)
    t = Relabel(Relabel.Params(mode="permute", seed=3))
    x, y = t.apply(IMAGES[:1].repeat(12, 1, 1, 1), labels, 6)
    assert torch.equal(x, IMAGES[:1].repeat(12, 1, 1, 1))
    assert sorted(t.mapping(6).tolist()) == list(range(6)) and t.mapping(6).tolist() != list(range(6))
    assert torch.equal(y, t.mapping(6)[labels])
    merged = Relabel(Relabel.Params(mode="merge", groups=3, seed=3)).mapping(6)
    assert sorted(merged.tolist()) == [0, 0, 1, 1, 2, 2]


def test_a_blur_of_examples_without_a_second_axis_is_refused_before_training(fake_plugins):
    from transferbench.config import parse_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve

    cfg = tiny_config(experiments=[{"name": "p", "split": {"name": "parity"}, "treatments": ["AnB"],
                                    "transforms": [{"name": "corrupt", "kind": "blur"}]}])
    config = parse_config(cfg)
    with pytest.raises(ConfigError, match="blur needs"):
        build_plan(config, resolve(config))
