"""Data transforms (``register_data_transforms``): block_shuffle, the contract, and what a
transform does to a plan (job ids) and to training (the examples the networks see)."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from transferbench import DataTransform, hookimpl, plugins, testing
from transferbench.config import parse_config
from transferbench.engine import run_plan
from transferbench.errors import ConfigError
from transferbench.jobdata import transformed
from transferbench.jobs import TaskTransform
from transferbench.plan import build_plan
from transferbench.resolve import resolve
from transferbench.store import RunStore
from transferbench.taskdata import InMemoryTask, TaskData
from transferbench_plugins.transforms import BlockShuffle

from .conftest import tiny_config


def _shuffle(block_size: int, seed: int = 0) -> BlockShuffle:
    return BlockShuffle(BlockShuffle.Params(block_size=block_size, seed=seed))


def test_block_shuffle_moves_whole_blocks_by_one_seeded_permutation():
    x = torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    t = _shuffle(4, seed=3)
    out, labels = t.apply(x, torch.tensor([0, 1]), 2)
    perm = t.permutation(4).tolist()
    blocks = [(r, c) for r in range(2) for c in range(2)]
    for k, (r, c) in enumerate(blocks):  # block k of the output is block perm[k] of the input
        sr, sc = blocks[perm[k]]
        assert torch.equal(out[..., 4 * r:4 * r + 4, 4 * c:4 * c + 4], x[..., 4 * sr:4 * sr + 4, 4 * sc:4 * sc + 4])
    assert perm != [0, 1, 2, 3] and labels.tolist() == [0, 1]
    assert torch.equal(_shuffle(8).apply(x, labels, 2)[0], x)  # one block: nothing moves
    assert not torch.equal(_shuffle(2, seed=1).apply(x, labels, 2)[0], _shuffle(2, seed=2).apply(x, labels, 2)[0])


def test_block_shuffle_refuses_a_block_that_does_not_divide_the_image():
    assert "must divide" in _shuffle(5).check_shape((3, 32, 32))
    assert _shuffle(8).check_shape((3, 32, 32)) is None
    with pytest.raises(ValueError, match="must divide"):
        _shuffle(5).apply(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long), 2)


def test_the_contract_check_can_fail():
    class Batchy(DataTransform):
        def apply(self, inputs, labels, classes):
            return inputs - inputs.float().mean().to(inputs.dtype), labels  # depends on the batch

    class InPlace(DataTransform):
        def apply(self, inputs, labels, classes):
            labels += 0
            inputs.zero_()
            return inputs, labels

    with pytest.raises(testing.ContractError, match="that example alone"):
        testing.check_data_transform(Batchy)
    with pytest.raises(testing.ContractError, match="in place"):
        testing.check_data_transform(InPlace)
    testing.check_data_transform(BlockShuffle)


class _Stream(TaskData):
    def __init__(self, inner: InMemoryTask) -> None:
        self.inner, self.classes = inner, inner.classes

    def __len__(self):
        return len(self.inner)

    def batches(self, batch_size, *, shuffle, generator=None):
        return self.inner.batches(batch_size, shuffle=shuffle, generator=generator)


def test_in_memory_and_batch_by_batch_give_the_same_examples_and_only_where_asked():
    x = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    task = InMemoryTask(x, torch.arange(10) % 2, [4, 7])
    change = (TaskTransform({"name": "block_shuffle", "block_size": 2}, ("train",), _shuffle(2)),)
    held = transformed(task, change, "train")
    streamed = transformed(_Stream(task), change, "train")
    assert held.tensors() is not None and streamed.tensors() is None
    a = torch.cat([b[0] for b in held.batches(3, shuffle=False)])
    b = torch.cat([b[0] for b in streamed.batches(3, shuffle=False)])
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert transformed(task, change, "eval") is task  # examples: [train] leaves the evaluation alone


class Constant(DataTransform):
    """Every label becomes 0: a network that learns it is right on every example."""

    def apply(self, inputs, labels, classes):
        return inputs, torch.zeros_like(labels)


class _Plugin:
    @hookimpl
    def register_data_transforms(self, register):
        register("constant_label", Constant)


@pytest.fixture
def constant(fake_plugins):
    host = plugins.get_host()
    name = host.register(_Plugin(), "constant-label", origin="test")
    yield
    host.unregister(name)


def _plan(**experiment):
    exp = {"name": "parity", "split": {"name": "parity", "seeds": [0]}, "treatments": ["AnB"], "layers": [1],
           **experiment}
    config = parse_config(tiny_config(experiments=[exp]))
    components = resolve(config)
    return config, components, build_plan(config, components)


def _ids(plan):
    return {(c.treatment, c.n): c.job_id for c in plan.cells}


def test_a_transform_changes_the_ids_of_the_networks_it_changes_and_no_other(constant):
    _, _, plain = _plan()
    _, _, changed = _plan(transforms=[{"name": "constant_label", "halves": ["B"]}])
    _, _, eval_only = _plan(transforms=[{"name": "constant_label", "examples": ["eval"]}])
    before, after, other = _ids(plain), _ids(changed), _ids(eval_only)
    assert after[("baseA", 0)] == before[("baseA", 0)]  # the source half is untouched
    assert after[("baseB", 0)] != before[("baseB", 0)] and after[("AnB", 1)] != before[("AnB", 1)]
    assert other[("baseB", 0)] not in (before[("baseB", 0)], after[("baseB", 0)])  # `examples` is in the id


def test_training_sees_the_transformed_examples(constant, tmp_path):
    config, components, plan = _plan(transforms=[{"name": "constant_label"}], treatments=["BnB"])
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    store = RunStore(tmp_path / "run")
    ids = _ids(plan)
    assert store.read_record(ids[("baseB", 0)]).top1 == 1.0  # every label 0, and it learnt that
    assert store.read_record(ids[("BnB", 1)]).top1 == 1.0


def test_a_bad_transform_setting_is_a_config_error_at_its_key(fake_plugins):
    with pytest.raises(ConfigError, match=r"experiments.0.transforms.0.*must divide"):
        _plan(transforms=[{"name": "block_shuffle", "block_size": 5}])
    with pytest.raises(ConfigError, match="transforms.0.name"):
        _plan(transforms=[{"name": "nope"}])
