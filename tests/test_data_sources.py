"""The real-data sources `imagefolder` and `hf`, on tiny trees and datasets built here."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferbench.errors import DataError
from transferbench.imagenet import imagenet_classes, wnid_to_index
from transferbench.images import decode_image
from transferbench_plugins.hf import HFImages
from transferbench_plugins.imagefolder import ImageFolder

# Two natural and two man-made ImageNet classes, deliberately not adjacent in ImageNet order.
WNIDS = ("n07720875", "n01440764", "n03642806", "n02979186")
EXPECTED = {  # wnid -> (name, superclass), as ILSVRC-2012 / timm name them
    "n01440764": ("tench, Tinca tinca", "natural"),
    "n02979186": ("cassette player", "man-made"),
    "n03642806": ("laptop, laptop computer", "man-made"),
    "n07720875": ("bell pepper", "natural"),
}
MODES = ("RGB", "L", "CMYK", "RGB")  # image modes cycled through, so every class mixes them


def write_image(path: Path, size: tuple[int, int], mode: str, seed: int) -> np.ndarray:
    """Write a random image of (width, height) ``size`` in ``mode``; return its RGB pixels."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG" if path.suffix.upper() in (".JPEG", ".JPG") else None)
    return rgb


def make_ilsvrc(root: Path, per_class: tuple[int, ...] = (3, 2, 4, 1)) -> dict[str, int]:
    """train/<wnid>/*.JPEG with per_class[i] images of class WNIDS[i], of varied sizes/modes."""
    counts = {}
    for k, (wnid, n) in enumerate(zip(WNIDS, per_class)):
        for j in range(n):
            path = root / "train" / wnid / f"{wnid}_{j}.JPEG"
            write_image(path, (9 + j, 7 + k), MODES[j], k * 10 + j)
        counts[wnid] = n
    return counts


def make_flat_val(root: Path, labels: list[str]) -> list[str]:
    """val/ILSVRC2012_val_000000NN.JPEG, one per label; returns the file stems."""
    stems = []
    for j, _ in enumerate(labels):
        stem = f"ILSVRC2012_val_{j + 1:08d}"
        write_image(root / "val" / f"{stem}.JPEG", (8, 6 + j), MODES[j % 4], 100 + j)
        stems.append(stem)
    return stems


def source(root: Path, **params) -> ImageFolder:
    return ImageFolder(ImageFolder.Params(root=str(root), **params))


def labels_of(ds) -> list[int]:
    return [int(x) for x in ds["label"]]


# --------------------------------------------------------------------------- imagefolder


def test_ilsvrc_tree_classes_use_imagenet_metadata(tmp_path):
    make_ilsvrc(tmp_path)
    src = source(tmp_path)
    classes = src.classes()
    assert [c.id for c in classes] == sorted(WNIDS)
    assert [c.index for c in classes] == list(range(len(WNIDS)))
    for c in classes:
        assert (c.name, c.superclass) == EXPECTED[c.id]


def test_ilsvrc_train_labels_follow_folders(tmp_path):
    counts = make_ilsvrc(tmp_path)
    (tmp_path / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    src = source(tmp_path, resize=None)
    ds = src.load("train")
    classes = src.classes()
    assert len(ds) == sum(counts.values())
    for path, label in zip(ds["input"], labels_of(ds)):
        assert Path(path).parent.name == classes[label].id
    assert Counter(classes[y].id for y in labels_of(ds)) == counts


def test_to_tensor_resizes_and_converts_every_mode(tmp_path):
    make_ilsvrc(tmp_path)
    ds = source(tmp_path, resize=20).load("train")
    modes = {Image.open(p).mode for p in ds["input"]}
    assert {"L", "CMYK", "RGB"} <= modes
    for path in ds["input"]:
        t = source(tmp_path, resize=20).to_tensor(path)
        assert t.shape == (3, 20, 20) and t.dtype == torch.uint8


def test_to_tensor_keeps_pixels_and_size_without_resize(tmp_path):
    rgb = write_image(tmp_path / "a.png", (10, 7), "RGB", 0)  # PNG: lossless
    t = decode_image(str(tmp_path / "a.png"), None)
    assert t.shape == (3, 7, 10)
    assert torch.equal(t, torch.from_numpy(rgb).permute(2, 0, 1))
    gray = decode_image(Image.fromarray(rgb).convert("L"), None)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "RGBA")
    assert torch.equal(decode_image(rgba, None), t)


