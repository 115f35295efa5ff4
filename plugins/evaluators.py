"""Evaluators of trained networks: ``loss_barrier``, the loss and accuracy on the straight
line between two networks' weights (Neyshabur, Sedghi & Zhang 2020, Section 3.3; the
barrier as Frankle et al. 2020 define it).

For two networks of one architecture, theta(alpha) = (1 - alpha) theta_1 + alpha theta_2 is
evaluated at ``points`` evenly spaced alphas from 0 to 1 on the target's held-out examples.
The barrier is the largest rise of the loss above the straight line between the end points'
losses, max_alpha [loss(alpha) - ((1 - alpha) loss(0) + alpha loss(1))] (paraphrased from the
paper's definition, not quoted); the accuracy barrier is likewise the largest fall of top-1
below the straight line between the end points' accuracies. Both are 0 at the end points, so
neither is ever negative. Networks with BatchNorm get their running statistics recomputed at
each alpha from the target's training examples (the interpolated statistics are not the
statistics of the interpolated network); networks without it (CaffeNet) are evaluated as
they are.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from transferbench import EvalInputs, Evaluation, Evaluator, hookimpl


class LossBarrierParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: int = Field(11, ge=3, description="evenly spaced alphas from 0 to 1, end points included "
                        "(11: the paper's 0, 0.1, ..., 1)")
    recompute_bn: bool = Field(True, description="recompute BatchNorm running statistics at each alpha from the "
                               "target's training examples (no effect on a network without BatchNorm)")


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def interpolate(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], alpha: float
                ) -> dict[str, torch.Tensor]:
    """(1 - alpha) first + alpha second for every floating-point tensor; integer buffers (a
    BatchNorm's batch count) are taken from ``first``."""
    return {k: torch.lerp(v, second[k], alpha) if v.is_floating_point() else v.clone() for k, v in first.items()}


def barrier(values: Sequence[float], alphas: Sequence[float], *, higher_is_worse: bool = True) -> float:
    """The largest excess of ``values`` over the straight line between the end points (for a
    loss), or of the line over ``values`` (``higher_is_worse=False``: an accuracy)."""
    start, end = values[0], values[-1]
    sign = 1.0 if higher_is_worse else -1.0
    return max(sign * (v - ((1 - a) * start + a * end)) for v, a in zip(values, alphas))


@torch.no_grad()
def _recompute_batchnorm(model: nn.Module, inputs: EvalInputs) -> None:
    """Running statistics as a cumulative average over the training examples."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _ in inputs.train_batches():
        model(x)
    model.eval()


@torch.no_grad()
def _loss_and_top1(model: nn.Module, inputs: EvalInputs) -> tuple[float, float]:
    loss_sum, hits, count = 0.0, 0, 0
    for x, y in inputs.eval_batches():
        logits = model(x)[:, :inputs.num_classes].float()  # extra logits (fc8 wider than k) go unused
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        hits += int((logits.argmax(dim=1) == y).sum())
        count += y.numel()
    return loss_sum / count, hits / count


class LossBarrier(Evaluator[LossBarrierParams]):
    """The loss and top-1 barriers on the straight line between two networks' weights."""

    description = "loss and top-1 barrier on the straight line between two networks' weights (Neyshabur et al. 2020)"
    Params = LossBarrierParams
    arity = 2
    quantities = ("loss_barrier", "top1_barrier", "end_loss", "end_top1")

    def evaluate(self, networks: Sequence[nn.Module], inputs: EvalInputs) -> Evaluation:
        first, second = ({k: v.detach() for k, v in n.state_dict().items()} for n in networks)
        if first.keys() != second.keys() or any(first[k].shape != second[k].shape for k in first):
            raise ValueError("loss_barrier needs two networks of one architecture (their tensors differ)")
        alphas = [i / (self.params.points - 1) for i in range(self.params.points)]
        model = copy.deepcopy(networks[0]).eval()  # the networks given are not changed
        bn = self.params.recompute_bn and _has_batchnorm(model)
        losses, top1 = [], []
        for a in alphas:
            model.load_state_dict(interpolate(first, second, a))
            if bn:
                _recompute_batchnorm(model, inputs)
            loss, acc = _loss_and_top1(model, inputs)
            losses.append(loss)
            top1.append(acc)
        values = {"loss_barrier": barrier(losses, alphas), "top1_barrier": barrier(top1, alphas, higher_is_worse=False),
                  "end_loss": (losses[0] + losses[-1]) / 2, "end_top1": (top1[0] + top1[-1]) / 2}
        if not all(math.isfinite(v) for v in values.values()):
            raise ValueError(f"loss_barrier: a loss on the line is not finite ({losses})")
        return Evaluation(values, {"alphas": alphas, "loss": losses, "top1": top1, "batchnorm_recomputed": bn})


@hookimpl
def register_evaluators(register) -> None:
    register("loss_barrier", LossBarrier)
