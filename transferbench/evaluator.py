"""The evaluator contract: a measurement of trained networks, made after they are trained.

An :class:`Evaluator` plugin (``register_evaluators``) reads a group of trained networks of a
run (``arity`` of them: two for the straight line between two networks' weights) and returns
an :class:`Evaluation`: named numbers (its ``quantities``) and any details worth keeping (a
curve). The engine builds the networks from their kept checkpoints, hands over the target
task's examples as the networks saw them (:class:`EvalInputs`), seeds torch from the
evaluation's key, and writes one record per evaluation under ``evaluations/`` of the run
directory; an evaluation whose record is there is never computed again
(:mod:`transferbench.evaluation`). A config names evaluators under ``experiments[].evaluators``
with the treatments they read (docs/configuration.md).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .interfaces import P, Plugin

__all__ = ["EvalInputs", "Evaluation", "Evaluator"]

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class EvalInputs:
    """The target task's examples, as the evaluated networks saw them.

    Attributes:
        eval_batches: a fresh iterator of ``(inputs, labels)`` over the target half's held-out
            examples, in a fixed order, the inputs already through the run's input transform
            (evaluation mode: centre crop, normalisation) and on ``device``.
        train_batches: the same over the target half's training examples (evaluation mode:
            no random crop or mirror), e.g. to recompute BatchNorm statistics.
        num_classes: classes of the target task (logits beyond them are unused).
        device: where the networks and the batches are.
        seed: a seed for any randomness (derived from the evaluation's key).
    """

    eval_batches: Batches
    train_batches: Batches
    num_classes: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0


@dataclass(frozen=True)
class Evaluation:
    """What an evaluator measured on one group of networks.

    Attributes:
        values: one finite number per name of :attr:`Evaluator.quantities`.
        details: anything else worth keeping in the record (plain JSON data: a curve).
    """

    values: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


class Evaluator(Plugin[P], abc.ABC):
    """Measures a group of trained networks of one target task.

    :meth:`evaluate` must not change the networks it is given, must give the same numbers for
    the same networks, inputs and seed, and must return every name of :attr:`quantities`.
    """

    #: How many networks one evaluation reads (2: a pair).
    arity: ClassVar[int] = 2
    #: The names of the numbers it returns (what findings read, ``<label>.<quantity>``).
    quantities: ClassVar[tuple[str, ...]] = ()
    #: Raise when what the evaluator computes changes under its name: every evaluation is redone.
    revision: ClassVar[int] = 0

    @abc.abstractmethod
    def evaluate(self, networks: Sequence[nn.Module], inputs: EvalInputs) -> Evaluation:
        """Measure ``networks`` (``arity`` of them, the same architecture, in evaluation
        mode) on ``inputs``."""