def test_input_shape(tmp_path):
    make_ilsvrc(tmp_path)
    assert source(tmp_path).input_shape() == (3, 256, 256)
    # Without resize the first training image's size is reported: class WNIDS[1] sorts
    # first (n01440764), its first image is 9 wide and 8 high.
    assert source(tmp_path, resize=None).input_shape() == (3, 8, 9)


def test_eval_split_in_class_folders(tmp_path):
    make_ilsvrc(tmp_path)
    for k, wnid in enumerate(WNIDS[:2]):
        write_image(tmp_path / "val" / wnid / f"v{k}.JPEG", (8, 8), "RGB", k)
    src = source(tmp_path)
    ds = src.load("eval")
    assert [src.classes()[y].id for y in labels_of(ds)] == sorted(WNIDS[:2])


def test_flat_val_with_kaggle_csv(tmp_path):
    make_ilsvrc(tmp_path)
    truth = [WNIDS[2], WNIDS[0], WNIDS[3], WNIDS[2], WNIDS[1]]
    stems = make_flat_val(tmp_path, truth)
    body = [f"{s},{w} 10 20 30 40 {w} 1 2 3 4" for s, w in zip(stems, truth)]
    # Rows in another order than the files: matching must go by ImageId.
    rows = ["ImageId,PredictionString", *reversed(body)]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    src = source(tmp_path, val_labels="LOC_val_solution.csv")
    ds = src.load("eval")
    got = {Path(p).stem: src.classes()[y].id for p, y in zip(ds["input"], labels_of(ds))}
    assert got == dict(zip(stems, truth))


def test_flat_val_label_file_found_without_config(tmp_path):
    make_ilsvrc(tmp_path)
    stems = make_flat_val(tmp_path, [WNIDS[3], WNIDS[1]])
    # Tab-separated, one name with and one without extension, not in file order.
    text = f"{stems[1]}.JPEG\t{WNIDS[1]}\n{stems[0]}\t{WNIDS[3]}\n"
    (tmp_path / "val" / "val_labels.txt").write_text(text)
    src = source(tmp_path)
    ds = src.load("eval")
    assert [src.classes()[y].id for y in labels_of(ds)] == [WNIDS[3], WNIDS[1]]


def test_flat_val_caffe_indices_are_imagenet_indices(tmp_path):
    make_ilsvrc(tmp_path)
    truth = [WNIDS[0], WNIDS[3], WNIDS[1]]
    stems = make_flat_val(tmp_path, truth)
    index = wnid_to_index()
    lines = [f"{s}.JPEG {index[w]}" for s, w in zip(stems, truth)]
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    src = source(tmp_path)
    ds = src.load("eval")
    assert [src.classes()[y].id for y in labels_of(ds)] == truth


def test_flat_val_one_wnid_per_line(tmp_path):
    make_ilsvrc(tmp_path)
    truth = [WNIDS[1], WNIDS[1], WNIDS[2]]
    make_flat_val(tmp_path, truth)
    (tmp_path / "synsets.txt").write_text("\n".join(truth) + "\n")
    src = source(tmp_path, val_labels=str(tmp_path / "synsets.txt"))
    assert [src.classes()[y].id for y in labels_of(src.load("eval"))] == truth


def test_flat_val_drops_classes_not_trained_on(tmp_path):
    make_ilsvrc(tmp_path)
    truth = [WNIDS[0], "n15075141"]  # toilet tissue: an ImageNet class without a train folder
    stems = make_flat_val(tmp_path, truth)
    (tmp_path / "val.txt").write_text("".join(f"{s} {w}\n" for s, w in zip(stems, truth)))
    src = source(tmp_path)
    with pytest.warns(UserWarning, match="left out"):
        ds = src.load("eval")
    assert [src.classes()[y].id for y in labels_of(ds)] == [WNIDS[0]]


