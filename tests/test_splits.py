"""Task splits against the paper's class lists (tests/data/*.tsv) and their error handling."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from transferbench import ClassInfo, Halves, imagenet
from transferbench.errors import ConfigError, DataError
from transferbench_plugins.splits import (
    ManMadeNaturalSplit,
    RandomSplit,
    SuperclassSplit,
    register_splits,
)

DATA = Path(__file__).parent / "data"


def _read_tsv(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def random_tsv() -> list[dict[str, str]]:
    return _read_tsv("imagenet_random_splits.tsv")


@pytest.fixture(scope="module")
def manmade_tsv() -> list[dict[str, str]]:
    # The file spells the group "manmade"; ClassInfo.superclass uses "man-made".
    rows = _read_tsv("imagenet_manmade_natural.tsv")
    spelling = {"manmade": imagenet.MAN_MADE, "natural": imagenet.NATURAL}
    return [{**r, "group": spelling[r["group"]]} for r in rows]


def make(cls: type, **params: object):
    return cls(cls.Params(**params))


def generic_classes(n: int = 20) -> list[ClassInfo]:
    """A non-ImageNet source: ids c00.., two superclasses interleaved, plus a third."""
    groups = ["fish", "tree", "fish", "tree", "rock"]
    return [ClassInfo(i, f"c{i:02d}", f"class {i}", groups[i % len(groups)]) for i in range(n)]


# --------------------------------------------------------------------------- ImageNet metadata


def test_imagenet_classes_match_tsv(random_tsv, manmade_tsv) -> None:
    classes = imagenet.imagenet_classes()
    assert [c.index for c in classes] == list(range(1000))
    assert [c.id for c in classes] == [r["wnid"] for r in random_tsv]
    assert [c.superclass for c in classes] == [r["group"] for r in manmade_tsv]
    assert imagenet.IMAGENET_WNIDS == tuple(r["wnid"] for r in random_tsv)
    assert all(c.name for c in classes)
    assert classes[0].name.startswith("tench")


def test_wnid_lookup_and_is_imagenet() -> None:
    classes = imagenet.imagenet_classes()
    lookup = imagenet.wnid_to_index()
    assert all(lookup[c.id] == c.index for c in classes)
    assert imagenet.is_imagenet(classes)
    assert imagenet.is_imagenet([classes[5], classes[2]])
    assert not imagenet.is_imagenet([])
    assert not imagenet.is_imagenet([*classes[:3], ClassInfo(3, "n99999999", "fake")])
    assert not imagenet.is_imagenet(generic_classes())


def test_classes_for_wnids_labels_by_position() -> None:
    table = imagenet.imagenet_classes()
    wnids = [table[999].id, table[0].id]
    labelled = imagenet.classes_for_wnids(wnids)
    assert [(c.index, c.id, c.superclass) for c in labelled] == [
        (0, table[999].id, "man-made"),
        (1, table[0].id, "natural"),
    ]
    assert labelled[1].name == table[0].name
    with pytest.raises(DataError, match="cats"):
        imagenet.classes_for_wnids([table[0].id, "cats"])


# --------------------------------------------------------------------------- random


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_split_reproduces_paper(random_tsv, seed: int) -> None:
    halves = make(RandomSplit).split(imagenet.imagenet_classes(), seed)
    column = f"split{seed}"
    assert halves.A == tuple(int(r["index"]) for r in random_tsv if r[column] == "A")
    assert halves.B == tuple(int(r["index"]) for r in random_tsv if r[column] == "B")
    assert len(halves.A) == len(halves.B) == 500


def test_integer_seeding_gives_another_split(random_tsv) -> None:
    # Guards the one-element-list seed: RandomState(0) differs from RandomState([0]).
    paper_a = [int(r["index"]) for r in random_tsv if r["split0"] == "A"]
    int_seeded = sorted(np.random.RandomState(0).choice(np.arange(1000), 500, replace=False))
    assert int_seeded != paper_a


def test_random_seeds_differ_and_repeat() -> None:
    split = make(RandomSplit)
    classes = imagenet.imagenet_classes()
    assert split.split(classes, 0) != split.split(classes, 1)
    assert split.split(classes, 7) == make(RandomSplit).split(classes, 7)


def test_random_on_imagenet_subset_matches_full_split() -> None:
    full_classes = imagenet.imagenet_classes()
    # 30 ImageNet classes in a shuffled source order, re-indexed 0..29 as a source would.
    picked = np.random.default_rng(123).choice(1000, 30, replace=False)
    subset = [
        ClassInfo(i, full_classes[k].id, full_classes[k].name) for i, k in enumerate(picked)
    ]
    for seed in range(4):
        full = make(RandomSplit).split(full_classes, seed)
        sub = make(RandomSplit).split(subset, seed)
        expected_a = tuple(sorted(i for i, k in enumerate(picked) if k in full.A))
        expected_b = tuple(sorted(i for i, k in enumerate(picked) if k in full.B))
        assert (sub.A, sub.B) == (expected_a, expected_b)
        assert len(sub.A) + len(sub.B) == 30
    # reference "source" draws over the 30 classes themselves: 15 / 15.
    own = make(RandomSplit, reference="source").split(subset, 0)
    assert (len(own.A), len(own.B)) == (15, 15)


def test_random_on_generic_source() -> None:
    classes = generic_classes(21)
    halves = make(RandomSplit).split(classes, 0)
    assert len(halves.A) == 10 and len(halves.B) == 11
    assert set(halves.A) | set(halves.B) == set(range(21))
    expected_a = sorted(np.random.RandomState([0]).choice(np.arange(21), 10, replace=False))
    assert list(halves.A) == expected_a


def test_random_sizes() -> None:
    classes = generic_classes(20)
    halves = make(RandomSplit, size_a=4, size_b=6).split(classes, 3)
    assert (len(halves.A), len(halves.B)) == (4, 6)
    assert not set(halves.A) & set(halves.B)
    # A does not depend on size_b: B is drawn after it from the same generator.
    assert halves.A == make(RandomSplit, size_a=4).split(classes, 3).A
    assert make(RandomSplit, size_a=4, size_b=16).split(classes, 3).B == make(
        RandomSplit, size_a=4
    ).split(classes, 3).B
    small = make(RandomSplit, size_a=100, size_b=50).split(imagenet.imagenet_classes(), 0)
    assert (len(small.A), len(small.B)) == (100, 50)


@pytest.mark.parametrize(
    "params", [{"size_a": 20}, {"size_a": 10, "size_b": 11}, {"size_a": 21}]
)
def test_random_sizes_too_large(params: dict) -> None:
    with pytest.raises(ConfigError, match="20 classes"):
        make(RandomSplit, reference="source", **params).split(generic_classes(20), 0)


def test_random_bad_params() -> None:
    with pytest.raises(ValidationError):
        RandomSplit.Params(size_a=0)
    with pytest.raises(ValidationError):
        RandomSplit.Params(reference="cifar")
    with pytest.raises(ConfigError, match="reference 'source'"):
        make(RandomSplit, reference="imagenet").split(generic_classes(), 0)


def test_random_subset_with_empty_half_is_refused() -> None:
    classes = imagenet.imagenet_classes()
    a_only = make(RandomSplit).split(classes, 0).A[:3]
    source = [ClassInfo(i, classes[k].id, classes[k].name) for i, k in enumerate(a_only)]
    with pytest.raises(ConfigError, match="half B"):
        make(RandomSplit).split(source, 0)


# --------------------------------------------------------------------------- man-made / natural


def test_manmade_natural_reproduces_paper(manmade_tsv) -> None:
    natural = tuple(int(r["index"]) for r in manmade_tsv if r["group"] == "natural")
    man_made = tuple(int(r["index"]) for r in manmade_tsv if r["group"] == "man-made")
    assert (len(natural), len(man_made)) == (449, 551)
    halves = make(ManMadeNaturalSplit).split(imagenet.imagenet_classes(), 0)
    assert (halves.A, halves.B) == (natural, man_made)
    swapped = make(ManMadeNaturalSplit, a="man-made").split(imagenet.imagenet_classes(), 5)
    assert (swapped.A, swapped.B) == (man_made, natural)


def test_manmade_natural_on_subset(manmade_tsv) -> None:
    group = {r["wnid"]: r["group"] for r in manmade_tsv}
    table = imagenet.imagenet_classes()
    picked = [999, 0, 400, 950, 971, 970, 398, 397]
    source = [ClassInfo(i, table[k].id, table[k].name) for i, k in enumerate(picked)]
    halves = make(ManMadeNaturalSplit).split(source, 0)
    assert halves.A == tuple(i for i, k in enumerate(picked) if group[table[k].id] == "natural")
    assert halves.B == tuple(i for i, k in enumerate(picked) if group[table[k].id] == "man-made")
    assert halves.A == (1, 3, 5, 7)


def test_manmade_natural_refuses_other_sources() -> None:
    with pytest.raises(ConfigError, match="superclass"):
        make(ManMadeNaturalSplit).split(generic_classes(), 0)
    only_natural = list(imagenet.imagenet_classes()[:5])
    with pytest.raises(ConfigError, match="half B"):
        make(ManMadeNaturalSplit).split(only_natural, 0)


# --------------------------------------------------------------------------- superclass


def test_superclass_split_generic() -> None:
    classes = generic_classes(20)
    halves = make(SuperclassSplit, a=["fish"]).split(classes, 0)
    assert halves.A == tuple(c.index for c in classes if c.superclass == "fish")
    assert halves.B == tuple(c.index for c in classes if c.superclass != "fish")
    picked = make(SuperclassSplit, a=["fish"], b=["rock"]).split(classes, 0)
    assert picked.B == tuple(c.index for c in classes if c.superclass == "rock")
    assert make(SuperclassSplit, a=["fish"]).split(classes, 99) == halves


def test_superclass_matches_manmade_natural_on_imagenet() -> None:
    classes = imagenet.imagenet_classes()
    assert make(SuperclassSplit, a=["natural"]).split(classes, 0) == make(
        ManMadeNaturalSplit
    ).split(classes, 0)


def test_superclass_errors() -> None:
    classes = generic_classes(20)
    with pytest.raises(ConfigError, match=r"'bird'.*\['fish', 'rock', 'tree'\]"):
        make(SuperclassSplit, a=["bird"]).split(classes, 0)
    with pytest.raises(ConfigError, match="rocks"):
        make(SuperclassSplit, a=["fish"], b=["rocks"]).split(classes, 0)
    with pytest.raises(ConfigError, match="superclass"):
        make(SuperclassSplit, a=["fish"]).split([*classes, ClassInfo(20, "x", "x")], 0)
    with pytest.raises(ConfigError, match="half B"):
        make(SuperclassSplit, a=["fish", "tree", "rock"]).split(classes, 0)
    with pytest.raises(ValidationError):
        SuperclassSplit.Params(a=["fish"], b=["fish"])
    with pytest.raises(ValidationError):
        SuperclassSplit.Params(a=[])


# --------------------------------------------------------------------------- all splits


CASES = [
    (RandomSplit, {}),
    (RandomSplit, {"reference": "source", "size_a": 5, "size_b": 5}),
    (ManMadeNaturalSplit, {}),
    (SuperclassSplit, SuperclassSplit.example_params(Path("."))),
]


@pytest.mark.parametrize("cls,params", CASES)
def test_deterministic_and_leaves_global_rng_alone(cls: type, params: dict) -> None:
    # A 20-class ImageNet source: natural 390..397 and man-made 398..409, re-indexed 0..19.
    classes = imagenet.classes_for_wnids(imagenet.IMAGENET_WNIDS[390:410])
    np.random.seed(1234)
    before = np.random.get_state()
    first = make(cls, **params).split(classes, 2)
    second = make(cls, **params).split(classes, 2)
    after = np.random.get_state()
    assert before[0] == after[0] and all(
        np.array_equal(x, y) for x, y in zip(before[1:], after[1:])
    )
    assert first == second
    assert isinstance(first, Halves)
    assert first.A and first.B and not set(first.A) & set(first.B)
    assert list(first.A) == sorted(first.A) and list(first.B) == sorted(first.B)
    assert set(first.A) | set(first.B) <= set(range(20))


def test_registered_names() -> None:
    names: dict[str, type] = {}
    register_splits(lambda name, factory: names.__setitem__(name, factory))
    assert names == {
        "random": RandomSplit,
        "manmade_natural": ManMadeNaturalSplit,
        "superclass": SuperclassSplit,
    }
