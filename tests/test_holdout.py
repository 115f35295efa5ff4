"""The validation split the advice holds out of the training examples (transferbench/holdout.py)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import IterableDataset

from tests.fakes import BlobParams, Blobs
from transferbench.errors import DataError
from transferbench.holdout import HoldoutSource, holdout_indices
from transferbench.taskdata import labels_of


def test_every_class_gives_its_share_and_the_parts_are_disjoint_and_seeded():
    labels = np.repeat([0, 1, 2], [60, 6, 2])
    kept, held = holdout_indices(labels, 1 / 6, seed=0)
    assert np.bincount(labels[held]).tolist() == [10, 1, 1]  # round(10), round(1), at least 1 of 2
    assert np.intersect1d(kept, held).size == 0 and len(kept) + len(held) == len(labels)
    assert np.array_equal(holdout_indices(labels, 1 / 6, seed=0)[1], held)
    assert not np.array_equal(holdout_indices(labels, 1 / 6, seed=1)[1], held)
    # a class of one example is kept whole for training (never all of a class held out)
    assert holdout_indices(np.array([0, 0, 0, 1]), 0.5, 0)[1].tolist().count(3) == 0


def test_the_source_trains_on_the_rest_and_evaluates_on_the_held_out_share():
    source = Blobs(BlobParams())
    held = HoldoutSource(source, 0.25, seed=3)
    train, evaluation = held.load("train"), held.load("eval")
    assert len(train) + len(evaluation) == len(source.load("train"))
    assert np.bincount(labels_of(evaluation)).tolist() == [10] * 8
    rows = {tuple(np.round(x, 6)) for x in np.asarray(train.with_format("numpy")["input"])}
    assert not any(tuple(np.round(x, 6)) in rows for x in np.asarray(evaluation.with_format("numpy")["input"]))
    assert held.examples([1, 3]) == 20 and held.classes() == source.classes()
    assert held.identity() != source.identity()  # a cache keyed by it never mixes the two
    with pytest.raises(DataError, match="no 'ood' split"):
        held.load("ood")
    with pytest.raises(ValueError):
        HoldoutSource(source, 1.0, seed=0)


def test_a_stream_cannot_be_held_out_from_and_says_so():
    source = Blobs(BlobParams())
    stream = IterableDataset.from_generator(lambda: iter([{"input": [0.0], "label": 0}]))
    source.load = lambda split: stream  # type: ignore[method-assign]
    with pytest.raises(DataError, match="stream"):
        HoldoutSource(source, 0.2, seed=0).load("train")