def test_devkit_ground_truth_is_refused_with_explanation(tmp_path):
    make_ilsvrc(tmp_path)
    make_flat_val(tmp_path, ["x", "y"])
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n361\n")
    src = source(tmp_path, val_labels="ILSVRC2012_validation_ground_truth.txt")
    with pytest.raises(DataError, match="devkit"):
        src.check()


def test_flat_val_errors(tmp_path):
    make_ilsvrc(tmp_path)
    stems = make_flat_val(tmp_path, ["a", "b"])
    with pytest.raises(DataError, match="val_labels"):
        source(tmp_path).check()  # no label file anywhere
    (tmp_path / "val.txt").write_text(f"{stems[0]} {WNIDS[0]}\n")
    with pytest.raises(DataError, match="no label"):
        source(tmp_path).check()  # second image unlabelled
    with pytest.raises(DataError, match="does not exist"):
        source(tmp_path, val_labels="missing.csv").check()


def test_generic_tree_uses_folder_names(tmp_path):
    names = ["zebra", "cat", "dog"]
    for k, name in enumerate(names):
        for split in ("train", "val"):
            write_image(tmp_path / split / name / f"{k}.png", (5 + k, 6), "RGB", k)
    src = source(tmp_path, resize=8)
    classes = src.classes()
    assert [(c.index, c.id, c.name, c.superclass) for c in classes] == [
        (0, "cat", "cat", None),
        (1, "dog", "dog", None),
        (2, "zebra", "zebra", None),
    ]
    for split in ("train", "eval"):
        ds = src.load(split)
        assert [classes[y].id for y in labels_of(ds)] == ["cat", "dog", "zebra"]
        assert [Path(p).parent.name for p in ds["input"]] == ["cat", "dog", "zebra"]
    with pytest.raises(DataError, match="not ImageNet"):
        source(tmp_path, imagenet=True).classes()


def test_imagenet_false_keeps_wnids_as_plain_names(tmp_path):
    make_ilsvrc(tmp_path)
    classes = source(tmp_path, imagenet=False).classes()
    assert [(c.id, c.name, c.superclass) for c in classes] == [(w, w, None) for w in sorted(WNIDS)]


def test_missing_and_empty_data_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="root"):
        source(tmp_path / "nowhere").check()
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        source(tmp_path).check()
    write_image(tmp_path / "train" / "a" / "x.png", (4, 4), "RGB", 0)
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(DataError, match="hold no images"):
        source(tmp_path).check()
    (tmp_path / "train" / "b").rmdir()
    with pytest.raises(DataError, match="eval"):
        source(tmp_path).check()  # no val/


def test_pickled_source_drops_listing_and_still_decodes(tmp_path):
    make_ilsvrc(tmp_path)
    src = source(tmp_path, resize=12)
    paths = src.load("train")["input"]
    clone = pickle.loads(pickle.dumps(src))
    assert clone._datasets == {}
    assert torch.equal(clone.to_tensor(paths[0]), src.to_tensor(paths[0]))


def test_normalization_defaults_to_timm_and_can_be_overridden(tmp_path):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean, std = source(tmp_path).normalization()
    assert tuple(mean) == tuple(IMAGENET_DEFAULT_MEAN) and tuple(std) == tuple(IMAGENET_DEFAULT_STD)
    mean, std = source(tmp_path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).normalization()
    assert (tuple(mean), tuple(std)) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError, match="positive"):
        ImageFolder.Params(root=".", std=(1.0, 0.0, 1.0))


@pytest.mark.parametrize("cls", [ImageFolder, HFImages])
def test_example_params_make_loadable_data(tmp_path, cls):
    src = cls(cls.Params(**cls.example_params(tmp_path)))
    src.check()
    k = len(src.classes())
    for split in ("train", "eval"):
        ds = src.load(split)
        labels = labels_of(ds)
        assert len(ds) > 0 and all(0 <= y < k for y in labels)
        assert tuple(src.to_tensor(ds[0]["input"]).shape) == src.input_shape()


