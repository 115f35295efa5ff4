"""Errors and warnings that say how to fix the problem: an input too small for CaffeNet names
the keys and values that would work; image sources warn once when resize upsamples a lot."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from transferbench import ConfigError, images
from transferbench.cli import main
from transferbench_plugins.caffenet import CaffeNetArch, CaffeNetScaled, min_input_side
from transferbench_plugins.hf import HFImages
from transferbench_plugins.imagefolder import ImageFolder

QUICKSTART = "configs/quickstart.yaml"


@pytest.fixture(autouse=True)
def _fresh_warning_marks(monkeypatch):
    monkeypatch.delenv("TRANSFERBENCH_WARNED_UPSAMPLING", raising=False)


def _build(arch, side: int):
    with torch.device("meta"):
        return arch.build(10, (3, side, side))


# --------------------------------------------------------------------------- input too small


def test_caffenet_scaled_too_small_names_the_stride_and_the_size_that_work():
    arch = CaffeNetScaled()
    with pytest.raises(ConfigError) as err:
        _build(arch, 8)
    msg = str(err.value)
    assert "caffenet_scaled" in msg and "input 8x8 is too small" in msg
    assert "use architecture: caffenet_scaled" not in msg  # already using it
    assert "architecture.conv1_stride: 1" in msg and "data.resize" in msg and "data.image_size" in msg
    need = int(re.search(r"at least (\d+)x\1", msg).group(1))
    _build(CaffeNetScaled(CaffeNetScaled.Params(conv1_stride=1)), 8)  # the suggested stride works
    _build(arch, need)  # and so does the suggested size, which is the smallest
    with pytest.raises(ConfigError):
        _build(arch, need - 1)


def test_caffenet_too_small_suggests_the_scaled_net_and_a_size():
    with pytest.raises(ConfigError) as err:
        _build(CaffeNetArch(), 32)
    msg = str(err.value)
    assert "use architecture: caffenet_scaled" in msg and "works for this input" in msg
    assert f"at least {min_input_side(11, 4, 0)}x{min_input_side(11, 4, 0)}" in msg
    assert "data.resize" in msg and "train.augment.crop" in msg
    _build(CaffeNetScaled(), 32)  # the suggestion holds


def test_validate_reports_it_at_the_architecture_key(capsys):
    assert main(["validate", QUICKSTART, "--set", "data.image_size=8"]) == 2
    err = capsys.readouterr().err
    assert "architecture: input 8x8 is too small for caffenet_scaled" in err
    assert "set architecture.conv1_stride: 1 (works for 8x8)" in err
    assert main(["validate", QUICKSTART, "--set", "data.image_size=8", "--set", "architecture.conv1_stride=1"]) == 0


# --------------------------------------------------------------------------- resize upsampling


def _tree(root, side: int):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for split in ("train", "val"):
            (root / split / cls).mkdir(parents=True)
            for j in range(3):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{j}.png")


def _upsampling_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "upsamples" in str(w.message)]


def test_imagefolder_warns_once_when_resize_upsamples(tmp_path):
    _tree(tmp_path, 8)
    src = ImageFolder(ImageFolder.Params(root=str(tmp_path), imagenet=False))  # resize: 256, the default
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        src.check()
        src.load("train")
        ImageFolder(ImageFolder.Params(root=str(tmp_path), imagenet=False)).load("train")  # same data: no repeat
    (msg,) = _upsampling_warnings(record)
    assert "imagefolder: the images of" in msg and "stored at 8x8 pixels" in msg
    assert "resize: 256 upsamples them 32x per side (1,024x the pixels)" in msg
    assert "data.resize: 8 (or null" in msg and "caffenet_scaled" in msg
    assert "TRANSFERBENCH_WARNED_UPSAMPLING" in os.environ  # spawned workers inherit the mark


def test_no_warning_without_much_upsampling(tmp_path):
    _tree(tmp_path, 8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ImageFolder(ImageFolder.Params(root=str(tmp_path), imagenet=False, resize=12)).check()
        ImageFolder(ImageFolder.Params(root=str(tmp_path), imagenet=False, resize=None)).check()
    assert _upsampling_warnings(record) == []


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_warns_once_when_resize_upsamples(tmp_path, streaming):
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})

    def split(n):
        return datasets.Dataset.from_dict(
            {"image": [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)],
             "label": [i % 2 for i in range(n)]}, features=features)

    path = tmp_path / "pq"
    for name, n in (("train", 6), ("validation", 2)):
        split(n).to_parquet(str(path / name / "part-0.parquet"))
    src = HFImages(HFImages.Params(path=str(path), cache_dir=str(tmp_path / "cache"), streaming=streaming))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        src.check()
        src.load("train")
    (msg,) = _upsampling_warnings(record)
    assert msg.startswith("hf: the images of") and "stored at 8x8" in msg and "data.resize: 8" in msg


def test_warn_if_upsampled_mixed_sizes():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert images.warn_if_upsampled("x", "here", [(10, 8), (16, 12)], 64)
        assert not images.warn_if_upsampled("x", "here", [(10, 8), (16, 12)], 64)  # once
        assert not images.warn_if_upsampled("x", "there", [(40, 30)], 64)  # 1.6x: fine
    (msg,) = _upsampling_warnings(record)
    assert "stored at up to 16x16" in msg and "data.resize: 16 " in msg and "4x per side" in msg
