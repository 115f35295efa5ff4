"""One training step: the same rules for a network alone, a cohort's members and batched members.

:class:`TrainingSteps` is what every step of a training run of one length follows: the
learning rate of step s (the schedule's factor on each parameter group's base lr), the loss
and autocast, when an evaluation is due and what it records. :class:`Course` is one network's
way through it: its running loss, its evaluations, and why it failed once its loss stopped
being finite. :meth:`TrainingSteps.step` is one optimizer step of one network; the trainer
(:func:`~transferbench.trainer.train_loop`), a cohort's members one by one
(:class:`~transferbench.members.SoloSteppers`) and batched members
(:class:`~transferbench.batched.BatchedMembers`, one step of several stacked networks) all
follow these rules, so a network's numbers do not depend on which of them trained it.

Steps count from 0 while one is taken (step s runs at the schedule's ``factor(s)``); an
evaluation after ``done`` steps records ``done`` and the factor of the step just taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import Config
from .devices import autocast
from .records import HistoryPoint
from .schedule import TrainingLength, lr_factor

__all__ = ["Course", "TrainingSteps"]


@dataclass
class Course:
    """One network's way through training.

    Attributes:
        running: the running loss: the first step's loss, then 0.9 of itself and 0.1 of
            each step's.
        history: its evaluations.
        error: why it failed (its loss became NaN or infinite); None while it trains.
    """

    running: float = 0.0
    history: list[HistoryPoint] = field(default_factory=list)
    error: str | None = None

    def add_loss(self, value: float, step: int) -> bool:
        """Count step ``step``'s loss into the running loss; a NaN or infinite loss fails the
        course instead (returns False: the step must not update the network)."""
        if not math.isfinite(value):
            self.error = f"loss became {value} at step {step + 1}"
            return False
        self.running = value if step == 0 else 0.9 * self.running + 0.1 * value
        return True

    def info(self) -> dict[str, float]:
        """What a progress callback shows: the running loss and the last evaluation's top-1."""
        return {"loss": self.running, "top1": self.history[-1].top1 if self.history else math.nan}


class TrainingSteps:
    """The rules of every step of a training run of ``length`` (see the module's docstring).

    Attributes:
        length: the run's length (steps, evaluation interval).
        factor: the schedule: step number -> the factor on every group's base lr.
        loss_fn: the training loss (cross-entropy with the config's label smoothing).
        amp: the config's autocast (a reusable context manager).
    """

    def __init__(self, config: Config, length: TrainingLength, device: torch.device) -> None:
        self.length = length
        self.factor = lr_factor(config.train.schedule, length)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        self.amp = autocast(config.performance.amp, device)

    def set_lr(self, optimizer: torch.optim.Optimizer, base_lrs: list[float], step: int) -> None:
        """Every parameter group's learning rate for step ``step``."""
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * self.factor(step)

    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, base_lrs: list[float], x: torch.Tensor,
             y: torch.Tensor, course: Course, step: int) -> None:
        """One optimizer step of one network on ``(x, y)``. A loss that is not finite fails
        ``course`` and leaves the network as it was."""
        self.set_lr(optimizer, base_lrs, step)
        with self.amp:
            loss = self.loss_fn(net(x), y)
        if not course.add_loss(loss.item(), step):  # one device sync a step, shared by the check and the mean
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def due(self, done: int) -> bool:
        """Whether an evaluation follows the first ``done`` steps (every ``eval_every``, and at the end)."""
        return done % self.length.eval_every == 0 or done == self.length.total

    def record(self, course: Course, done: int, top1: float, top5: float) -> None:
        """Add the evaluation after ``done`` steps to ``course``'s history."""
        course.history.append(HistoryPoint(step=done, epoch=round(done / self.length.steps_per_epoch, 4), top1=top1,
                                           top5=top5, train_loss=course.running, lr_factor=self.factor(done - 1)))