# --------------------------------------------------------------------------- hf

FINE = ["apple", "oak", "bus", "train", "rose"]
COARSE = ["vehicle", "plant"]
FINE_TO_COARSE = {0: 1, 1: 1, 2: 0, 3: 0, 4: 1}


def tiny_dict(n: int, seed: int):
    """A DatasetDict-ready split: 'picture' images of varied sizes/modes, fine/coarse labels."""
    import datasets

    rng = np.random.default_rng(seed)
    fine = [(i * 3 + seed) % len(FINE) for i in range(n)]
    images = []
    for i in range(n):
        arr = rng.integers(0, 256, (6 + i % 3, 5 + i % 2, 3), dtype=np.uint8)
        images.append(Image.fromarray(arr).convert(("RGB", "L", "RGBA", "CMYK")[i % 4]))
    features = datasets.Features(
        {
            "picture": datasets.Image(),
            "fine": datasets.ClassLabel(names=FINE),
            "coarse": datasets.ClassLabel(names=COARSE),
            "extra": datasets.Value("int32"),
        }
    )
    coarse = [FINE_TO_COARSE[f] for f in fine]
    return datasets.Dataset.from_dict(
        {"picture": images, "fine": fine, "coarse": coarse, "extra": list(range(n))},
        features=features,
    )


def image_features(names: list[str]):
    import datasets

    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})


def hf_source(path, tmp_path, **params) -> HFImages:
    defaults = dict(
        image_column="picture", label_column="fine", superclass_column="coarse", resize=10
    )
    params = {**defaults, **params}
    return HFImages(HFImages.Params(path=str(path), cache_dir=str(tmp_path / "cache"), **params))


@pytest.fixture
def tiny_splits():
    return {"train": tiny_dict(10, 0), "validation": tiny_dict(4, 1)}


def check_tiny(src: HFImages, splits) -> None:
    classes = src.classes()
    assert [(c.index, c.id, c.name) for c in classes] == [(i, n, n) for i, n in enumerate(FINE)]
    assert [c.superclass for c in classes] == [COARSE[FINE_TO_COARSE[i]] for i in range(len(FINE))]
    for split, hf_split in (("train", "train"), ("eval", "validation")):
        ds = src.load(split)
        assert sorted(ds.column_names) == ["input", "label"]
        assert labels_of(ds) == list(splits[hf_split]["fine"])
        for row in ds:
            t = src.to_tensor(row["input"])
            assert t.shape == (3, 10, 10) and t.dtype == torch.uint8


def test_hf_save_to_disk_with_custom_columns_and_superclass(tmp_path, tiny_splits):
    import datasets

    path = tmp_path / "saved"
    datasets.DatasetDict(tiny_splits).save_to_disk(str(path))
    src = hf_source(path, tmp_path)
    src.check()
    check_tiny(src, tiny_splits)


def test_hf_parquet_folder(tmp_path, tiny_splits):
    path = tmp_path / "pq"
    path.mkdir()
    for name, ds in tiny_splits.items():
        ds.to_parquet(str(path / f"{name}-00000-of-00001.parquet"))
    src = hf_source(path, tmp_path)
    src.check()
    check_tiny(src, tiny_splits)


def test_hf_streaming_parquet(tmp_path, tiny_splits):
    path = tmp_path / "pq"
    for name, ds in tiny_splits.items():
        ds.to_parquet(str(path / name / "part-0.parquet"))
    src = hf_source(path, tmp_path, superclass_column=None, streaming=True, resize=None)
    assert [c.superclass for c in src.classes()] == [None] * len(FINE)
    rows = list(src.load("eval"))
    assert [r["label"] for r in rows] == list(tiny_splits["validation"]["fine"])
    assert src.to_tensor(rows[0]["input"]).shape == (3, 6, 5)


