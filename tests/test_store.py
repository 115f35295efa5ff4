"""The decode-once data path: uint8 batches read from the store, cropped and mirrored where
the network runs, with the numbers of the float path and reproducible from the data seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferbench.augment import BatchTransform, _copied_windows, _gathered_windows
from transferbench.config import Augment
from transferbench.taskdata import MemoryMapTask

NORM = ((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))


@pytest.mark.parametrize("augment", [Augment(crop=24, mirror=True, pad=2), Augment(crop=28, mirror=True),
                                     Augment(crop=None, mirror=True), Augment(crop=24)])
def test_uint8_batches_are_augmented_before_scaling_with_the_float_path_s_numbers(augment):
    x = torch.randint(0, 256, (12, 3, 28, 28), dtype=torch.uint8)
    transform = BatchTransform(augment, NORM, torch.device("cpu"))
    for train in (True, False):
        a = transform(x, train=train, generator=torch.Generator().manual_seed(5))
        b = transform(x.float().div(255.0), train=train, generator=torch.Generator().manual_seed(5))
        assert a.dtype == torch.float32 and torch.equal(a, b)
    placed = transform.place(x, train=True, generator=torch.Generator().manual_seed(5))
    assert placed.dtype == torch.uint8  # what a data path may hand on: a quarter of the bytes
    plain = BatchTransform(augment, None, torch.device("cpu"))
    scaled = plain(x, train=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(placed.float() / 255.0, scaled)


def test_the_cpu_s_copied_windows_are_the_accelerator_s_gathered_windows():
    x = torch.randint(0, 256, (9, 3, 20, 22), dtype=torch.uint8)
    oy, ox = torch.randint(0, 5, (9,)), torch.randint(0, 7, (9,))
    flip = torch.tensor([True, False] * 4 + [True])
    copied, gathered = _copied_windows(x, oy, ox, flip, 16), _gathered_windows(x, oy, ox, flip, 16)
    assert torch.equal(copied, gathered)
    assert torch.equal(copied[1], x[1, :, oy[1] : oy[1] + 16, ox[1] : ox[1] + 16])
    assert torch.equal(copied[0], x[0, :, oy[0] : oy[0] + 16, ox[0] : ox[0] + 16].flip(2))


def test_store_batches_follow_the_data_seed_and_read_each_row_once():
    stored = np.arange(40 * 3 * 4 * 4, dtype=np.int64).reshape(40, 3, 4, 4).astype(np.uint8)
    keep = np.array([1, 4, 5, 9, 12, 20, 21, 30, 33, 39])
    task = MemoryMapTask(stored, keep, torch.arange(10), range(10))
    one = list(task.batches(4, shuffle=True, generator=torch.Generator().manual_seed(7)))
    two = list(task.batches(4, shuffle=True, generator=torch.Generator().manual_seed(7)))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(7))
    assert [len(x) for x, _ in one] == [4, 4, 2]
    for (x, y), (x2, y2), pos in zip(one, two, order.split(4)):
        assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(y, pos)
        assert np.array_equal(x.numpy(), stored[keep[pos.numpy()]])
