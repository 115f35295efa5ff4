"""Tests of the ``synthetic`` data source: determinism, cache, metadata, statistics, difficulty."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from transferbench import ClassInfo, DataSource
from transferbench.errors import DataError
from transferbench_plugins import synthetic
from transferbench_plugins.synthetic import (
    SyntheticDataSource,
    SyntheticParams,
    build_cache,
    cache_path,
    render_split,
)

TINY = dict(num_classes=6, image_size=16, train_per_class=4, eval_per_class=2)


def _source(tmp_path: Path, **kw: Any) -> SyntheticDataSource:
    return SyntheticDataSource(SyntheticParams(**{**TINY, "cache_dir": str(tmp_path), **kw}))


def _arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """The split as the engine reads it: the whole columns as numpy arrays."""
    table = ds.with_format("numpy")
    return np.asarray(table["input"][:]), np.asarray(table["label"][:])


# --------------------------------------------------------------------------- determinism


def test_same_params_give_identical_arrays() -> None:
    p = SyntheticParams(**TINY)
    x1, y1 = render_split(p, "train")
    x2, y2 = render_split(SyntheticParams(**TINY), "train")
    assert x1.dtype == np.uint8 and x1.shape == (6 * 4, 3, 16, 16)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_seed_and_split_change_the_images() -> None:
    x0, _ = render_split(SyntheticParams(**TINY, seed=0), "train")
    x1, _ = render_split(SyntheticParams(**TINY, seed=1), "train")
    assert (x0 != x1).mean() > 0.5
    # The eval split is drawn from its own stream, not a prefix of the train images.
    ev, _ = render_split(SyntheticParams(**TINY, seed=0), "eval")
    train_images = {img.tobytes() for img in x0}
    assert not any(img.tobytes() in train_images for img in ev)


def test_labels_are_balanced_and_in_range() -> None:
    p = SyntheticParams(**TINY)
    for split, per_class in (("train", 4), ("eval", 2)):
        _, y = render_split(p, split)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y), np.full(6, per_class))


# --------------------------------------------------------------------------- plugin and cache


def test_load_returns_dataset_with_input_and_label(tmp_path: Path) -> None:
    src = _source(tmp_path)
    assert src.input_shape() == (3, 16, 16)
    assert src.load("train").features["input"].dtype == "uint8"
    for split, n in (("train", 24), ("eval", 12)):
        x, y = _arrays(src.load(split))
        assert x.shape == (n, 3, 16, 16)
        ref_x, ref_y = render_split(src.params, split)
        np.testing.assert_array_equal(x, ref_x)
        np.testing.assert_array_equal(y, ref_y)
    one = src.load("train")[0]["input"]
    assert tuple(src.to_tensor(np.asarray(one, dtype=np.uint8)).shape) == (3, 16, 16)
    with pytest.raises(DataError, match="unknown split"):
        src.load("test")


def test_cache_hit_does_not_regenerate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _arrays(_source(tmp_path).load("train"))
    folder = cache_path(_source(tmp_path).params)
    assert (folder / "meta.json").is_file()
    left = [p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")]
    assert left == [folder.name]  # no temporary folders left (the builders' lock file stays)

    def fail(*_: Any) -> None:
        raise AssertionError("regenerated although the cache was complete")

    monkeypatch.setattr(synthetic, "render_split", fail)
    second = _arrays(_source(tmp_path).load("train"))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_cache_key_ignores_cache_dir_but_not_data_params(tmp_path: Path) -> None:
    a = SyntheticParams(**TINY, cache_dir=str(tmp_path / "a"))
    b = SyntheticParams(**TINY, cache_dir=str(tmp_path / "b"))
    c = SyntheticParams(**{**TINY, "noise": 0.1}, cache_dir=str(tmp_path / "a"))
    assert cache_path(a).name == cache_path(b).name
    assert cache_path(a).name != cache_path(c).name
    assert cache_path(a).parent == tmp_path / "a" / "synthetic"


def test_cache_dir_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(synthetic.CACHE_ENV, str(tmp_path / "env"))
    assert cache_path(SyntheticParams(**TINY)).parent == tmp_path / "env" / "synthetic"


def test_concurrent_builders_take_turns_and_build_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builders of the same cache at once (threads, each with its own lock descriptor, as
    two processes would have): the second waits for the first and reuses its copy."""
    import threading

    p = SyntheticParams(**TINY, cache_dir=str(tmp_path))
    real_render = synthetic.render_split
    renders: list[str] = []
    started = threading.Event()

    def slow_render(params: SyntheticParams, split: str) -> Any:
        renders.append(split)
        started.set()
        time.sleep(0.3)  # the other builder arrives while this one holds the lock
        return real_render(params, split)

    monkeypatch.setattr(synthetic, "render_split", slow_render)
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(build_cache(p)))
    first.start()
    started.wait(10)
    results.append(build_cache(p))
    first.join()
    assert results[0] == results[1] and (results[0] / "meta.json").is_file()
    assert sorted(renders) == ["eval", "train"], "the data was generated once"
    x, _ = _arrays(SyntheticDataSource(p).load("eval"))
    np.testing.assert_array_equal(x, real_render(p, "eval")[0])