def test_hf_wnid_labels_use_imagenet_metadata(tmp_path):
    import datasets

    wnids = ["n03642806", "n01440764"]  # the dataset's own order, not sorted
    features = image_features(wnids)
    img = Image.new("RGB", (4, 4))
    ds = datasets.Dataset.from_dict({"image": [img, img], "label": [1, 0]}, features=features)
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "d"))
    classes = HFImages(HFImages.Params(path=str(tmp_path / "d"))).classes()
    assert [(c.index, c.id, c.name, c.superclass) for c in classes] == [
        (0, "n03642806", *EXPECTED["n03642806"]),
        (1, "n01440764", *EXPECTED["n01440764"]),
    ]
    plain = HFImages(HFImages.Params(path=str(tmp_path / "d"), imagenet=False)).classes()
    assert [c.name for c in plain] == wnids


def test_hf_1000_imagenet_names_get_wnids(tmp_path):
    import datasets

    # As ILSVRC/imagenet-1k names its labels; ClassLabel wants unique names, and timm has
    # two "crane"s and two "maillot"s, so the repeats get a suffix (the match is fuzzy).
    seen: Counter[str] = Counter()
    names = []
    for c in imagenet_classes():
        seen[c.name] += 1
        names.append(c.name if seen[c.name] == 1 else f"{c.name} ({c.id})")
    rows = {"image": [Image.new("L", (3, 3))], "label": [482]}
    ds = datasets.Dataset.from_dict(rows, features=image_features(names))
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "d"))
    classes = HFImages(HFImages.Params(path=str(tmp_path / "d"))).classes()
    assert len(classes) == 1000
    assert classes[482].id == "n02979186" and classes[482].superclass == "man-made"
    # Shuffled names are not ImageNet's order, so auto must not claim them.
    ds2 = ds.cast(image_features(names[::-1]))
    datasets.DatasetDict({"train": ds2, "validation": ds2}).save_to_disk(str(tmp_path / "e"))
    assert HFImages(HFImages.Params(path=str(tmp_path / "e"))).classes()[0].id == names[-1]


def test_hf_string_labels(tmp_path):
    import datasets

    img = Image.new("RGB", (4, 4))
    ds = datasets.Dataset.from_dict(
        {"image": [img] * 3, "label": ["dog", "cat", "dog"]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "d"))
    src = HFImages(HFImages.Params(path=str(tmp_path / "d")))
    assert [c.id for c in src.classes()] == ["cat", "dog"]
    assert labels_of(src.load("train")) == [1, 0, 1]


def test_hf_negative_labels_are_dropped(tmp_path):
    import datasets

    img = Image.new("RGB", (4, 4))
    features = image_features(["a", "b"])
    ds = datasets.Dataset.from_dict({"image": [img] * 3, "label": [1, -1, 0]}, features=features)
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "d"))
    assert labels_of(HFImages(HFImages.Params(path=str(tmp_path / "d"))).load("eval")) == [1, 0]


def test_hf_missing_path_split_or_column(tmp_path, tiny_splits):
    import datasets

    with pytest.raises(DataError, match="save_to_disk"):
        HFImages(HFImages.Params(path=str(tmp_path / "nowhere"))).check()
    datasets.DatasetDict(tiny_splits).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="no split 'test'"):
        hf_source(tmp_path / "d", tmp_path, eval_split="test").check()
    with pytest.raises(DataError, match="no column 'image'"):
        HFImages(HFImages.Params(path=str(tmp_path / "d"))).check()


def test_hf_unreachable_hub_fails_fast_with_advice(monkeypatch):
    import datasets
    from huggingface_hub import HfApi

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "dataset_info", offline)
    with pytest.raises(DataError) as err:
        HFImages(HFImages.Params(path="ILSVRC/imagenet-1k")).check()
    assert "HF_HUB_OFFLINE" in str(err.value) and "local copy" in str(err.value)


def test_hf_params_validation():
    with pytest.raises(ValueError, match="streaming"):
        HFImages.Params(path="x", superclass_column="coarse", streaming=True)
    with pytest.raises(ValueError, match="differ"):
        HFImages.Params(path="x", image_column="label")
