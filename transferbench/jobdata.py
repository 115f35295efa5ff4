"""Everything a job needs from data, prepared before its training loop in one call.

:func:`prepare_job_data` returns what the loop iterates: the train and eval examples, the
batch transform, and the module to train. With the frozen-prefix cache, that is one swap:
the examples become what the frozen layers 1..m output (computed once), the transform
becomes the identity, and the module becomes the layers above m.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from .augment import BatchTransform
from .config import Augment
from .context import TrainContext
from .devices import autocast
from .network import Target
from .taskdata import Batch, InMemoryTask, TaskData, open_task

if TYPE_CHECKING:
    from .interfaces import DataTransform
    from .jobs import TaskTransform

__all__ = ["JobData", "input_transform", "prepare_job_data", "transformed"]


@dataclass
class JobData:
    """What a job's training loop iterates.

    Attributes:
        train, eval: the task's examples (or the frozen prefix's outputs for them).
        transform: turns a batch of ``train``/``eval`` inputs into network inputs.
        net: the module the loop runs: the whole network, or the suffix above the cache.
        cached: whether the frozen-prefix cache is in use.
        input_std: the standard deviation of network inputs (set from the first batch).
    """

    train: TaskData
    eval: TaskData
    transform: BatchTransform
    net: nn.Module
    cached: bool = False
    input_std: float | None = None


def input_transform(ctx: TrainContext, *, channels_last: bool = False) -> BatchTransform:
    """The transform from a data source's batch to network inputs, as every job of the run uses it.

    The normalisation is the architecture's (:meth:`~transferbench.interfaces.Architecture.input_normalization`
    of the source's mean and std), so training, evaluation and the estimators' features see
    inputs on the one scale the network was built for (Caffe's 0-255 pixels for the paper's init).
    """
    norm = ctx.components.architecture.input_normalization(ctx.components.data.normalization())
    return BatchTransform(ctx.config.train.augment, norm, ctx.device, channels_last=channels_last)


def prepare_job_data(ctx: TrainContext, classes: Sequence[int], target: Target,
                     transforms: Sequence[TaskTransform] = ()) -> JobData:
    """The examples of the task ``classes`` and the module to train on them.

    Args:
        ctx: the run's shared context (config, plugins, device, data in memory).
        classes: the source's class indices of the task.
        target: the job's network after transfer (on ``ctx.device``). The cache covers its
            reading's leading frozen layers, whatever n says (``surgical`` at n freezes
            layers 1..n-1).
        transforms: the job's data transforms (:func:`transformed`), before everything else.
    """
    config, source, device = ctx.config, ctx.components.data, ctx.device
    perf = config.performance
    channels_last = perf.channels_last and len(ctx.input_shape) == 3
    train = transformed(open_task(source, "train", classes, config.loader, ctx.memory), transforms, "train")
    evaluation = transformed(open_task(source, "eval", classes, config.loader, ctx.memory), transforms, "eval")
    transform = input_transform(ctx, channels_last=channels_last)
    data = JobData(train, evaluation, transform, target.model)
    if _can_cache(ctx, target, train):
        split = ctx.components.architecture.split_at(target.model, target.reading.frozen_prefix)
        if split is not None:
            prefix, suffix = split
            feats = _features(prefix, (train, evaluation), transform, ctx)
            if feats is not None:
                identity = BatchTransform(Augment(), None, device, channels_last=channels_last)
                first = next(train.batches(config.train.batch_size, shuffle=False))[0].to(device)
                data = JobData(feats[0], feats[1], identity, suffix, cached=True,
                               input_std=float(transform(first, train=False).float().std()))
    if perf.compile:
        data.net = cast(nn.Module, torch.compile(data.net))  # compiling a Module gives an OptimizedModule
    return data


def transformed(task: TaskData, transforms: Sequence[TaskTransform], split: str) -> TaskData:
    """``task``'s examples through the transforms that change ``split``: computed once when
    the examples are in memory (so the frozen-prefix cache and every fast path see them as
    any other task), batch by batch otherwise. A transform is a function of each example
    alone (its contract), so both give the same examples."""
    mine = [t.transform for t in transforms if split in t.on]
    if not mine:
        return task
    held = task.tensors()
    if held is None:
        return _Transformed(task, mine)
    inputs, labels = _apply(mine, held, len(task.classes))
    return InMemoryTask(inputs, labels, task.classes)


def _apply(changes: Sequence[DataTransform], batch: Batch, classes: int) -> Batch:
    inputs, labels = batch
    for change in changes:
        inputs, labels = change.apply(inputs, labels, classes)
    return inputs, labels


class _Transformed(TaskData):
    """A task that is not in memory (a stream, a memory map) through transforms, batch by batch."""

    def __init__(self, inner: TaskData, changes: Sequence[DataTransform]) -> None:
        self.inner, self.changes, self.classes = inner, list(changes), inner.classes

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def size(self) -> int | None:
        return self.inner.size

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[Batch]:
        for batch in self.inner.batches(batch_size, shuffle=shuffle, generator=generator):
            yield _apply(self.changes, batch, len(self.classes))


def _can_cache(ctx: TrainContext, target: Target, train: TaskData) -> bool:
    """Whether the frozen-prefix cache gives the same result as the plain path."""
    reading = target.reading
    return (
        ctx.config.performance.cache_frozen
        and reading.frozen_prefix > 0
        and reading.trains  # an evaluate-only network runs once anyway (and then the prefix is all of it)
        and not ctx.config.train.augment.active  # random inputs: the prefix output changes each epoch
        and train.tensors() is not None  # the prefix runs over examples held in memory
    )


@torch.no_grad()
def _features(prefix: nn.Module, tasks: Sequence[TaskData], transform: BatchTransform,
              ctx: TrainContext) -> list[InMemoryTask] | None:
    """Run the frozen prefix once over each task's examples; None if that would be too large.

    Runs under the same autocast as training, so cached and plain paths compute alike.
    """
    config = ctx.config
    batch_size = config.eval.batch_size or config.train.batch_size
    max_bytes = config.performance.cache_frozen_max_gb * 1e9
    was_training = prefix.training
    prefix.eval()  # frozen layers: no dropout in a prefix by contract, BN uses running stats
    out = []
    try:
        with autocast(config.performance.amp, ctx.device):
            for task in tasks:
                first = next(task.batches(1, shuffle=False))[0]
                per_example = prefix(transform(first.to(ctx.device), train=False)).numel() * 4
                if per_example * len(task) > max_bytes:
                    return None
                inputs, labels = [], []
                for x, y in task.batches(batch_size, shuffle=False):
                    inputs.append(prefix(transform(x.to(ctx.device), train=False)))
                    labels.append(y)
                out.append(InMemoryTask(torch.cat(inputs).float(), torch.cat(labels), task.classes))
    finally:
        prefix.train(was_training)
    return out