def test_incomplete_cache_folder_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    src = _source(tmp_path)
    folder = cache_path(src.params)
    folder.mkdir(parents=True)
    (folder / "half-written.arrow").write_bytes(b"...")
    x, _ = _arrays(src.load("train"))
    assert (folder / "meta.json").is_file() and len(x) > 0
    kept = list((folder.parent / "damaged").iterdir())
    assert len(kept) == 1 and (kept[0] / "half-written.arrow").is_file()  # moved aside, never deleted


def test_normalization_matches_the_train_split(tmp_path: Path) -> None:
    src = _source(tmp_path)
    mean, std = src.normalization()
    x, _ = _arrays(src.load("train"))
    x = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), atol=1e-4)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), atol=1e-4)
    meta = json.loads((cache_path(src.params) / "meta.json").read_text())
    assert meta["params"]["num_classes"] == 6


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError):
        SyntheticParams(num_clases=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="num_superclasses"):
        SyntheticParams(num_classes=3, num_superclasses=4)
    with pytest.raises(ValidationError):
        SyntheticParams(image_size=4)


def test_registered_through_the_hook(tmp_path: Path) -> None:
    found: dict[str, type] = {}
    synthetic.register_data_sources(lambda name, factory: found.setdefault(name, factory))
    assert found == {"synthetic": SyntheticDataSource}
    assert issubclass(SyntheticDataSource, DataSource)
    params = SyntheticParams(**SyntheticDataSource.example_params(tmp_path))
    assert Path(params.cache_dir or "").is_relative_to(tmp_path)
    SyntheticDataSource(params).check()


# --------------------------------------------------------------------------- classes


def test_class_metadata_without_generating_data(tmp_path: Path) -> None:
    src = _source(tmp_path, num_classes=100, num_superclasses=2)
    classes = src.classes()
    assert not cache_path(src.params).exists()  # classes() must not need the data
    assert len(classes) == 100 and all(isinstance(c, ClassInfo) for c in classes)
    assert [c.index for c in classes] == list(range(100))
    assert len({c.id for c in classes}) == 100 and classes[7].id == "syn007"
    groups = [c.superclass for c in classes]
    assert groups == ["geometric"] * 50 + ["organic"] * 50
    assert [c.name for c in src.classes()] == [c.name for c in classes]


def test_superclass_counts_for_other_settings(tmp_path: Path) -> None:
    classes = _source(tmp_path, num_classes=10, num_superclasses=3).classes()
    groups = [c.superclass for c in classes]
    assert len(set(groups)) == 3
    assert sorted(groups.count(g) for g in set(groups)) == [3, 3, 4]
    assert {c.superclass for c in _source(tmp_path, num_superclasses=1).classes()} == {"mixed"}


# --------------------------------------------------------------------------- statistics


