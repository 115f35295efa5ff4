"""Tests of the classlist split: ``pytest`` from this folder, or from anywhere once the package
is installed (needs transferbench installed, not a checkout of it).

The contract checks every transferbench plugin passes come from ``transferbench.testing``.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from transferbench_classlist import ClassListParams, ClassListSplit
from transferbench_classlist import plugin as classlist_plugin

from transferbench import ClassInfo, ConfigError, Halves
from transferbench.testing import check_registers, check_split

CLASSES = [
    ClassInfo(0, "n01", "tench", "natural"),
    ClassInfo(1, "n02", "goldfish", "natural"),
    ClassInfo(2, "n03", "truck", "man-made"),
    ClassInfo(3, "n04", "canoe", "man-made"),
    ClassInfo(4, "n05", "crane", "natural"),
    ClassInfo(5, "n06", "crane", "man-made"),  # a name two classes share, as in ImageNet
]


def split(**params) -> Halves:
    return ClassListSplit(ClassListParams(**params)).split(CLASSES, seed=0)


def test_half_a_by_id_name_and_index_b_is_the_rest():
    assert split(a=["n03", "goldfish", 0]) == Halves(A=(0, 1, 2), B=(3, 4, 5))


def test_explicit_b_leaves_other_classes_out():
    assert split(a=["tench"], b=["truck", 3]) == Halves(A=(0,), B=(2, 3))


def test_the_seed_is_ignored():
    s = ClassListSplit(ClassListParams(a=[1, 2]))
    assert s.split(CLASSES, 0) == s.split(CLASSES, 7)


def test_unknown_class_is_reported_with_close_matches():
    with pytest.raises(ConfigError) as err:
        split(a=["goldfsh", 17])
    problems = dict(err.value.problems)
    assert "goldfish" in problems["split.a.0"]
    assert "out of range" in problems["split.a.1"]


def test_ambiguous_name_asks_for_an_id():
    with pytest.raises(ConfigError, match="names several classes.*n05, n06"):
        split(a=["crane"])


def test_overlapping_or_empty_halves_are_refused():
    with pytest.raises(ConfigError, match="in both halves"):
        split(a=["n01", "n02"], b=["n02", "n03"])
    with pytest.raises(ConfigError, match="half B is empty"):
        split(a=[0, 1, 2, 3, 4, 5])


def test_params_refuse_unknown_keys_and_empty_lists():
    with pytest.raises(ValidationError):
        ClassListParams(a=[0], seeds_typo=[1])
    with pytest.raises(ValidationError):
        ClassListParams(a=[])


def test_the_module_registers_the_split_through_its_hook():
    assert check_registers(classlist_plugin, "split", "classlist", ClassListSplit) is ClassListSplit
    assert ClassListSplit.description.startswith("halves from explicit class lists")


def test_the_split_honours_transferbench_s_contract(tmp_path):
    check_split(ClassListSplit, tmp_path)  # built from ClassListSplit.example_params
    check_split(ClassListSplit(ClassListParams(a=["tench", 2], b=[3, 4])), tmp_path, classes=CLASSES)
