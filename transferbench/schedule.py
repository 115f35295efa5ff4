"""How long a job trains, when it evaluates, and its learning-rate schedule.

Computed once here and shared by the trainer and the compute estimate, so ``plan``'s
numbers are the trainer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .config import Eval, Schedule, Train
from .errors import DataError

__all__ = ["TrainingLength", "lr_factor"]


@dataclass(frozen=True)
class TrainingLength:
    """A job's training length in optimizer steps.

    Attributes:
        total: optimizer steps in all.
        steps_per_epoch: steps in one pass over the training examples (``total`` for a
            stream, whose length is unknown: its history counts the run as one epoch).
        unit: steps per unit of the config's length (an epoch with ``train.epochs``, a
            step with ``train.steps``); ``eval.every`` and the schedule count in it.
        eval_every: steps between evaluations (there is always one after the last step).
    """

    total: int
    steps_per_epoch: int
    unit: int
    eval_every: int

    @classmethod
    def of(cls, train: Train, evaluation: Eval, examples: int | None) -> TrainingLength:
        """The length for ``examples`` training examples (None: a stream, length unknown).

        Raises:
            DataError: ``train.epochs`` with a stream (nothing to count epochs in).
        """
        batch = train.batch_size
        if train.epochs is not None:
            if examples is None:
                raise DataError("a streaming data source has no known length: set train.steps, not train.epochs")
            steps_per_epoch = max(1, math.ceil(examples / batch))
            total = max(1, round(train.epochs * steps_per_epoch))
            unit = steps_per_epoch
            default_every = steps_per_epoch
        else:
            total, unit = int(train.steps or 1), 1
            steps_per_epoch = total if examples is None else max(1, math.ceil(examples / batch))
            default_every = max(1, total // 20)
        every = max(1, round(evaluation.every * unit)) if evaluation.every else default_every
        return cls(total, steps_per_epoch, unit, every)

    @property
    def evaluations(self) -> int:
        """How many evaluations training makes (every ``eval_every`` steps and at the end)."""
        return self.total // self.eval_every + (1 if self.total % self.eval_every else 0)


def lr_factor(schedule: Schedule, length: TrainingLength) -> Callable[[int], float]:
    """The schedule as a function of the step number (it multiplies every group's lr)."""
    if schedule.kind == "step":
        every = max(1, round((schedule.step_every or 1) * length.unit))
        return lambda step: schedule.gamma ** (step // every)
    if schedule.kind == "cosine":
        total = length.total
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return lambda step: 1.0