def _low_level_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image colour, spatial-frequency and edge statistics of uint8 images (N, 3, H, W)."""
    x = x.astype(np.float64) / 255.0
    grey = x.mean(1)
    n, h, w = grey.shape
    lap = 4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
    lap = lap - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    blocks = grey.reshape(n, h // 4, 4, w // 4, 4).mean((2, 4))
    gx = grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]
    gy = grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]
    mag, ang = np.hypot(gx, gy), np.arctan2(gy, gx)
    strong = mag > np.quantile(mag, 0.9, axis=(1, 2), keepdims=True)
    hi, lo = x.max(1), x.min(1)
    return {
        # high- over low-frequency energy: crisp edges on flat areas vs 1/f texture
        "hf_over_lf": (lap**2).mean((1, 2)) / blocks.var((1, 2)),
        # how much the strongest edges align with multiples of 45 degrees
        "edge_alignment": (strong * np.cos(8 * ang)).sum((1, 2)) / strong.sum((1, 2)),
        # share of near-grey pixels (HSV saturation below 0.2)
        "grey_share": ((hi - lo) / (hi + 1e-3) < 0.2).mean((1, 2)),
    }


def test_superclasses_differ_in_low_level_statistics() -> None:
    p = SyntheticParams(num_classes=20, train_per_class=10, eval_per_class=1)
    x, y = render_split(p, "train")
    stats = _low_level_stats(x)
    geo, org = y < 10, y >= 10
    s = {k: (v[geo].mean(), v[org].mean()) for k, v in stats.items()}
    assert s["hf_over_lf"][0] > 2.0 * s["hf_over_lf"][1], s
    assert s["edge_alignment"][0] > s["edge_alignment"][1] + 0.05, s
    assert s["grey_share"][0] > s["grey_share"][1] + 0.1, s


def test_every_class_shares_the_primitive_bank() -> None:
    """Both superclasses draw on the same primitives, only with different preferences."""
    p = SyntheticParams()
    bank = synthetic._make_bank(p.seed)
    styles = synthetic._make_styles(p.seed, 2, bank)
    for style in styles:
        assert (style.family_weights > 0).all()
    classes = synthetic._make_classes(p, bank, styles)
    used = [set(bank.family[classes.proto[classes.superclass == s]].ravel()) for s in (0, 1)]
    assert used[0] & used[1], "the two superclasses share no primitive family"


# --------------------------------------------------------------------------- difficulty


def _normalised_tensors(p: SyntheticParams) -> tuple[torch.Tensor, ...]:
    xtr, ytr = render_split(p, "train")
    xev, yev = render_split(p, "eval")
    tr = torch.tensor(xtr, dtype=torch.float32) / 255
    ev = torch.tensor(xev, dtype=torch.float32) / 255
    mean, std = tr.mean((0, 2, 3), keepdim=True), tr.std((0, 2, 3), keepdim=True)
    return (tr - mean) / std, torch.tensor(ytr), (ev - mean) / std, torch.tensor(yev)


def test_learnable_but_not_trivial() -> None:
    """Logistic regression on raw pixels beats chance clearly; nearest class mean is far
    from perfect, so the classes are not separable by their average image alone."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    p = SyntheticParams(
        num_classes=10, image_size=16, train_per_class=60, eval_per_class=20, seed=0
    )
    xtr, ytr, xev, yev = _normalised_tensors(p)
    chance = 1 / p.num_classes

    means = torch.stack([xtr[ytr == c].mean(0) for c in range(p.num_classes)]).flatten(1)
    ncm = (torch.cdist(xev.flatten(1), means).argmin(1) == yev).float().mean().item()
    assert ncm < 0.7, f"nearest class mean reaches {ncm:.2f}: the data is too easy"

    model = torch.nn.Linear(xtr[0].numel(), p.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    flat_tr = xtr.flatten(1)
    for _ in range(15):
        for idx in torch.randperm(len(flat_tr)).split(32):
            loss = F.cross_entropy(model(flat_tr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (model(xev.flatten(1)).argmax(1) == yev).float().mean().item()
    assert acc > 3 * chance, f"logistic regression reaches only {acc:.2f} (chance {chance:.2f})"
