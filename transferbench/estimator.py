"""The estimator contract: a cheap score of how well layer n of a trained network transfers.

An :class:`Estimator` plugin receives :class:`LayerFeatures`: what layers 1..n of a trained
source network compute on the target half's examples (train and eval), pooled to at most
``estimation.max_features`` numbers per example (see :mod:`transferbench.features`), and
returns one number, higher = more transferable. An estimator that needs the source network's
classifier (LEEP, NCE) also gets its outputs on the same examples (``source_logits``). The
engine computes the features, runs the estimator as a job of the plan and validates its
scores against what retraining measured (:mod:`transferbench.validation`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch

from .interfaces import P, Plugin

__all__ = ["Estimator", "LayerFeatures"]


@dataclass(frozen=True)
class LayerFeatures:
    """Layer-n features of one network on the examples of a target task.

    Attributes:
        train: ``(N_train, D)`` float32, one row per training example of the target half
            (a fixed random subset of at most ``estimation.max_train`` of them); on the
            job's device when that is CUDA, else on the CPU (every tensor here alike).
        train_labels: ``(N_train,)`` int64 labels in ``0..num_classes-1``.
        eval: ``(N_eval, D)`` float32 features of the target half's held-out examples.
        eval_labels: ``(N_eval,)`` int64 labels.
        num_classes: classes of the target task.
        n: the layer (features are what layers 1..n hand to layer n+1).
        reference: the same examples through the target's own base network at layer n, for
            an estimator that sets :attr:`Estimator.needs_reference` (CKA); else None.
        seed: a seed for any randomness the estimator needs (derived from the job).
        source_logits: for an estimator that sets :attr:`Estimator.needs_source_outputs`
            (LEEP, NCE), ``(N_train, K_source)`` float32: the source network's classifier
            outputs (before the softmax, over the source's own classes) on the rows of
            ``train``, in their order; else None. They do not depend on ``n``.
        source_eval_logits: the same on the rows of ``eval``.
    """

    train: torch.Tensor
    train_labels: torch.Tensor
    eval: torch.Tensor
    eval_labels: torch.Tensor
    num_classes: int
    n: int = 0
    reference: LayerFeatures | None = None
    seed: int = 0
    source_logits: torch.Tensor | None = None
    source_eval_logits: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        """Numbers per example (D)."""
        return int(self.train.shape[1])


class Estimator(Plugin[P], abc.ABC):
    """Scores the layer-n features of a trained source network on a target task.

    Higher must mean "more transferable". The score must be deterministic for given
    features and seed, must not change the tensors it is given and must be finite.
    """

    #: Whether :meth:`score` needs ``features.reference``: the same target examples through
    #: the target's own base network (its job then waits for that network too).
    needs_reference: ClassVar[bool] = False
    #: Whether :meth:`score` needs ``features.source_logits``: the source network's classifier
    #: outputs on the same target examples (a full forward pass of the source network).
    needs_source_outputs: ClassVar[bool] = False

    @abc.abstractmethod
    def score(self, features: LayerFeatures) -> float:
        """The transferability score of ``features`` (higher = more transferable)."""

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float | None:
        """Floating-point operations :meth:`score` needs for features of this size, or None
        when unknown; used to project the cost of estimators to a larger scale (``plan``)."""
        return None
